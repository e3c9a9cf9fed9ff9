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

from src import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.agent_monitor", __doc__.split("\n\n", 1)[0])
    parser.add_argument("--metrics", type=Path, required=True, help="metrics history (JSON lines)")
    parser.add_argument("--drift", type=Path, help="drift report (omit: drift is unknown)")
    parser.add_argument(
        "--out", type=Path, default=Path("artifacts/agent_plan.yaml"), help="the plan (YAML)"
    )
    parser.add_argument(
        "--llm", action="store_true", help="ask the LLM at AGENT_LLM_BASE_URL for the rationale"
    )
    parser.add_argument(
        "--execute",
        action="store_true",
        help="carry out the plan (roll back, alert, retrain through the gate); without it nothing "
        "changes and the plan says what it would do",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/adult_synth.csv"),
        help="the training data a retraining starts from",
    )
    parser.add_argument("--force", action="store_true", help="override the cooldown (recorded)")
    return parser


if __name__ == "__main__":  # parse first, import after: --help and a missing file answer at once
    cli.parse_first(build_parser, inputs=("metrics", "drift"))

from src.agent import AgentPlan, LLMConfig, load_drift, load_metrics, monitor, plan_yaml
from src.agent.observations import describe_drift, describe_metrics, file_origin
from src.fileio import run_cli, write_text_atomic


def would_do(plan: AgentPlan) -> list[str]:
    """What --execute would do, in order, said in the plan when it is not executed."""
    return [f"{action}: {WOULD[action]}" for action in plan.actions if action in WOULD]


WOULD = {
    "roll_back_model": "make the previous champion champion again (if the cooldown allows)",
    "open_incident": "POST an alert to ALERT_WEBHOOK_URL (else stderr and the history)",
    "trigger_retraining": "train a challenger on the data plus recent labelled traffic, gate it",
    "raise_thresholds": "record a recommendation to raise serving capacity",
}


def execute(plan: AgentPlan, data: Path, *, force: bool) -> list[dict[str, object]]:
    """The plan, carried out against the registry beside the log. A database that cannot be
    reached is a failed execution (recorded in the plan), never a traceback."""
    from src.agent.executor import unreachable_database

    try:
        return _execute(plan, data, force=force)
    except unreachable_database() as exc:
        return [
            {
                "action": "*",
                "result": "failed",
                "failure": "unreachable",
                "error": f"the registry's database did not answer: {_first_line(exc)}; nothing "
                "was done (check DATABASE_URL); a rerun acts on this plan",
            }
        ]


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _execute(plan: AgentPlan, data: Path, *, force: bool) -> list[dict[str, object]]:
    import tempfile

    from src.training.threads import configure_openmp, politely

    configure_openmp()  # before LightGBM loads (a retraining imports it)
    from src.agent.executor import Executor
    from src.registry.core import opened_registry
    from src.registry.retrain import retrain
    from src.settings import Settings

    settings = Settings()
    # The challenger's set is copied into the registry's store; its folder goes, success or not.
    with (
        opened_registry(settings) as registry,
        tempfile.TemporaryDirectory(prefix="retrain-") as work,
    ):

        def challenger() -> Path:  # the machine serves too: the retraining yields to it
            return politely(
                lambda: retrain(
                    data,
                    registry.engine,
                    Path(work),
                    spec=registry.champion_spec(),
                    hours=settings.retrain_traffic_hours,
                    trials=settings.retrain_trials,
                    params=registry.champion_hyperparameters(),
                )
            )

        return Executor(registry, settings, retrain=challenger).execute(plan, force=force)


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
        code = 0
        if args.execute:
            from src.agent.executor import exit_code

            executed = execute(plan, args.data, force=args.force)
            plan = plan.model_copy(update={"executed": executed})
            code = exit_code(executed)
        else:
            plan = plan.model_copy(update={"would_do": would_do(plan)})
        if llm is not None and any(f.get("unreachable") for f in plan.findings):
            code = code or 3  # the rules' plan stands; the LLM asked for did not answer
            print(
                "error: the LLM at AGENT_LLM_BASE_URL did not answer; the plan is the rules' own",
                file=sys.stderr,
            )
        write_text_atomic(args.out, plan_yaml(plan))  # failed or not, the plan is written
        print(f"status: {plan.status}; actions: {', '.join(plan.actions)}; wrote {args.out}")
        for outcome in plan.executed or []:
            error = f" ({outcome['error']})" if outcome.get("error") else ""
            print(f"  executed {outcome['action']}: {outcome['result']}{error}")
        if code:
            failed = next(
                o
                for o in plan.executed or []
                if o["result"] == "failed" or o["result"].startswith("skipped: another")
            )
            print(
                f"error: {failed['action']}: {failed.get('error', failed['result'])}",
                file=sys.stderr,
            )
        return code

    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
