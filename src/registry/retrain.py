"""The retraining recipe the agent runs: the project's training data plus the recent labelled
traffic in the log, seeded, trained into a new artifact set.

Documented, so the challenger can be reproduced: the training CSV as it is, then the labelled rows
of the last RETRAIN_TRAFFIC_HOURS of traffic (latest label per prediction) that end before the
newest GATE_ROWS labelled rows begin: those are the gate's, so it judges the challenger on rows
from after everything it trained on (a time split; the manifest records the range). Training then
leaves out the holdout by row identity, as every training does. The same split seed as
`python -m src.train`, and the champion's hyperparameters unless RETRAIN_TRIALS asks for a search.
The rows never touch the disk outside the database: they are handed to training in memory.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from src.dataset.spec import DatasetSpec
from src.dataset.table import dataset_from_frames
from src.registry.gate import GATE_ROWS, recent_labelled
from src.training.data import TrainingData, read_training_data
from src.training.train import train


def traffic_for_training(
    engine: Engine, spec: DatasetSpec, *, hours: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Labelled traffic of the last `hours` (by event time) that ends before the gate's newest
    rows begin, and its range."""
    from src.loop.statistics import as_utc
    from src.loop.tables import predictions_table

    with engine.connect() as connection:
        latest = connection.execute(select(func.max(predictions_table.c.ts))).scalar()
    if latest is None:
        return pd.DataFrame(columns=["ts", *spec.features, spec.label.column]), {"rows": 0}
    since = as_utc(latest) - timedelta(hours=hours)
    rows = recent_labelled(engine, spec, limit=10_000_000, since=since)
    gate, rows = rows.iloc[:GATE_ROWS], rows.iloc[GATE_ROWS:]  # newest first
    if len(gate):
        rows = rows[rows["ts"] < gate["ts"].min()]  # ties at the boundary stay the gate's
    if rows.empty:
        return rows, {"rows": 0}
    span = {"rows": len(rows), "from": rows["ts"].min(), "to": rows["ts"].max()}
    return rows, {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in span.items()}


def retraining_data(data: Path, spec: DatasetSpec, engine: Engine, *, hours: int) -> TrainingData:
    """The training file plus the traffic, in memory, with where each part came from."""
    base = read_training_data(data, spec)
    traffic, span = traffic_for_training(engine, spec, hours=hours)
    dataset = dataset_from_frames(
        spec,
        [base.dataset.features, traffic],
        [base.dataset.target, traffic[spec.label.column]],
    )
    provenance = {
        **base.provenance,
        "rows": len(dataset.features),
        "file_rows": base.provenance["rows"],
        "traffic": span,
    }
    return TrainingData(spec, dataset, provenance)


def retrain(
    data: Path,
    engine: Engine,
    workdir: Path,
    *,
    spec: DatasetSpec,
    hours: int,
    seed: int = 42,
    trials: int = 0,
    params: dict[str, Any] | None = None,
) -> Path:
    """Train a challenger into `workdir/set`; returns that folder. With `trials` 0, `params`
    (the champion's hyperparameters) are used as they are."""
    from src.report import documents

    rows = retraining_data(data, spec, engine, hours=hours)
    train(
        rows,
        workdir / "set",
        seed=seed,
        trials=trials,
        params=None if trials else params,
        documents=documents,
    )
    return workdir / "set"
