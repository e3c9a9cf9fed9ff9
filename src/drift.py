"""python -m src.drift --ref data/adult_ref_sample.csv --new data/adult_shifted_sample.csv

PSI/KS drift of a new sample against a reference, on every feature of a dataset spec (the Adult
census spec without --spec). Bins are fit on the reference, then the new sample is counted into
them (src/monitoring/drift.py). Values outside the spec's domain or range are kept: they are what
drift is there to see.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from src import cli
from src.choices import DEFAULT_BINS, DEFAULT_THRESHOLD


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.drift", "PSI/KS drift of a new sample against a reference.")
    parser.add_argument("--ref", required=True, type=Path, help="reference table (CSV or Parquet)")
    parser.add_argument("--new", required=True, type=Path, help="new table to compare")
    parser.add_argument(
        "--spec", type=Path, default=None, help="dataset spec (default: the Adult census spec)"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("artifacts/drift_report.json"), help="the report (JSON)"
    )
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="PSI from which a feature drifts"
    )
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="quantile bins for numerics")
    parser.add_argument(
        "--fail-on-drift", action="store_true", help="exit 1 when drift is found (for schedulers)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from src.fileio import run_cli

    def body() -> int:
        import math

        from src.dataset.spec import load_spec
        from src.dataset.table import load_dataset
        from src.errors import DataError
        from src.fileio import dumps_json, sha256_file, write_text_atomic
        from src.monitoring.drift import EPSILON, NOISE_DRAWS, compute_drift

        if args.threshold <= 0 or not math.isfinite(args.threshold):
            raise DataError(f"--threshold must be a positive number, got {args.threshold}")
        if args.bins < 2:
            raise DataError(f"--bins must be at least 2, got {args.bins}")
        spec = load_spec(args.spec)
        ref = load_dataset(args.ref, spec, require_target=False, lenient=True)
        new = load_dataset(args.new, spec, require_target=False, lenient=True)
        report = compute_drift(
            spec, ref.features, new.features, threshold=args.threshold, bins=args.bins
        )
        payload = report.to_dict()
        payload["timestamp"] = datetime.now(UTC).isoformat(timespec="seconds")
        payload["dataset"] = spec.name
        payload["inputs"] = {
            "ref": {"path": str(args.ref), "sha256": sha256_file(args.ref)},
            "new": {"path": str(args.new), "sha256": sha256_file(args.new)},
        }
        payload["method"] = {"bins": args.bins, "epsilon": EPSILON, "noise_draws": NOISE_DRAWS}
        write_text_atomic(args.out, dumps_json(payload))
        drifted = [name for name, d in report.details.items() if d["drifted"]]
        print(
            f"drift: {'yes' if drifted else 'no'} (threshold {args.threshold}); "
            f"drifted: {', '.join(drifted) or 'none'}; wrote {args.out}"
        )
        return 1 if drifted and args.fail_on_drift else 0  # a gate that refused: 1

    return run_cli(body)


if __name__ == "__main__":
    cli.parse_first(build_parser, inputs=("ref", "new", "spec"))
    raise SystemExit(main())
