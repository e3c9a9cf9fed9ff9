"""The log's writer: requests append to a pending list; a writer process inserts them in batches.

Writes never happen on the request path, and nothing is lost without being counted:
- a batch request hands over columns, not rows: the encoded matrix the model saw, the
  probabilities, and the sensitive fields as one joined string each; the writer maps codes back
  to categories with numpy and inserts column blocks. No per-row Python object is made on the
  request path (docs/performance.md, "The log's cost");
- the service's side is bounded in bytes (pending + shipped and not yet written); past the bound a
  request's rows are dropped and counted (reason `buffer_full`), memory never grows; or, when the
  operator chooses backpressure, the request first waits (bounded) for room, and only a wait that
  times out drops (reason `backpressure_timeout`);
- drops are also counted per hour, and the writer stores those counts beside the rows (table
  log_drops), so a monitoring window can say which share of the answered rows it covers;
- a batch the database refuses is retried row by row, so one bad row costs one row (counted,
  reason `rejected`);
- a database outage is retried with backoff while the byte bound holds the rest;
- a writer that dies is noticed and restarted; the rows it held are counted (`writer_died`);
- close() drains everything, so a graceful shutdown loses nothing that was answered.
Counts reach /metrics through the metrics folder shared by every process of the service.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from src.loop.handoff import Served, epoch_hour
from src.loop.inserts import Tables, store_drops
from src.loop.metrics_files import process_identity
from src.loop.progress import WORKER_DIED, Progress, settle_dead
from src.loop.tables import create_tables, make_engine
from src.loop.writer_process import FRAME_HEADER

logger = logging.getLogger("service")
__all__ = ["POLICIES", "PredictionLog", "Served"]
DEFAULT_BUFFER_BYTES = 32 * 1024 * 1024
POLICIES = ("drop", "backpressure")
DEFAULT_MAX_WAIT_SECONDS = 1.0
RESTART_BACKOFF_START, RESTART_BACKOFF_MAX = 0.5, 30.0  # a writer that dies at once waits
_F_SETPIPE_SZ = 1031  # fcntl: a pipe's capacity (Linux)
_FEEDER_STOP = object()


class _WriterProcess:
    """The writer subprocess, fed through its stdin by a thread of this process (pickling and
    writing never hold up the event loop), with the process methods the service uses."""

    def __init__(self, config: dict[str, Any], progress_fd: int) -> None:
        root = str(Path(__file__).resolve().parents[2])  # the writer imports src from here
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        self._popen = subprocess.Popen(
            [sys.executable, "-m", "src.loop.writer_process"],
            stdin=subprocess.PIPE,
            pass_fds=(progress_fd,),
            env={**os.environ, "PYTHONPATH": path},
        )
        self.pid = self._popen.pid
        with contextlib.suppress(OSError):  # fewer, larger writes; the default 64 KiB is fine too
            fcntl.fcntl(self._popen.stdin.fileno(), _F_SETPIPE_SZ, 1 << 20)
        self._outbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outbox.put(config)  # the first frame
        self._feeder = threading.Thread(target=self._feed, name="prediction-log-feed", daemon=True)
        self._feeder.start()

    def put(self, message: Any) -> None:
        self._outbox.put(message)

    def _feed(self) -> None:
        pipe = self._popen.stdin.fileno()
        broken = False
        while True:
            message = self._outbox.get()
            if message is _FEEDER_STOP:
                break
            if not broken:
                data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
                try:
                    _write_all(pipe, FRAME_HEADER.pack(len(data)))
                    _write_all(pipe, data)
                except OSError:  # the writer died: what it was sent is counted as lost
                    broken = True
            if message is None:
                break
        with contextlib.suppress(OSError):
            self._popen.stdin.close()

    def is_alive(self) -> bool:
        return self._popen.poll() is None

    @property
    def exitcode(self) -> int | None:
        return self._popen.poll()

    def join(self, timeout: float | None = None) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._popen.wait(timeout)

    def kill(self) -> None:
        self._popen.kill()

    def close(self) -> None:
        """Stop feeding (what was not written is dropped: the caller counted it)."""
        self._outbox.put(_FEEDER_STOP)
        self._feeder.join(5)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class PredictionLog:
    """The service's side of the log: a pending list, shipped in batches to a writer process.

    A process, not a thread: inserting rows from a thread held the GIL long enough to cut
    single-row throughput from 71% to 51% of hello-world (docs/performance.md). And batches, not
    items: a request appends one tuple to a list; every 50 ms the service ships the list (one put);
    parsing and inserting happen in the other process, on the other core.
    """

    def __init__(
        self,
        url: str,
        *,
        tables: Tables,
        buffer_bytes: int = DEFAULT_BUFFER_BYTES,
        log_sensitive: bool = True,
        metrics_dir: str | None = None,
        on_drop: Callable[[int, str], None] = lambda rows, reason: None,
        policy: str = "drop",
        max_wait: float = DEFAULT_MAX_WAIT_SECONDS,
        ledger_dir: Path | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.url = url
        self.tables = tables  # the log's columns for the dataset served (src/loop/columns.py)
        self._switching = False  # a new set of columns: shipping waits while the writer changes
        self.engine = make_engine(url)  # this process's own connection: labels and reads
        self.buffer_bytes = buffer_bytes
        self.log_sensitive = log_sensitive
        self.metrics_dir = metrics_dir
        self.on_drop = on_drop
        self.policy = policy
        self.max_wait = max_wait
        self.dropped_rows = 0
        self.waited_requests = 0  # backpressure: requests that had to wait for room
        self.restarts = 0
        self.last_failure = ""
        # With a folder, the counters are a ledger a dead worker leaves behind (see Progress).
        self.ledger_dir = ledger_dir
        self._progress = Progress(ledger=ledger_dir)
        self._pending: list[tuple[Any, ...]] = []
        # (bytes shipped up to and including a shipment, when it left): the oldest one not yet
        # written says how long the writer has been behind (a stalled database, say).
        self._shipments: collections.deque[tuple[int, float]] = collections.deque()
        self._pending_bytes = 0
        self._reserved_bytes = 0  # backpressure: room set aside for requests being answered
        self._reservations: dict[int, int] = {}  # id(served) -> bytes set aside
        # Counted here, stored by this process (never in a frame a dying writer could lose).
        self._drops_by_hour: dict[tuple[int, str], int] = {}
        self._room: asyncio.Event | None = None  # backpressure: set when a shipment left
        self._room_loop: asyncio.AbstractEventLoop | None = None
        self._next_restart = 0.0
        self._restart_backoff = RESTART_BACKOFF_START
        self._lock = threading.Lock()
        self._closing = False
        self.process: _WriterProcess | None = None

    def start(self) -> PredictionLog:
        create_tables(self.engine)  # fails here, at startup, if the database is unreachable
        self._spawn()
        return self

    def _spawn(self) -> None:
        self.process = _WriterProcess(
            {
                "connect": driver_connect(self.engine),
                "log_sensitive": self.log_sensitive,
                "metrics_dir": self.metrics_dir,
                "progress_fd": self._progress.fd,
                "tables": asdict(self.tables),
            },
            self._progress.fd,
        )
        # Before it can write anything: a ledger names the writer that still drains it.
        self._progress.set("writer_pid", self.process.pid)
        self._progress.set("writer_start", int(process_identity(self.process.pid).split("-")[1]))

    # --- the request path: one append, never blocks -------------------------------------------

    def answering(self, rows: int, event_time: datetime | None) -> None:
        """Called before an answer with `rows` predictions leaves: the ledger counts them first,
        so rows a killed worker answered are never lost silently."""
        self._progress.add("answered_rows", rows)
        hour = epoch_hour(event_time) if event_time else int(time.time() // 3600)
        self._progress.set("answered_hour", hour)

    def record(
        self,
        request_id: str,
        ts: datetime,
        path: str,
        status: int,
        latency_ms: float,
        served: Served | None = None,
    ) -> bool:
        """Queue one request; `served` carries its rows when it was answered with predictions.
        Without room, its rows are dropped and counted (after a wait that timed out, under
        backpressure: see `wait_for_room`)."""
        size = served.size if served else 200
        with self._lock:
            reserved = self._reservations.pop(id(served), None) if served else None
            if reserved is not None:  # room was set aside while the request waited for it
                self._reserved_bytes -= reserved
            elif not self._has_room(size):
                reason = "backpressure_timeout" if self.policy == "backpressure" else "buffer_full"
                self._drop(served.rows if served else 0, reason, epoch_hour(ts))
                return False
            self._pending.append((request_id, ts, path, status, latency_ms, served))
            self._pending_bytes += size
        return True

    def _has_room(self, size: int) -> bool:
        held = self._pending_bytes + self._reserved_bytes + self._progress.in_flight_bytes
        return held + size <= self.buffer_bytes

    async def wait_for_room(self, served: Served) -> bool:
        """Backpressure: hold the request, before it is answered, until the buffer has room for
        its rows, at most `max_wait` seconds; the room found is set aside for its `record`.
        False when the wait timed out (`record` then drops and counts the rows). Under the drop
        policy: no wait, nothing set aside."""
        if self.policy != "backpressure":
            return True
        if served.size > self.buffer_bytes:  # it could never fit: no point waiting
            return False
        loop = asyncio.get_running_loop()
        if self._room is None or self._room_loop is not loop:  # an Event is bound to its loop
            self._room, self._room_loop = asyncio.Event(), loop
        deadline = time.monotonic() + self.max_wait
        waited = False
        while True:
            with self._lock:
                if self._has_room(served.size):
                    self._reservations[id(served)] = served.size
                    self._reserved_bytes += served.size
                    return True
            if not waited:
                waited = True
                self.waited_requests += 1
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._closing:
                return False
            # Woken by the next shipment (room is made as the writer catches up), not polled.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._room.wait(), timeout=min(remaining, 0.05))

    def wake_waiters(self) -> None:
        """Requests waiting for room look again (the service calls this with every shipment)."""
        if self._room is not None:
            self._room.set()
            self._room.clear()

    def _drop(self, rows: int, reason: str, hour: int | None = None) -> None:
        if rows:
            self.dropped_rows += rows
            self.on_drop(rows, reason)
            key = (epoch_hour(datetime.now(UTC)) if hour is None else hour, reason)
            self._drops_by_hour[key] = self._drops_by_hour.get(key, 0) + rows

    def ship(self) -> None:
        """Hand the pending requests to the writer in one put; the service calls this often.
        The drop counts per hour go along, outside the byte bound (a few small numbers)."""
        if self._switching:  # the writer is changing columns: requests wait in the bound
            return
        with self._lock:
            batch, size, self._pending, self._pending_bytes = (
                self._pending,
                self._pending_bytes,
                [],
                0,
            )
        if not batch:
            return
        self._progress.add("shipped_bytes", size)
        self._progress.add("shipped_rows", sum(item[5].rows for item in batch if item[5]))
        self._shipments.append((self._progress["shipped_bytes"], time.monotonic()))
        self.process.put((batch, size))

    def save_drops(self) -> None:
        """Store the drops counted here (per hour and reason) in log_drops; kept for the next
        try while the database cannot take them. Off the request path: the service calls it
        from a thread every second, and at shutdown."""
        with self._lock:
            drops, self._drops_by_hour = self._drops_by_hour, {}
        dialect = self.engine.dialect.name
        if drops and not store_drops(self.engine, dialect, drops):
            with self._lock:
                for key, rows in drops.items():
                    self._drops_by_hour[key] = self._drops_by_hour.get(key, 0) + rows
        elif drops:
            self._progress.add("service_stored_drops", sum(drops.values()))
        if self.ledger_dir is not None and not self._closing:
            # Workers of this database that died with their writers: what they answered and
            # never accounted for is stored as dropped (worker_died), by whichever worker
            # looks first.
            settled = settle_dead(self.ledger_dir, lambda d: store_drops(self.engine, dialect, d))
            for rows in settled.values():
                self.on_drop(rows, WORKER_DIED)

    # --- health ------------------------------------------------------------------------------

    def use_tables(self, tables: Tables, timeout: float = 60.0) -> None:
        """A model whose spec adds columns is served: the writer drains what it was given, and
        a writer for the new columns takes over (off the event loop: the swap calls this in a
        thread). Requests answered meanwhile wait in the byte bound, as under a slow database."""
        if tables == self.tables:
            return
        self.ship()
        self._switching = True
        try:
            old = self.process
            if old is not None and old.is_alive():
                old.put(None)  # the stop marker, after every batch it was given
                old.join(timeout)
                if old.is_alive():
                    old.kill()
                    old.join(5)
                lost = self._progress.in_flight_rows
                if lost:
                    self._drop(lost, "writer_died")
                    self._progress.set("done_rows", self._progress["shipped_rows"])
                    self._progress.set("done_bytes", self._progress["shipped_bytes"])
                old.close()
            self.tables = tables
            self._progress.set("ready", 0)
            self._spawn()
        finally:
            self._switching = False

    def check(self) -> None:
        """Restart a writer that died; count the rows it held. Called with every shipment; a
        writer that keeps dying is restarted with backoff (0.5 s doubling to 30 s)."""
        if self._closing or self._switching or self.process is None or self.process.is_alive():
            return
        if time.monotonic() < self._next_restart:
            return
        lost = self._progress.in_flight_rows
        code = self.process.exitcode
        self.last_failure = f"the writer exited with code {code}; restarted"
        logger.error("prediction log: %s (%d rows lost)", self.last_failure, lost)
        self._drop(lost, "writer_died")
        # The dead writer's counters are settled here; nothing else writes them now.
        self._progress.set("done_rows", self._progress["shipped_rows"])
        self._progress.set("done_bytes", self._progress["shipped_bytes"])
        self._progress.set("ready", 0)
        self.process.close()  # what it held is counted as lost; do not wait on it
        self.restarts += 1
        self._next_restart = time.monotonic() + self._restart_backoff
        self._restart_backoff = min(self._restart_backoff * 2, RESTART_BACKOFF_MAX)
        self._spawn()

    @property
    def state(self) -> str:
        """For /ready: up, or what is wrong right now."""
        if self._closing:
            return "closed"
        if self.process is None or not self.process.is_alive():
            return "down: the writer is not running (restarting)"
        if not self._progress["ready"]:
            return f"starting ({self.last_failure})" if self.last_failure else "starting"
        return "up"

    def unwritten_seconds(self) -> float:
        """Seconds the oldest shipment not yet written (or counted) has waited; 0 when none.
        Called from the same thread as `ship`."""
        done = self._progress["done_bytes"]
        while self._shipments and self._shipments[0][0] <= done:
            self._shipments.popleft()
        return time.monotonic() - self._shipments[0][1] if self._shipments else 0.0

    @property
    def buffered_bytes(self) -> int:
        return self._pending_bytes + self._reserved_bytes + self._progress.in_flight_bytes

    # --- control -----------------------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything recorded before this call is in the database (or counted)."""
        self.ship()
        target = self._progress["shipped_rows"], self._progress["shipped_bytes"]
        deadline = time.monotonic() + timeout
        while (self._progress["done_rows"], self._progress["done_bytes"]) < target:
            if time.monotonic() > deadline:
                return False
            self.check()
            time.sleep(0.005)
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Ship what is pending, drain the queue, stop the writer: called at shutdown."""
        self.check()
        self.ship()
        self._closing = True
        if self.process.is_alive():
            self.process.put(None)  # the stop marker, after every batch
            self.process.join(timeout)
        if self.process.is_alive():
            logger.error("prediction log: the writer did not finish in %.0f s", timeout)
            self.process.kill()
            self.process.join(5)
        lost = self._progress.in_flight_rows
        if lost:
            self._drop(lost, "shutdown")
        self.save_drops()  # the writer is gone: this process stores the last counts itself
        self.process.close()
        self._progress.close()
        self.engine.dispose()


def driver_connect(engine: Engine) -> dict[str, Any]:
    """How the writer process reaches the database without SQLAlchemy: the driver's own terms
    for the engine's URL."""
    url = engine.url
    if engine.dialect.name == "sqlite":
        return {"dialect": "sqlite", "database": url.database or ":memory:"}
    if engine.dialect.name == "postgresql":
        plain = url.set(drivername="postgresql")
        return {"dialect": "postgresql", "conninfo": plain.render_as_string(hide_password=False)}
    raise ValueError(
        f"the prediction log supports SQLite and PostgreSQL, not {engine.dialect.name}"
    )
