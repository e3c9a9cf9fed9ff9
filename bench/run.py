"""`make bench`: run the benchmarks, print the tables, write bench/results/<section>.json/.md.

Speed goals live here, never in timed unit tests: the machine is noisy, so each figure is
compared with a yardstick measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.common import ensure_tools

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SECTIONS = (
    "serving",
    "workers",
    "profile",
    "log",
    "log_cost",
    "monitoring",
    "drift",
    "load",
    "mitigation",
    "swap",
    "contention",
    "dataset",
    "live",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("sections", nargs="*", choices=[*SECTIONS, []], default=[])
    parser.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    parser.add_argument(
        "--compare-with",
        type=Path,
        help="another checkout of the project: serving also measures it, in the same run",
    )
    parser.add_argument("--tag", default="", help="suffix for the result files (serving-TAG.md)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    failed = []
    for section in args.sections or SECTIONS:
        print(f"== {section}", flush=True)
        if section == "serving":
            from bench import serving

            ensure_tools("wrk", "hey")
            result = serving.run(args.artifacts, compare_with=args.compare_with)
        elif section == "workers":
            from bench import workers

            ensure_tools("hey")
            result = workers.run(args.artifacts)
        elif section == "profile":
            from bench import profile

            result = profile.run(args.artifacts)
        elif section == "log":
            from bench import log_capacity

            ensure_tools("wrk")
            result = log_capacity.run(args.artifacts)
        elif section == "log_cost":
            from bench import log_cost

            ensure_tools("wrk")
            result = log_cost.run(args.artifacts)
        elif section == "monitoring":
            from bench import monitoring

            result = monitoring.run(args.artifacts)
        elif section == "drift":
            from bench import drift

            result = drift.run()
        elif section == "mitigation":
            from bench import mitigation

            result = mitigation.run(args.artifacts)
        elif section == "swap":
            from bench import swap

            ensure_tools("hey")
            result = swap.run(args.artifacts)
        elif section == "contention":
            from bench import contention

            ensure_tools("hey")
            result = contention.run(args.artifacts)
        elif section == "live":
            from bench import live

            result = live.run()
        elif section == "dataset":
            from bench import dataset

            ensure_tools("wrk")
            result = dataset.run(args.artifacts)
        elif section == "load":
            from bench import load

            ensure_tools("wrk")
            result = load.run(args.artifacts)
        result["measured_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        result["machine"] = {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
        }
        name = f"{section}-{args.tag}" if args.tag else section
        (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{name}.md").write_text(result["markdown"] + "\n")
        print(result["markdown"])
        for goal, met in result["goals"].items():
            print(f"  {'met   ' if met else 'MISSED'} {goal}")
            if not met:
                failed.append(f"{section}: {goal}")
    if failed:
        print(f"{len(failed)} goal(s) missed: the numbers above are what this machine measured")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
