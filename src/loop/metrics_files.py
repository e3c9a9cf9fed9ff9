"""One set of Prometheus numbers for all the service's processes: workers and their log writers.

Each process keeps its metrics in memory, where counting is cheapest, and writes a snapshot of them
into a folder shared by the whole server, in prometheus-client's multiprocess file format; a scrape
reads every file with prometheus-client's own MultiProcessCollector, which adds them up. Counting
on the request path stays an in-memory increment (the library's multiprocess mode would make each
one a locked write into a memory-mapped file); a snapshot costs about 0.1 ms and is written every
half second, on every scrape and at shutdown.

The folder belongs to one run of the server: PROMETHEUS_MULTIPROC_DIR if set (emptied when a new
run starts), else a folder of its own under the system's temp folder, named after the run.
"""

from __future__ import annotations

import fcntl
import itertools
import multiprocessing
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

HELP = {
    "prediction_log_written_rows": "Predicted rows written to the prediction log.",
    "prediction_log_retried_rows": "Rows retried one by one after their batch was refused.",
    "prediction_log_dropped_rows": "Predicted rows the log could not keep, by reason.",
    "prediction_log_failed_batches": "Batches the database refused (then retried row by row).",
    "prediction_log_database_errors": (
        "Writes the log's writer could not make because the database could not be reached "
        "(retried; a restarted database or a lost connection)."
    ),
}
_RUNS = Path(tempfile.gettempdir()) / "adult-income-metrics"


def _stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields from the third (state) on; empty when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _start_time(pid: int) -> str:
    """A process's start time in clock ticks since boot: with the pid, it names one process
    (a pid alone may be reused)."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else "0"


def run_id() -> str:
    """The server run this process belongs to: its uvicorn supervisor, or itself when it runs
    alone. Workers of one `uvicorn --workers N` share it; two separate servers never do."""
    parent = multiprocessing.parent_process()
    pid = parent.pid if parent is not None else os.getpid()
    return process_identity(pid)


def process_identity(pid: int) -> str:
    """ "pid-start": one process, for as long as the machine runs."""
    return f"{pid}-{_start_time(pid)}"


def _running(fields: list[str]) -> bool:
    """`_stat`'s fields of a process that runs: not gone, and not a zombie (dead, waiting for
    its parent to reap it; uvicorn's supervisor may take seconds to get there)."""
    return bool(fields) and fields[0] not in ("Z", "X")


def identity_alive(identity: str) -> bool:
    """The process named by `process_identity` still runs."""
    pid, _, started = identity.partition("-")
    fields = _stat(int(pid)) if pid.isdigit() else []
    return _running(fields) and len(fields) > 19 and fields[19] == started


def metrics_dir(configured: str | None = None) -> Path:
    """This run's folder, created (and, if it belonged to an earlier run, emptied) once."""
    run = run_id()
    if configured:
        folder = Path(configured)
    else:
        folder = _RUNS / run
        if _RUNS.is_dir():  # folders of runs that have ended
            for old in _RUNS.iterdir():
                if old.name != run and not identity_alive(old.name):
                    shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".owner.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        owner = folder / ".owner"
        if not owner.is_file() or owner.read_text() != run:
            for stale in folder.glob("*.db"):
                stale.unlink()
            owner.write_text(run)
        fcntl.flock(lock, fcntl.LOCK_UN)
    return folder


class MetricFiles:
    """This process's files in the folder: one memory-mapped dict per metric type. Files are
    named by pid and instance (the collector reads the type from the name's first part), so
    two apps in one process (tests) never write into one file."""

    _instances = itertools.count()

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self.owner = f"{os.getpid()}x{next(self._instances)}"
        self._files: dict[str, MmapedDict] = {}

    def write(
        self,
        kind: str,
        family: str,
        sample: str,
        labels: dict[str, str],
        value: float,
        help_text: str | None = None,
    ) -> None:
        if self.folder is None:
            return
        if kind not in self._files:
            self._files[kind] = MmapedDict(str(self.folder / f"{kind}_{self.owner}.db"))
        text = help_text or HELP.get(family, family)
        key = mmap_key(family, sample, list(labels), list(labels.values()), text)
        self._files[kind].write_value(key, value, 0.0)

    def close(self) -> None:
        for file in self._files.values():
            file.close()
        self._files.clear()


