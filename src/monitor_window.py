"""Turn the service's own prediction log into what the monitor reads: hourly metrics points and a
drift report of the latest window against the training reference.

`python -m src.monitor_window --reference artifacts/ --out-dir artifacts/live/` (the database is
DATABASE_URL, or the service's default SQLite file, or --database-url).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from src.artifacts import REFERENCE_FILE
from src.data import load_dataset
from src.drift import DEFAULT_THRESHOLD, compute_drift
from src.errors import DataError
from src.fileio import dumps_json, run_cli, write_text_atomic
from src.prediction_log import feedback_table, make_engine, predictions_table, requests_table
from src.schema import COLUMN_BY_NAME, FEATURES
from src.settings import Settings

BUCKET = timedelta(hours=1)
DEFAULT_WINDOW_HOURS = 24


def read_labelled(engine: Engine) -> pd.DataFrame:
    """Every logged prediction with its label where one arrived (NaN otherwise)."""
    p, f = predictions_table, feedback_table
    query = select(p.c.ts, p.c.probability, p.c.predicted_class, f.c.label).join(
        f, (p.c.request_id == f.c.request_id) & (p.c.row_index == f.c.row_index), isouter=True
    )
    with engine.connect() as connection:
        frame = pd.DataFrame(
            connection.execute(query).all(),
            columns=["ts", "probability", "predicted_class", "label"],
        )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def read_requests(engine: Engine) -> pd.DataFrame:
    r = requests_table
    query = select(r.c.ts, r.c.status, r.c.latency_ms).where(r.c.path == "/predict")
    with engine.connect() as connection:
        frame = pd.DataFrame(
            connection.execute(query).all(), columns=["ts", "status", "latency_ms"]
        )
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def hourly_points(predictions: pd.DataFrame, requests: pd.DataFrame) -> list[dict[str, Any]]:
    """One point per hour that has labels of both classes: ROC-AUC, PR-AUC and accuracy over the
    labelled rows; p95 latency and error rate (share of /predict requests not answered 200) from
    the service's own measurements. Hours without such labels give no point: a metric from one
    class, or from nothing, would be noise presented as a number."""
    if predictions.empty:
        return []
    labelled = predictions.dropna(subset=["label"])
    hours = labelled.groupby(labelled["ts"].dt.floor(BUCKET))
    by_hour_requests = (
        dict(list(requests.groupby(requests["ts"].dt.floor(BUCKET)))) if len(requests) else {}
    )
    points = []
    for hour, rows in hours:
        y = rows["label"].to_numpy(dtype=int)
        if len(np.unique(y)) < 2:
            continue
        served = by_hour_requests.get(hour)
        latency = float(np.percentile(served["latency_ms"], 95)) if served is not None else 0.0
        errors = float((served["status"] != 200).mean()) if served is not None else 0.0
        points.append(
            {
                "ts": hour.isoformat(),
                "roc_auc": round(float(roc_auc_score(y, rows["probability"])), 4),
                "pr_auc": round(float(average_precision_score(y, rows["probability"])), 4),
                "acc": round(float((rows["predicted_class"].to_numpy() == y).mean()), 4),
                "latency_p95_ms": round(latency, 2),
                "error_rate": round(errors, 4),
                "rows": len(rows),
            }
        )
    return points


def read_window(engine: Engine, *, hours: int) -> pd.DataFrame:
    """The inputs of the last `hours` of logged predictions, as the drift check reads them."""
    p = predictions_table
    with engine.connect() as connection:
        latest = connection.execute(select(p.c.ts).order_by(p.c.ts.desc()).limit(1)).scalar()
        if latest is None:
            raise DataError("the prediction log is empty: nothing to compare")
        query = select(*(p.c[name] for name in FEATURES)).where(
            p.c.ts > latest - timedelta(hours=hours)
        )
        frame = pd.DataFrame(connection.execute(query).all(), columns=list(FEATURES))
    for name in FEATURES:
        if COLUMN_BY_NAME[name].kind == "numeric":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    return frame


def build_window_files(
    engine: Engine, reference: pd.DataFrame, *, window_hours: int, threshold: float
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    points = hourly_points(read_labelled(engine), read_requests(engine))
    window = read_window(engine, hours=window_hours)
    report = compute_drift(reference, window, threshold=threshold).to_dict()
    report["window"] = {"hours": window_hours, "rows": len(window)}
    return points, report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.monitor_window", description=__doc__)
    parser.add_argument("--database-url", help="default: DATABASE_URL or the service's SQLite file")
    parser.add_argument(
        "--reference",
        type=Path,
        default=Path("artifacts"),
        help=f"the artifact folder holding {REFERENCE_FILE}",
    )
    parser.add_argument("--out-dir", type=Path, default=Path("artifacts/live"))
    parser.add_argument("--window-hours", type=int, default=DEFAULT_WINDOW_HOURS)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    args = parser.parse_args(argv)

    def body() -> int:
        url = args.database_url or Settings().prediction_log_url
        if args.window_hours < 1:
            raise DataError(f"--window-hours must be at least 1, got {args.window_hours}")
        reference = load_dataset(args.reference / REFERENCE_FILE, require_target=False).features
        engine = make_engine(url)
        try:
            points, report = build_window_files(
                engine, reference, window_hours=args.window_hours, threshold=args.threshold
            )
        except SQLAlchemyError as exc:
            raise DataError(
                f"{url}: cannot read the prediction log ({type(exc).__name__})"
            ) from None
        finally:
            engine.dispose()
        if not points:
            raise DataError(f"{url}: no hour has labels of both classes yet (POST /feedback)")
        args.out_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            args.out_dir / "metrics_history.jsonl", "".join(json.dumps(p) + "\n" for p in points)
        )
        write_text_atomic(args.out_dir / "drift_report.json", dumps_json(report))
        print(
            f"{len(points)} hourly points, drift over the last {args.window_hours} h "
            f"({report['window']['rows']} rows): {'yes' if report['overall_drift'] else 'no'}; "
            f"wrote {args.out_dir}/metrics_history.jsonl and drift_report.json"
        )
        return 0

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
