"""The monitoring job on a schedule, as Cloud Scheduler would run it: every `--every` seconds,
`python -m src.monitor_window` (the log's statistics brought up to date, the points and the drift
of the last window, against the champion's own reference), then `python -m src.agent_monitor
--execute` on what it wrote. Each run's outcome goes to one JSON line; a run that fails (the
database stalled, say) is recorded and the next one comes on time."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PYTHON = sys.executable


def champion_folder() -> Path | None:
    """The champion's set in the registry (the environment names the registry), or None."""
    from src.registry.core import CHAMPION, opened_registry
    from src.settings import Settings

    with opened_registry(Settings()) as registry:
        version = registry.alias(CHAMPION)
        return registry.folder(version) if version else None


def run_once(live: Path, timeout: float) -> dict[str, Any]:
    started = time.time()
    outcome: dict[str, Any] = {"started": started}
    try:
        reference = champion_folder()
    except Exception as exc:  # the database stalled or down: said, and tried next time
        outcome.update(step="registry", code=None, error=f"{type(exc).__name__}: {exc}"[:300])
        return outcome
    if reference is None:
        outcome.update(step="registry", code=None, error="no champion yet")
        return outcome
    steps = [
        ["-m", "src.monitor_window", "--reference", str(reference), "--out-dir", str(live)],
        [
            "-m",
            "src.agent_monitor",
            "--metrics",
            str(live / "metrics_history.jsonl"),
            "--drift",
            str(live / "drift_report.json"),
            "--out",
            str(live / "agent_plan.yaml"),
            "--execute",
        ],
    ]
    for name, args in zip(("monitor_window", "agent_monitor"), steps, strict=True):
        try:
            done = subprocess.run(
                [PYTHON, *args], capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            outcome.update(step=name, code=None, error=f"timed out after {timeout:.0f} s")
            return outcome
        outcome[name] = {
            "code": done.returncode,
            "out": done.stdout.strip().splitlines()[-3:],
            "err": done.stderr.strip().splitlines()[-2:],
        }
        if done.returncode != 0:
            outcome.update(step=name, code=done.returncode)
            return outcome
    outcome.update(step="done", code=0, seconds=round(time.time() - started, 1))
    return outcome


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.monitor_job", description=__doc__)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between runs")
    parser.add_argument("--live", type=Path, required=True, help="where the outputs go")
    parser.add_argument("--record", type=Path, required=True, help="one JSON line per run")
    args = parser.parse_args(argv)
    args.live.mkdir(parents=True, exist_ok=True)
    while True:
        next_run = time.monotonic() + args.every
        outcome = run_once(args.live, timeout=max(args.every * 3, 120))
        with args.record.open("a") as f:
            f.write(json.dumps(outcome) + "\n")
        time.sleep(max(0.0, next_run - time.monotonic()))


if __name__ == "__main__":
    raise SystemExit(main())
