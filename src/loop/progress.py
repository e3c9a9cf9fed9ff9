"""Counters the service and its log writer share, and the ledger they keep for a worker that dies.

Shared memory both processes map, eight bytes per counter. Each counter is written by one side
only (the service: shipped, answered, its stored drops; the writer: done, written, its stored
drops, ready), so no lock is needed and a writer that dies holds none; the service settles a dead
writer's counters itself.

Backed by a file (a ledger), the counters outlive a worker killed with its writer (kill -9 of a
worker, of a whole replica): the kernel keeps what was written to the mapped pages. Every row
the worker answered is in `answered_rows` before its answer leaves; a row is accounted for once
written, or once its drop is stored in log_drops. Whatever a dead worker's ledger leaves
unaccounted for, another worker of the same database stores as dropped (`worker_died`): an
answered row is logged or counted, never lost silently.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import struct
from collections.abc import Callable
from pathlib import Path

from src.loop.metrics_files import identity_alive, process_identity

NAMES = (
    "shipped_rows",
    "shipped_bytes",
    "done_rows",  # written, or dropped and counted by the writer
    "done_bytes",
    "ready",
    "answered_rows",  # the service: before each answer leaves
    "answered_hour",  # the service: the hour of the last answer (for the drops' hour)
    "written_rows",  # the writer: after each commit
    "writer_stored_drops",  # the writer: rows whose drop it stored in log_drops
    "service_stored_drops",  # the service: rows whose drop it stored in log_drops
    "writer_pid",  # the service, as it starts a writer
    "writer_start",
)
_SLOT = {name: i for i, name in enumerate(NAMES)}
_SIZE = 8 * len(NAMES)
LEDGER = ".ledger"
WORKER_DIED = "worker_died"
# A process may open more than one log (an app created twice, a test client beside another):
# each gets a ledger of its own, "<pid>-<start>.<n>.ledger", never another's counters.
_LEDGERS_OPENED = itertools.count()


class Progress:
    def __init__(self, fd: int | None = None, *, ledger: Path | None = None) -> None:
        """`fd`: the writer's side, inherited. Else a new one: in memory, or a ledger file in
        `ledger` (a folder), named after this process and this log."""
        self.path: Path | None = None
        if fd is None:
            if ledger is None:
                fd = os.memfd_create("prediction-log-progress")
            else:
                ledger.mkdir(parents=True, exist_ok=True)
                name = f"{process_identity(os.getpid())}.{next(_LEDGERS_OPENED)}{LEDGER}"
                self.path = ledger / name
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            os.ftruncate(fd, _SIZE)
        self.fd = fd  # inherited by the writer process
        self._map = mmap.mmap(fd, _SIZE)
        self._values: memoryview | list[int] = memoryview(self._map).cast("q")

    def __getitem__(self, name: str) -> int:
        return self._values[_SLOT[name]]

    def add(self, name: str, amount: int) -> None:
        self._values[_SLOT[name]] += amount

    def set(self, name: str, value: int) -> None:
        self._values[_SLOT[name]] = value

    @property
    def in_flight_bytes(self) -> int:
        return self["shipped_bytes"] - self["done_bytes"]

    @property
    def in_flight_rows(self) -> int:
        return self["shipped_rows"] - self["done_rows"]

    def close(self) -> None:
        """Release the shared memory; the last values stay readable. A ledger whose every
        answered row is accounted for goes; one that is not stays, for `settle_dead`."""
        if isinstance(self._values, memoryview):
            final = self._values.tolist()
            self._values.release()
            self._map.close()
            os.close(self.fd)
            self._values = final
            if self.path is not None and unaccounted(final) <= 0:
                self.path.unlink(missing_ok=True)


def unaccounted(values: list[int] | tuple[int, ...]) -> int:
    """Rows answered and neither written nor counted as dropped in the database."""
    get = dict(zip(NAMES, values, strict=True))
    accounted = get["written_rows"] + get["writer_stored_drops"] + get["service_stored_drops"]
    return get["answered_rows"] - accounted


def _read(path: Path) -> tuple[int, ...]:
    return struct.unpack(f"<{len(NAMES)}q", path.read_bytes()[:_SIZE].ljust(_SIZE, b"\0"))


def settle_dead(
    folder: Path, store: Callable[[dict[tuple[int, str], int]], bool]
) -> dict[int, int]:
    """Ledgers of workers that died with their writers: each one's unaccounted rows stored as
    dropped (`worker_died`, in the hour of its last answer) through `store`, the ledger then
    removed. One process claims a ledger (an atomic rename) before it stores; a ledger whose
    counts cannot be stored now is put back for the next try. Returns {hour: rows} stored."""
    settled: dict[int, int] = {}
    if not folder.is_dir():
        return settled
    for path in folder.glob(f"*{LEDGER}.settling-*"):  # claimed by a settler that died
        ledger, _, settler = path.name.partition(".settling-")
        if not identity_alive(settler):
            with contextlib.suppress(OSError):
                path.rename(path.with_name(ledger))
    mine = process_identity(os.getpid())
    for path in folder.glob(f"*{LEDGER}"):
        if identity_alive(path.name.partition(".")[0]):  # its worker still runs
            continue
        values = _read(path)
        get = dict(zip(NAMES, values, strict=True))
        if get["writer_pid"] and identity_alive(f"{get['writer_pid']}-{get['writer_start']}"):
            continue  # its writer still drains what it was sent
        claimed = path.with_name(f"{path.name}.settling-{mine}")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            continue  # another process claimed it first
        lost = unaccounted(_read(claimed))
        if lost > 0:
            hour = get["answered_hour"]
            if not store({(hour, WORKER_DIED): lost}):
                claimed.rename(path)
                continue
            settled[hour] = settled.get(hour, 0) + lost
        claimed.unlink(missing_ok=True)
    return settled
