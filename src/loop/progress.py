"""Counters the service and its log writer share: how much was shipped, how much is done.

Shared memory (a memfd both processes map), eight bytes per counter. Each counter is written by
one side only (the service: shipped; the writer: done and ready), so no lock is needed and a
writer that dies holds none; the service settles a dead writer's counters itself.
"""

from __future__ import annotations

import mmap
import os

NAMES = ("shipped_rows", "shipped_bytes", "done_rows", "done_bytes", "ready")
_SLOT = {name: i for i, name in enumerate(NAMES)}


class Progress:
    def __init__(self, fd: int | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("prediction-log-progress")
            os.ftruncate(fd, 8 * len(NAMES))
        self.fd = fd  # inherited by the writer process
        self._map = mmap.mmap(fd, 8 * len(NAMES))
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
        """Release the shared memory; the last values stay readable."""
        if isinstance(self._values, memoryview):
            final = self._values.tolist()
            self._values.release()
            self._map.close()
            os.close(self.fd)
            self._values = final
