"""The prediction log's writer process: `python -m src.loop.writer_process`, fed on stdin.

A plain subprocess, not multiprocessing's spawn: spawn re-imports the service's main module and
starts a resource-tracker process beside it, and the writer needs neither. Nor SQLAlchemy: it
talks to the database through the driver (sqlite3, psycopg), with what the service resolved from
the URL. What stays in memory is Python, numpy, the driver and one shipment
(docs/performance.md, "The log's cost").

Frames arrive on stdin (8-byte length, then a pickle from the service's own process: first the
configuration, then shipments, then None to stop); progress
goes back through counters in shared memory (see writer.Progress). End of input means the
service is gone: finish what arrived and stop.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import sqlite3
import struct
import sys
import threading
from typing import Any

from src.loop.inserts import DATABASE_ERRORS, BatchWriter, Tables
from src.loop.metrics_files import CounterFile
from src.loop.progress import Progress

FRAME_HEADER = struct.Struct("<Q")
APPLICATION_NAME = "prediction log writer"


class DriverEngine:
    """What BatchWriter needs of an engine (`dialect.name`, `raw_connection()`, `dispose()`),
    straight from the driver: one connection, kept open, made again after it broke."""

    class _Dialect:
        def __init__(self, name: str) -> None:
            self.name = name

    class _Borrowed:
        """The kept connection, lent for one transaction: `close()` gives it back."""

        def __init__(self, connection: Any) -> None:
            self._connection = connection

        def cursor(self) -> Any:
            return self._connection.cursor()

        def commit(self) -> None:
            self._connection.commit()

        def rollback(self) -> None:
            self._connection.rollback()

        def close(self) -> None:
            pass

    def __init__(self, connect: dict[str, Any]) -> None:
        self.dialect = self._Dialect(connect["dialect"])
        self._connect = connect
        self._connection: Any = None

    def raw_connection(self) -> Any:
        if self._connection is not None and getattr(self._connection, "broken", False):
            self.dispose()
        if self._connection is None:
            self._connection = self._open()
        return self._Borrowed(self._connection)

    def _open(self) -> Any:
        if self.dialect.name == "sqlite":
            # As src.loop.tables.make_engine: WAL (readers never block the writer), a busy wait.
            connection = sqlite3.connect(self._connect["database"], timeout=30)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            return connection
        import psycopg

        # Named, so an operator (or the soak) can find the log's connections in
        # pg_stat_activity.
        return psycopg.connect(self._connect["conninfo"], application_name=APPLICATION_NAME)

    def dispose(self) -> None:
        if self._connection is not None:
            # A broken connection may fail to close; it is dropped either way.
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None


def _read_exact(fd: int, size: int) -> bytes | None:
    """`size` bytes from the pipe, or None at its end (the service is gone)."""
    chunks, missing = [], size
    while missing:
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def write_forever(config: dict[str, Any], frames: int) -> None:
    """Batches from the pipe into the database until told to stop, or the pipe ends."""
    # SIGTERM (a process manager): drain what has arrived, then stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    terminated = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.set())
    parent = os.getppid()
    progress = Progress(config["progress_fd"])
    engine = DriverEngine(config["connect"])
    counters = CounterFile(config["metrics_dir"])
    counters.declare(DATABASE_ERRORS)
    writer = BatchWriter(
        engine,
        log_sensitive=config["log_sensitive"],
        counters=counters,
        tables=Tables(**{name: tuple(v) for name, v in config["tables"].items()}),
    )
    progress.set("ready", 1)
    while True:
        ready, _, _ = select.select([frames], [], [], 0.25)
        if not ready:
            if terminated.is_set() or os.getppid() != parent:
                break
            continue
        header = _read_exact(frames, FRAME_HEADER.size)
        payload = _read_exact(frames, FRAME_HEADER.unpack(header)[0]) if header else None
        if payload is None:
            break  # the service closed the pipe or died
        message = pickle.loads(payload)  # noqa: S301 - from the service that started us
        if message is None:
            break  # the stop marker, after every batch
        requests, size = message
        counted = writer.counted_rows
        rows = writer.write(requests, stop_waiting=lambda: os.getppid() != parent)
        progress.add("written_rows", rows - (writer.counted_rows - counted))  # the ledger
        progress.add("done_rows", rows)
        progress.add("done_bytes", size)
        progress.add("writer_stored_drops", writer.count_drops())
    engine.dispose()


def main() -> None:
    # Ctrl-C reaches the whole process group; the service decides when we stop (after draining).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The first frame is the configuration: through the pipe, not the command line, which any
    # user can read (it holds the database's password, if any).
    frames = sys.stdin.fileno()
    header = _read_exact(frames, FRAME_HEADER.size)
    payload = _read_exact(frames, FRAME_HEADER.unpack(header)[0]) if header else None
    if payload is not None:
        write_forever(pickle.loads(payload), frames)  # noqa: S301 - from the service


if __name__ == "__main__":
    main()
