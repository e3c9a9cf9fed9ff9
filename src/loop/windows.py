"""Monitoring windows: the prediction log turned into hourly metrics points and a drift report of
the latest window against the training reference."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sqlalchemy import select
from sqlalchemy.engine import Engine

from src.drift import compute_drift
from src.errors import DataError
from src.loop.labels import latest_labels_query
from src.loop.tables import predictions_table, requests_table
from src.schema import COLUMN_BY_NAME, FEATURES

BUCKET = timedelta(hours=1)
DEFAULT_WINDOW_HOURS = 24


def read_labelled(engine: Engine) -> pd.DataFrame:
    """Every logged prediction with its latest label where one arrived (NaN otherwise)."""
    p, latest = predictions_table, latest_labels_query()
    query = select(p.c.ts, p.c.probability, p.c.predicted_class, latest.c.label).join(
        latest, p.c.prediction_id == latest.c.prediction_id, isouter=True
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
