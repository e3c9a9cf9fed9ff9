"""The gate: a challenger becomes champion only if, on the same labelled rows, its ROC-AUC is no
worse than the champion's by more than a margin (with a paired bootstrap interval), its own
acceptance passed (and the baseline did not beat it), and no sex or race group's parity gap
widens by more than a limit.

The rows are recent labelled traffic from the log when there are enough, else the holdout the
registry keeps (the first champion's validation rows); the result says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from src.artifacts import VALIDATION_ROWS_FILE, load_bundle
from src.data import load_dataset
from src.evaluate import headline_gaps, paired_auc_difference
from src.fileio import write_bytes_atomic
from src.loop.labels import latest_labels_query
from src.loop.tables import predictions_table
from src.registry.core import CHAMPION, Registry
from src.schema import COLUMN_BY_NAME, FEATURES, MODEL_INPUTS, TARGET

HOLDOUT_FILE = "holdout.csv"
GATE_ROWS = 5000  # the newest labelled rows of traffic the gate judges on (at most)


@dataclass
class GateResult:
    passed: bool
    champion: str | None
    challenger: str
    rows_from: str
    numbers: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "champion": self.champion,
            "challenger": self.challenger,
            "rows_from": self.rows_from,
            "numbers": self.numbers,
            "reasons": self.reasons,
        }


def recent_labelled(engine: Engine, limit: int, since: Any = None) -> pd.DataFrame:
    """The newest `limit` labelled rows of traffic (after `since`), newest first: inputs,
    sensitive fields, latest label."""
    p, latest = predictions_table, latest_labels_query()
    query = (
        select(*(p.c[name] for name in FEATURES), latest.c.label)
        .join(latest, latest.c.prediction_id == p.c.prediction_id)
        .order_by(p.c.ts.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(p.c.ts >= since)
    with engine.connect() as connection:
        frame = pd.DataFrame(connection.execute(query).all(), columns=[*FEATURES, TARGET])
    for name in FEATURES:
        if COLUMN_BY_NAME[name].kind == "numeric":
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    return frame


def keep_holdout(registry: Registry, version: str) -> None:
    """The first champion's validation rows become the registry's fixed holdout."""
    holdout = registry.store / HOLDOUT_FILE
    rows = registry.folder(version) / VALIDATION_ROWS_FILE
    if not holdout.is_file() and rows.is_file():
        write_bytes_atomic(holdout, rows.read_bytes())  # never a half-written holdout


def _rows(registry: Registry, engine: Engine, min_rows: int) -> tuple[pd.DataFrame, str]:
    traffic = recent_labelled(engine, max(min_rows, GATE_ROWS))
    if len(traffic) >= min_rows and traffic[TARGET].nunique() == 2:
        return traffic, f"recent labelled traffic ({len(traffic):,} rows)"
    holdout = registry.store / HOLDOUT_FILE
    dataset = load_dataset(holdout)
    frame = dataset.features.copy()
    frame[TARGET] = dataset.target.to_numpy()
    reason = f"only {len(traffic)} labelled rows of traffic (< {min_rows})"
    return frame, f"the registry's holdout ({len(frame):,} rows; {reason})"


def _probabilities(folder: Path, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    bundle = load_bundle(folder)  # every file checked against its hash
    matrix = bundle.pipeline.transform(frame[list(MODEL_INPUTS)])
    return bundle.model.predict_proba(matrix)[:, 1], bundle.metrics


def run_gate(
    registry: Registry,
    challenger: str,
    *,
    engine: Engine,
    margin: float,
    min_rows: int,
    max_widening: float,
) -> GateResult:
    champion = registry.alias(CHAMPION)
    if champion is None or champion == challenger:
        return GateResult(True, champion, challenger, "no champion to compare with")
    frame, rows_from = _rows(registry, engine, min_rows)
    y = frame[TARGET].to_numpy().astype(int)
    new, metrics = _probabilities(registry.folder(challenger), frame)
    old, _ = _probabilities(registry.folder(champion), frame)
    paired = paired_auc_difference(y, new, old, seed=0)
    gaps_new, gaps_old = headline_gaps(y, new, frame), headline_gaps(y, old, frame)
    widening = {k: round(gaps_new[k] - gaps_old[k], 4) for k in gaps_new}
    result = GateResult(True, champion, challenger, rows_from)
    result.numbers = {
        "rows": len(frame),
        "roc_auc_challenger": round(paired["first"], 4),
        "roc_auc_champion": round(paired["second"], 4),
        "roc_auc_difference": round(paired["difference"], 4),
        "difference_ci95": [round(v, 4) for v in paired["ci95"]],
        "margin": margin,
        "acceptance_passed": bool(metrics["acceptance"]["passed"]),
        "baseline_verdict": metrics["baseline"].get("comparison", {}).get("verdict"),
        "gap_widening": widening,
        "max_widening": max_widening,
    }
    if paired["difference"] < -margin:
        result.reasons.append(
            f"ROC-AUC {paired['difference']:+.4f} against the champion, worse than -{margin}"
        )
    if not metrics["acceptance"]["passed"]:
        result.reasons.append("its own acceptance failed (validation ROC-AUC under the bar)")
    if result.numbers["baseline_verdict"] == "baseline better":
        result.reasons.append("the logistic baseline beat it on its own validation split")
    for name, value in widening.items():
        if value > max_widening:
            result.reasons.append(f"the {name.replace('_', ' ')} gap widens by {value:.3f}")
    result.passed = not result.reasons
    return result
