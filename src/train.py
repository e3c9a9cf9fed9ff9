"""python -m src.train --data data/adult_synth.csv --outdir artifacts/ [--spec SPEC]

Reproducible training (src/training/) on a table and its dataset spec (the Adult census spec
without --spec): the holdout left out by row identity, a seeded split, a randomized search by
cross validation, the final fit, metrics, fairness, the card, the artifact set (all or nothing),
then registration in the model registry. Exit codes: 0 done; 1 --strict and under the bar; 2 bad
input; 3 the registry's database unreachable; 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from src.choices import TRAINABLE
from src.errors import DataError
from src.fileio import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m src.train",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path("data/adult_synth.csv"),
        help="the table (CSV or Parquet) with the spec's columns and label",
    )
    parser.add_argument(
        "--spec",
        type=Path,
        default=None,
        help="the dataset spec (python -m src.dataset infer drafts one; default: the Adult "
        "census spec, src/dataset/adult.yaml)",
    )
    parser.add_argument(
        "--outdir",
        type=Path,
        default=Path("artifacts"),
        help="where the artifact set is written, all or nothing",
    )
    parser.add_argument(
        "--seed", type=int, default=42, help="seeds the split, the search, the model, bootstraps"
    )
    parser.add_argument(
        "--val-size", type=float, default=0.2, help="share of the rows used for validation"
    )
    parser.add_argument("--trials", type=int, default=20, help="HPO trials (0 skips the search)")
    parser.add_argument(
        "--mitigation",
        choices=TRAINABLE,
        default="none",
        help="a fairness mitigation for the final fit; `python -m src.mitigation_table` "
        "compares them all",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads per LightGBM fit, and folds one at a time (default: one thread per fit "
        "below 400,000 rows, the folds in processes over the CPUs this process may use; "
        "TRAIN_THREADS too)",
    )
    parser.add_argument(
        "--no-register",
        action="store_true",
        help="do not register the set in the model registry (it is, by default: see README)",
    )
    parser.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 when validation ROC-AUC is under the spec's min_roc_auc (the census's: 0.83) "
        "or the baseline wins beyond noise",
    )
    return parser


def _raise_interrupt(signum: int, frame: object) -> None:
    # SIGTERM takes the same clean path as Ctrl-C: staging is removed, nothing half-written stays.
    raise KeyboardInterrupt


def fairness_line(fairness: dict[str, Any]) -> str:
    """The headline gaps as every report states them: one number per attribute and gap."""
    gaps, intervals = fairness["headline_gaps"], fairness["headline_gaps_ci95"]
    parts = []
    for attribute, report in fairness["by_attribute"].items():
        cells = []
        for kind in ("dp", "eo"):
            low, high = intervals[f"{attribute}_{kind}"]
            cells.append(
                f"{kind.upper()} gap {gaps[f'{attribute}_{kind}']:.3f} [{low:.3f}, {high:.3f}]"
            )
        parts.append(f"{attribute} {', '.join(cells)} (vs {report['reference_group']})")
    return "; ".join(parts) + f". Each: {fairness['headline_rule']}."


def report_run(m: dict[str, Any], outdir: Path, *, strict: bool) -> int:
    """What a person needs from a run: the numbers, the fairness gaps, and any warning."""
    comparison = m["baseline"]["comparison"]
    low, high = comparison["ci95"]
    print(
        f"validation: roc_auc {m['roc_auc']:.4f}  pr_auc {m['pr_auc']:.4f}  "
        f"accuracy {m['accuracy']:.4f}  (baseline roc_auc {m['baseline']['roc_auc']:.4f}; "
        f"difference {comparison['roc_auc_difference']:+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]: "
        f"{comparison['verdict']})"
    )
    print(f"fairness: {fairness_line(m['fairness'])}")
    if m["mitigation"]["name"] != "none":
        print(f"mitigation: {m['mitigation']['name']} ({m['mitigation']['description']})")
    print(f"wrote {outdir}/ in {m['train_seconds']:.1f}s")
    status = 0
    if comparison["verdict"] == "baseline better":
        print(
            f"WARNING: the logistic baseline beats the tuned model by more than the validation "
            f"noise ({-comparison['roc_auc_difference']:.4f} ROC-AUC); the registry's gate "
            "refuses such a model (README: 'When the baseline wins')",
            file=sys.stderr,
        )
        status = 1 if strict else 0
    if not m["acceptance"]["passed"]:
        print(
            f"WARNING: validation ROC-AUC {m['roc_auc']:.4f} is below the acceptance bar "
            f"{m['acceptance']['min_roc_auc']} (the spec's min_roc_auc); artifacts were written, "
            "acceptance.passed is false",
            file=sys.stderr,
        )
        status = 1 if strict else 0
    return status


def register_set(outdir: Path) -> str:
    """Into the model registry beside the log: champion when there is none, else through the
    gate. What became of it, in one sentence."""
    from src.registry.actions import register_trained
    from src.registry.core import opened_registry
    from src.settings import Settings

    settings = Settings()
    with opened_registry(settings) as registry:
        return register_trained(registry, outdir, settings, actor="python -m src.train")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if not 0 < args.val_size < 1:
            raise DataError(f"--val-size must be between 0 and 1, got {args.val_size}")
        if args.trials < 0:
            raise DataError(f"--trials must be >= 0, got {args.trials}")
        if args.threads is not None and args.threads < 1:
            raise DataError(f"--threads must be at least 1, got {args.threads}")
        if not args.data.exists():  # before the heavy imports below: it answers at once
            raise DataError(f"{args.data}: no such file")
        from src.dataset.spec import load_spec

        spec = load_spec(args.spec)
        from src.training.threads import configure_openmp

        if args.threads is not None:
            os.environ["TRAIN_THREADS"] = str(args.threads)
        configure_openmp()  # before LightGBM loads, which the next import does
        from src.report import documents
        from src.training.train import train

        signal.signal(signal.SIGTERM, _raise_interrupt)
        result = train(
            args.data,
            args.outdir,
            spec=spec,
            documents=documents,
            seed=args.seed,
            val_size=args.val_size,
            trials=args.trials,
            mitigation=args.mitigation,
        )
        status = report_run(result.metrics, result.outdir, strict=args.strict)
        if not args.no_register:
            print(f"registry: {register_set(result.outdir)}")
        return status

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
