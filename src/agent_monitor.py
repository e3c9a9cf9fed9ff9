"""Monitoring agent CLI: observe (metrics + drift) -> think (rules) -> act (a YAML plan).

The agent itself lives in src/agent/: rules as data, the plan's schema, the optional LLM. Only this
module reads and writes files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from src.agent import LLMConfig, load_drift, load_metrics, monitor, plan_yaml
from src.agent.observations import describe_drift, describe_metrics, file_origin
from src.fileio import run_cli, write_text_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m src.agent_monitor", description=__doc__)
    parser.add_argument("--metrics", type=Path, required=True, help="metrics history (JSON lines)")
    parser.add_argument("--drift", type=Path, help="drift report (omit: drift is unknown)")
    parser.add_argument("--out", type=Path, default=Path("artifacts/agent_plan.yaml"))
    parser.add_argument(
        "--llm", action="store_true", help="ask the LLM at AGENT_LLM_BASE_URL for the rationale"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        llm = LLMConfig.from_env(required=args.llm)
        points = load_metrics(args.metrics)
        drift = load_drift(args.drift) if args.drift else None
        sources = {
            "metrics": describe_metrics(points, file_origin(args.metrics)),
            "drift": describe_drift(drift, file_origin(args.drift) if args.drift else {}),
        }
        plan = monitor(points, drift, now=datetime.now(UTC), llm=llm, sources=sources)
        write_text_atomic(args.out, plan_yaml(plan))
        print(f"status: {plan.status}; actions: {', '.join(plan.actions)}; wrote {args.out}")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
