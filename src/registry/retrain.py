"""The retraining recipe the agent runs: the project's training data plus the recent labelled
traffic in the log, seeded, trained into a new artifact set.

Documented, so the challenger can be reproduced: the training CSV as it is, then the labelled rows
of the last RETRAIN_TRAFFIC_HOURS of traffic (latest label per prediction), minus the newest rows
the gate will judge on (so it judges the challenger on rows it never saw); the same split seed as
`python -m src.train`, and the champion's hyperparameters unless RETRAIN_TRIALS asks for a search.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from src.data import load_dataset
from src.registry.gate import GATE_ROWS, recent_labelled
from src.schema import FEATURES, TARGET
from src.train import train


def traffic_for_training(engine: Engine, *, hours: int) -> pd.DataFrame:
    """Labelled traffic of the last `hours` (by event time), minus the gate's newest rows."""
    from src.loop.tables import predictions_table

    with engine.connect() as connection:
        latest = connection.execute(select(func.max(predictions_table.c.ts))).scalar()
    if latest is None:
        return pd.DataFrame(columns=[*FEATURES, TARGET])
    rows = recent_labelled(
        engine, limit=10_000_000, since=_as_time(latest) - timedelta(hours=hours)
    )
    return rows.iloc[GATE_ROWS:]  # newest first: the gate's rows are left out


def _as_time(value: object) -> object:
    from src.loop.statistics import _as_datetime

    return _as_datetime(value)


def retrain(
    data: Path,
    engine: Engine,
    workdir: Path,
    *,
    hours: int,
    seed: int = 42,
    trials: int = 0,
    params: dict[str, Any] | None = None,
) -> Path:
    """Train a challenger into `workdir/set`; returns that folder. With `trials` 0, `params`
    (the champion's hyperparameters) are used as they are."""
    base = load_dataset(data)
    frame = base.features.copy()
    frame[TARGET] = base.target.to_numpy()
    traffic = traffic_for_training(engine, hours=hours)
    combined = pd.concat([frame, traffic[[*FEATURES, TARGET]]], ignore_index=True)
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "training_rows.csv"
    combined.to_csv(source, index=False, lineterminator="\n")
    train(source, workdir / "set", seed=seed, trials=trials, params=None if trials else params)
    return workdir / "set"
