"""How many threads a LightGBM fit uses, and where parallel work goes: decided here, once.

LightGBM's OpenMP threads spin for the cores instead of waiting when the machine is busy: the
same 300-tree fit on 9,600 rows took 0.92 s with one thread, 17.3 s with two beside other jobs,
2.65 s with two and OMP_WAIT_POLICY=passive (docs/performance.md). So:

- the CPUs this process may use come from its affinity mask and its cgroup's CPU quota (a
  container, a Cloud Run instance, a Vertex job get a quota, not a machine);
- a fit below MULTI_THREAD_FROM_ROWS rows uses one thread: with threads that sleep while they
  wait, a second thread pays only from there on, even on a quiet machine (the crossover,
  measured: docs/performance.md);
- parallel work goes into processes, each fit single-threaded: the folds of the search's cross
  validation run in `fold_processes()` processes;
- threads that wait sleep (OMP_WAIT_POLICY=passive): the entry points call `configure_openmp()`
  before LightGBM loads, so nobody has to export anything;
- `--threads` / TRAIN_THREADS override all of it (one fit with that many threads, folds one at a
  time). The results are the same whatever the count (deterministic=True; a test checks).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Measured crossover (docs/performance.md): with OMP_WAIT_POLICY=passive, two threads per fit were
# 1.5x slower at 200,000 rows and 1.12x faster at 500,000.
MULTI_THREAD_FROM_ROWS = 400_000
RETRAIN_NICENESS = 10  # the agent retrains beside serving at a lower priority
_CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = _CGROUP) -> float | None:
    """The CPUs the cgroup's quota allows (cgroup v2 `cpu.max`, or v1's cfs files), or None."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by its cgroup's quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def requested_threads() -> int | None:
    """TRAIN_THREADS, when set (the CLI's --threads sets it for its process)."""
    value = os.environ.get("TRAIN_THREADS", "").strip()
    return max(1, int(value)) if value.isdigit() else None


def fit_threads(rows: int) -> int:
    """Threads for one fit on `rows` rows."""
    requested = requested_threads()
    if requested is not None:
        return requested
    return 1 if rows < MULTI_THREAD_FROM_ROWS else min(2, available_cpus())


def fold_processes(folds: int) -> int:
    """Processes the cross-validation folds run in (each fit single-threaded), or 1."""
    if requested_threads() is not None:
        return 1
    return max(1, min(folds, available_cpus()))


def configure_openmp() -> None:
    """Threads that wait sleep instead of spinning. Must run before LightGBM loads (its OpenMP
    runtime reads the variable once); a value the user set wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")


def politely(work: Callable[[], T], niceness: int = RETRAIN_NICENESS) -> T:
    """`work()` at a lower CPU priority (os.nice), so that serving on the same machine keeps its
    latency. Linux keeps niceness per thread, and the threads and processes a thread starts
    inherit it: `work` runs in a thread of its own, and the caller's priority is untouched."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            os.nice(niceness)
            outcome["value"] = work()
        except BaseException as exc:  # handed to the caller as it is
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="polite-work")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
