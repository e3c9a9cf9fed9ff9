"""The thread policy (src/threads.py): CPUs from affinity and the cgroup quota, one thread for
small fits, the override, and a retraining that yields the CPU without lowering its caller."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.training import threads


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu/cpu.cfs_quota_us": "200000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 2.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({}, None),
    ],
)
def test_threads_read_the_cgroup_quota(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cgroup_cpu_quota(tmp_path) == quota


def test_threads_come_from_affinity_capped_by_the_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: 1.5)
    assert threads.available_cpus() == 1  # a quota of 1.5 CPUs: one full CPU to count on
    monkeypatch.setattr(threads, "cgroup_cpu_quota", lambda: None)
    assert threads.available_cpus() == 4


def test_small_fits_use_one_thread_and_the_override_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRAIN_THREADS", raising=False)
    monkeypatch.setattr(threads, "available_cpus", lambda: 2)
    assert threads.fit_threads(200_000) == 1
    assert threads.fit_threads(threads.MULTI_THREAD_FROM_ROWS) == 2
    assert threads.fold_processes(5) == 2
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    assert threads.fit_threads(10**6) == 1
    assert threads.fold_processes(5) == 1
    monkeypatch.setenv("TRAIN_THREADS", "3")
    assert threads.fit_threads(100) == 3
    assert threads.fold_processes(5) == 1  # the user chose threads: folds one at a time


def test_politely_lowers_the_work_not_the_caller() -> None:
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    seen = threads.politely(lambda: os.getpriority(os.PRIO_PROCESS, 0))
    assert seen == min(19, mine + threads.RETRAIN_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, 0) == mine
    with pytest.raises(ValueError, match="boom"):
        threads.politely(lambda: (_ for _ in ()).throw(ValueError("boom")))


def test_openmp_waits_passively_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "passive"
    monkeypatch.setenv("OMP_WAIT_POLICY", "active")
    threads.configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "active"
