"""Turn the service's own prediction log into what the monitor reads: hourly metrics points and a
drift report of the latest window against the training reference.

`python -m src.monitor_window --reference artifacts/ --out-dir var/live/` (the database is
DATABASE_URL, or the service's default SQLite file, or --database-url). It first brings the
hourly statistics up to date, in the database (only the hours that changed), then reads them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from src import cli
from src.choices import DEFAULT_THRESHOLD, DEFAULT_WINDOW_HOURS
from src.settings import Settings


def build_parser(settings: Settings) -> argparse.ArgumentParser:
    parser = cli.parser("python -m src.monitor_window", __doc__.split("\n\n", 1)[0])
    parser.add_argument(
        "--database-url", help="default: DATABASE_URL, else the service's SQLite file"
    )
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path("artifacts"),
        help="the artifact folder holding the drift reference (drift_reference.json)",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=Path("var/live"), help="where the two files go"
    )
    parser.add_argument(
        "--window-hours", type=int, default=DEFAULT_WINDOW_HOURS, help="the drift window"
    )
    parser.add_argument(
        "--threshold", type=float, default=DEFAULT_THRESHOLD, help="PSI from which a feature drifts"
    )
    parser.add_argument(
        "--label-delay-hours",
        type=int,
        default=settings.stats_label_delay_hours,
        help="an hour's quality counts once this long has passed since it ended",
    )
    parser.add_argument(
        "--min-labelled",
        type=int,
        default=settings.stats_min_labelled,
        help="labelled rows an hour needs for a quality point",
    )
    parser.add_argument("--rebuild", action="store_true", help="recompute every hour")
    return parser


if __name__ == "__main__":  # parse first, import after: --help and a missing file answer at once
    cli.parse_first(lambda: build_parser(Settings()), inputs=("reference",))

from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from src.dataset.table import load_dataset
from src.errors import DataError
from src.fileio import dumps_json, run_cli, write_text_atomic
from src.loop.labels import purge_unmatched
from src.loop.statistics import refresh
from src.loop.tables import make_engine, upgrade
from src.loop.windows import add_coverage, coverage_line, drift_report, hourly_points
from src.model.artifacts import DRIFT_REFERENCE_FILE, REFERENCE_FILE, SPEC_FILE
from src.monitoring.drift import FeatureReference, fit_reference, references_from_json


def load_references(folder: Path) -> dict[str, FeatureReference]:
    """The bins stored with the model; sets trained before they were stored: fitted again."""
    from src.dataset.spec import load_spec

    stored = folder / DRIFT_REFERENCE_FILE
    if stored.is_file():
        return references_from_json(stored.read_text())
    spec = load_spec(folder / SPEC_FILE if (folder / SPEC_FILE).is_file() else None)
    rows = load_dataset(folder / REFERENCE_FILE, spec, require_target=False, lenient=True)
    return fit_reference(spec, rows.features)


def _judge(
    engine: Any, references: Any, args: argparse.Namespace, settings: Settings
) -> tuple[int, Any, list[dict[str, Any]], dict[str, Any] | None]:
    """Purge labels that waited too long, refresh the statistics, read the points and the
    drift of the last window."""
    now = datetime.now(UTC)
    upgrade(engine)
    purged = purge_unmatched(engine, now=now, keep=timedelta(hours=settings.label_pending_hours))
    done = refresh(
        engine,
        references,
        now=now,
        label_delay=timedelta(hours=args.label_delay_hours),
        rebuild=args.rebuild,
    )
    points = hourly_points(engine, min_labelled=args.min_labelled)
    report = (
        drift_report(engine, references, hours=args.window_hours, threshold=args.threshold)
        if points
        else None
    )
    add_coverage(engine, points, report)  # the share of answered rows the figures rest on
    if report is not None:
        attribution = _attribution_drift(engine, args.reference, report["window"], settings)
        if attribution is not None:
            report["attribution_drift"] = attribution
    return purged, done, points, report


def _attribution_drift(
    engine: Any, folder: Path, window: dict[str, Any], settings: Settings
) -> dict[str, Any] | None:
    """The window's attribution shares against training's, when the set holds its summary."""
    from src.loop.attributions import attribution_drift, training_summary, window_sample
    from src.model.artifacts import SHAP_SUMMARY_FILE, load_bundle
    from src.model.encoder import CompiledEncoder
    from src.model.reasons import Explainer

    if not (folder / SHAP_SUMMARY_FILE).is_file() or not window.get("rows"):
        return None  # a set trained before reasons, or an empty window
    bundle = load_bundle(folder)
    encoder = CompiledEncoder.from_spec(bundle.spec, bundle.encoding)
    rows = window_sample(engine, bundle.spec, window, settings.attribution_sample_rows)
    return attribution_drift(
        Explainer(bundle.model_text, encoder),
        encoder,
        rows,
        training_summary(folder / SHAP_SUMMARY_FILE),
        settings.attribution_drift_share,
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings()
    args = build_parser(settings).parse_args(argv)

    def body() -> int:
        url = args.database_url or settings.prediction_log_url
        if args.window_hours < 1:
            raise DataError(f"--window-hours must be at least 1, got {args.window_hours}")
        references = load_references(args.reference)
        engine = make_engine(url)
        shown = engine.url.render_as_string(hide_password=True)  # never a password on screen
        try:
            purged, done, points, report = _judge(engine, references, args, settings)
        except (OperationalError, InterfaceError):
            raise  # the database did not answer: run_cli says so, exit 3
        except SQLAlchemyError as exc:
            raise DataError(
                f"{shown}: cannot read the prediction log ({type(exc).__name__})"
            ) from None
        finally:
            engine.dispose()
        if not points or report is None:
            raise DataError(f"{shown}: the prediction log is empty: nothing to judge yet")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            args.out_dir / "metrics_history.jsonl", "".join(json.dumps(p) + "\n" for p in points)
        )
        write_text_atomic(args.out_dir / "drift_report.json", dumps_json(report))
        quality = sum(p["roc_auc"] is not None for p in points)
        print(
            f"statistics: {done.hours_computed} hours computed, {done.hours_late} late hours "
            f"recomputed{' (rebuilt)' if done.rebuilt else ''}"
            + (f", {purged} unmatched labels purged" if purged else "")
        )
        print(
            f"{len(points)} hourly points ({quality} with quality), drift over the last "
            f"{args.window_hours} h ({report['window']['rows']} rows): "
            f"{'yes' if report['model_input_drift'] else 'no'} for model inputs; wrote "
            f"{args.out_dir}/metrics_history.jsonl and drift_report.json"
        )
        if line := coverage_line(report):
            print(line)
        if attribution := report.get("attribution_drift"):
            moved = ", ".join(attribution["drifted"]) or "none"
            print(
                f"attribution drift on {attribution['rows']:,} sampled rows (share moved more "
                f"than {attribution['threshold']}): {moved}"
            )
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
