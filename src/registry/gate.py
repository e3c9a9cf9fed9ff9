"""The gate: a challenger becomes champion only if, on the same labelled rows, its ROC-AUC is no
worse than the champion's by more than a margin (with a paired bootstrap interval), its own
acceptance passed (and the baseline did not beat it), and no parity gap of the spec's fairness
attributes widens by more than a limit.

It judges only on rows the challenger never trained on: recent labelled traffic from after the
challenger's own training traffic ended (a time split), when there is enough; else the registry's
holdout, which every training run leaves out by row identity (src/training/holdout.py). A
challenger whose manifest does not show that holdout left out is not judged. The verdict names the
champion it compared with; the move that follows is refused if the champion changed meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from src.dataset.groups import groups_frame
from src.dataset.spec import DatasetSpec
from src.dataset.table import load_dataset
from src.loop.columns import log_layout
from src.loop.labels import latest_labels_query
from src.loop.tables import predictions_table
from src.model.artifacts import load_bundle
from src.registry.core import Registry
from src.training.evaluate import headline_gaps, paired_auc_difference

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


def recent_labelled(
    engine: Engine, spec: DatasetSpec, limit: int, since: Any = None
) -> pd.DataFrame:
    """The newest `limit` labelled rows of traffic (stamped at or after `since`), newest first:
    event time (UTC), the spec's features (those the log holds), the latest label (0/1, as the
    spec's label column)."""
    latest = latest_labels_query()
    layout = log_layout(engine)
    features, target = list(spec.features), spec.label.column
    logged = [name for name in features if layout is not None and name in layout.features]
    p = layout.predictions() if layout is not None else predictions_table
    query = (
        select(p.c.ts, *(p.c[layout.column_of(name)] for name in logged), latest.c.label)
        .join(latest, latest.c.prediction_id == p.c.prediction_id)
        .order_by(p.c.ts.desc())
        .limit(limit)
    )
    if since is not None:
        query = query.where(p.c.ts >= since)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(rows, columns=["ts", *logged, target])
    for name in features:
        if name not in frame:  # a column the log never had: every value missing
            frame[name] = np.nan
        elif spec.column(name).is_numeric:
            frame[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
        else:
            frame[name] = frame[name].astype(object).where(frame[name].notna(), np.nan)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)  # SQLite hands back naive UTC
    return frame[["ts", *features, target]]


def _holdout(registry: Registry, spec: DatasetSpec) -> pd.DataFrame:
    dataset = load_dataset(registry.holdout_path(), spec)  # checked against its recorded hash
    frame = dataset.features.copy()
    frame[spec.label.column] = dataset.target.to_numpy()
    return frame


def _rows(
    registry: Registry, spec: DatasetSpec, engine: Engine, min_rows: int, trained_until: Any
) -> tuple[pd.DataFrame, str, dict[str, Any]]:
    """The rows to judge on, what they are, and their time range (traffic only)."""
    limit = max(min_rows, GATE_ROWS)
    if trained_until is None:
        traffic = recent_labelled(engine, spec, limit)
    else:  # strictly after: a row stamped when training's traffic ended may have been in it
        until = pd.Timestamp(trained_until)
        traffic = recent_labelled(engine, spec, limit, since=until.to_pydatetime())
        traffic = traffic[traffic["ts"] > until]
    if len(traffic) >= min_rows and traffic[spec.label.column].nunique() == 2:
        span = {"from": str(traffic["ts"].min()), "to": str(traffic["ts"].max())}
        after = f", after its training traffic ended at {trained_until}" if trained_until else ""
        return traffic, f"recent labelled traffic ({len(traffic):,} rows{after})", span
    frame = _holdout(registry, spec)
    reason = f"only {len(traffic)} labelled rows of traffic it never trained on (< {min_rows})"
    return frame, f"the registry's holdout ({len(frame):,} rows; {reason})", {}


def holdout_problem(registry: Registry, manifest: dict[str, Any]) -> str | None:
    """Why the gate cannot judge this set on rows it never saw, or None."""
    holdout = registry.holdout()
    block = manifest.get("holdout") or {}
    if holdout is None:
        return "the registry has no holdout yet (train a set with this version of train)"
    if block.get("rule") != holdout["rule"]:
        return (
            "its manifest does not show the registry's holdout left out of its training "
            f"(rule {holdout['rule']!r}); retrain it with python -m src.train"
        )
    return None


def _probabilities(folder: Path, frame: pd.DataFrame) -> tuple[np.ndarray, dict[str, Any]]:
    bundle = load_bundle(folder)  # every file checked against its hash
    matrix = bundle.pipeline.transform(frame[list(bundle.spec.model_inputs)])
    return bundle.model.predict_proba(matrix)[:, 1], bundle.metrics


def run_gate(
    registry: Registry,
    challenger: str,
    *,
    champion: str | None,
    engine: Engine,
    margin: float,
    min_rows: int,
    max_widening: float,
) -> GateResult:
    """Judge `challenger` against `champion` (the champion the caller read and will expect to
    replace: the verdict is bound to it)."""
    if champion is None:
        return GateResult(True, champion, challenger, "no champion to compare with")
    manifest = registry.get(challenger).manifest
    problem = holdout_problem(registry, manifest)
    if problem:
        return GateResult(False, champion, challenger, "not judged", reasons=[problem])
    traffic = manifest.get("training_traffic") or {}
    spec = load_bundle(registry.folder(champion)).spec  # the registry's dataset
    frame, rows_from, span = _rows(registry, spec, engine, min_rows, traffic.get("to"))
    y = frame[spec.label.column].to_numpy().astype(int)
    new, metrics = _probabilities(registry.folder(challenger), frame)
    old, _ = _probabilities(registry.folder(champion), frame)
    paired = paired_auc_difference(y, new, old, seed=0)
    groups = groups_frame(spec, frame)
    gaps_new, gaps_old = headline_gaps(y, new, groups), headline_gaps(y, old, groups)
    widening = {k: round(gaps_new[k] - gaps_old[k], 4) for k in gaps_new}
    result = GateResult(True, champion, challenger, rows_from)
    result.numbers = {
        "rows": len(frame),
        "rows_span": span,
        "challenger_training_traffic": traffic or None,
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
    result.reasons = _reasons(result.numbers, paired["difference"], margin, max_widening)
    result.passed = not result.reasons
    return result


def _reasons(
    numbers: dict[str, Any], difference: float, margin: float, max_widening: float
) -> list[str]:
    reasons = []
    if difference < -margin:
        reasons.append(f"ROC-AUC {difference:+.4f} against the champion, worse than -{margin}")
    if not numbers["acceptance_passed"]:
        reasons.append("its own acceptance failed (validation ROC-AUC under the bar)")
    if numbers["baseline_verdict"] == "baseline better":
        reasons.append("the logistic baseline beat it on its own validation split")
    for name, value in numbers["gap_widening"].items():
        if value > max_widening:
            reasons.append(f"the {name.replace('_', ' ')} gap widens by {value:.3f}")
    return reasons