class CounterFile:
    """Counters kept by a process with no registry of its own (the log's writer)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.files = MetricFiles(folder)
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)

    def declare(self, name: str) -> None:
        """A counter present from the start, at 0: Prometheus's increase() then sees its first
        rise (a series that appears already at 1 shows none)."""
        self.files.write("counter", name, f"{name}_total", {}, self.values[(name, ())])

    def inc(self, name: str, amount: float, **labels: str) -> None:
        if not amount:
            return
        key = (name, tuple(sorted(labels.items())))
        self.values[key] += amount
        self.files.write("counter", name, f"{name}_total", labels, self.values[key])


def export(registry: CollectorRegistry, files: MetricFiles) -> None:
    """Snapshot a registry into this process's files. Histogram buckets are stored per bucket
    (not cumulative), as the collector expects; `_count` and `_created` it derives or skips."""
    for family in registry.collect():
        if family.type == "counter":
            for s in family.samples:
                if s.name.endswith("_total"):
                    files.write(
                        "counter", family.name, s.name, s.labels, s.value, family.documentation
                    )
        elif family.type == "histogram":
            for labels, buckets in _buckets(family.samples).items():
                previous = 0.0
                for le, cumulative in buckets:
                    files.write(
                        "histogram",
                        family.name,
                        f"{family.name}_bucket",
                        {**dict(labels), "le": le},
                        cumulative - previous,
                        family.documentation,
                    )
                    previous = cumulative
            for s in family.samples:
                if s.name.endswith("_sum"):
                    files.write(
                        "histogram", family.name, s.name, s.labels, s.value, family.documentation
                    )
        elif family.type == "gauge":
            for s in family.samples:
                files.write(
                    "gauge_liveall", family.name, s.name, s.labels, s.value, family.documentation
                )


def _buckets(samples: Iterable[Any]) -> dict[tuple[tuple[str, str], ...], list[tuple[str, float]]]:
    out: dict[tuple[tuple[str, str], ...], list[tuple[str, float]]] = defaultdict(list)
    for s in samples:
        if s.name.endswith("_bucket"):
            labels = tuple((k, v) for k, v in s.labels.items() if k != "le")
            out[labels].append((s.labels["le"], s.value))
    for buckets in out.values():
        buckets.sort(key=lambda item: float(item[0]))
    return out


def collect(folder: str | Path) -> bytes:
    """The Prometheus text for every process of this run, added up."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(folder))
    return generate_latest(registry)


def forget_the_dead(folder: str | Path) -> int:
    """Processes of this run that are gone (a worker killed or crashed): their gauges stop
    counting. Their counters stay, as counters should. Returns how many processes were found
    dead (a worker that exits cleanly removes its own gauges: see `forget_me`). Every worker
    looks, often, so a death is seen within a second whether or not the supervisor has started
    a replacement yet; under a lock, so each death is counted by one worker only."""
    folder = Path(folder)
    dead = set()
    with open(folder / ".reaper.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for gauge in folder.glob("gauge_*.db"):
            pid = gauge.stem.rsplit("_", 1)[-1].split("x")[0]
            if pid.isdigit() and not _running(_stat(int(pid))):
                gauge.unlink(missing_ok=True)
                dead.add(pid)
    return len(dead)


def forget_me(files: MetricFiles) -> None:
    """A process that exits cleanly takes its gauges with it: only one that died leaves any."""
    if files.folder is not None:
        files.close()
        for gauge in files.folder.glob(f"gauge_*_{files.owner}.db"):
            gauge.unlink(missing_ok=True)
