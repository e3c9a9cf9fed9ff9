"""python -m src.report --artifacts DIR: the model card as one page, with its live parts.

The card of the set in DIR, with the drift report and plan you name (or the live loop's), and
the registry's history when the set is registered beside the log (PREDICTION_LOG_DIR /
DATABASE_URL). Exit codes: 0 written; 2 a missing or malformed input.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from src import cli


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.report", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--artifacts", type=Path, default=Path("artifacts"), help="the trained set to describe"
    )
    parser.add_argument("--out", type=Path, help="the page (default: <artifacts>/report.html)")
    parser.add_argument("--drift", type=Path, help="a drift report to show, with its provenance")
    parser.add_argument("--plan", type=Path, help="an agent plan (YAML) to show")
    parser.add_argument("--live", type=Path, help="the live loop's output folder, if it ran")
    return parser


def registry_part(version: str) -> str:
    """The registry section, as /report shows it, when this set is in the registry beside the
    log; nothing otherwise."""
    from src.registry.core import CHAMPION, opened_registry
    from src.report.pages import registry_section
    from src.settings import Settings

    try:
        with opened_registry(Settings()) as registry:
            registry.get(version)
            return registry_section(registry.alias(CHAMPION), version, registry.history(limit=20))
    except Exception:  # no registry here, or not this set in it: the card goes without
        return ""


def build_report(
    artifacts: Path,
    *,
    drift_path: Path | None = None,
    plan_path: Path | None = None,
    live: Path | None = None,
    registry: str = "",
) -> str:
    """The whole page for the set in `artifacts`, its live parts from the given files."""
    from src.model.artifacts import model_version, read_manifest
    from src.report.card import build_card, card_inputs, mitigations_beside
    from src.report.pages import (
        fill,
        monitoring_badges,
        monitoring_section,
        read_monitoring,
        served_block,
    )

    spec, metrics, predictions, importances = card_inputs(artifacts)
    results = []
    if live is not None and (live / "agent_plan.yaml").is_file():
        plan, drift = live / "agent_plan.yaml", live / "drift_report.json"
        results.append(read_monitoring(f"live loop ({live})", plan, drift))
    if drift_path or plan_path:
        label = "the plan and drift report named on the command line"
        results.append(read_monitoring(label, plan_path, drift_path))
    manifest = read_manifest(artifacts)
    return fill(
        build_card(spec, metrics, predictions, importances, mitigations_beside(artifacts)),
        served=served_block(manifest, model_version(manifest), metrics),
        badges=monitoring_badges(results),
        monitoring=monitoring_section(results),
        registry=registry,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from src.fileio import run_cli

    def body() -> int:
        import json

        import yaml

        from src.errors import DataError
        from src.fileio import write_text_atomic
        from src.model.artifacts import model_version, read_manifest

        version = model_version(read_manifest(args.artifacts))
        try:
            page = build_report(
                args.artifacts,
                drift_path=args.drift,
                plan_path=args.plan,
                live=args.live,
                registry=registry_part(version),
            )
        except (KeyError, yaml.YAMLError, json.JSONDecodeError) as exc:
            raise DataError(f"{args.artifacts}: a report input is malformed ({exc})") from None
        out = args.out or args.artifacts / "report.html"
        write_text_atomic(out, page)
        print(f"wrote {out} ({len(page) // 1024} KiB)")
        return 0

    return run_cli(body)


if __name__ == "__main__":
    cli.parse_first(build_parser, inputs=("artifacts", "drift", "plan"))
    raise SystemExit(main())
