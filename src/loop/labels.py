"""Labels that arrive after (or before) their prediction, by prediction id.

Stored append-only and joined when read: a label can reach any worker, before its prediction is
written, and is still counted once the prediction lands. Sending the same label again changes
nothing; a different label is kept as a correction with its time, and readers take the latest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.engine import Connection, Engine

from src.loop.ids import why_never_issued
from src.loop.tables import labels_table, predictions_table

CHUNK = 500  # ids per IN (...) list


@dataclass
class LabelOutcome:
    stored: int = 0
    repeated: int = 0
    corrections: int = 0
    matched: int = 0
    pending: list[str] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)


def _chunks(items: list[str]) -> Any:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _latest_labels(connection: Connection, ids: list[str]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for chunk in _chunks(ids):
        query = (
            select(labels_table.c.prediction_id, labels_table.c.label)
            .where(labels_table.c.prediction_id.in_(chunk))
            .order_by(labels_table.c.id)
        )
        latest.update(tuple(row) for row in connection.execute(query))  # later rows win
    return latest


def _logged(connection: Connection, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(ids):
        query = select(predictions_table.c.prediction_id).where(
            predictions_table.c.prediction_id.in_(chunk)
        )
        found.update(connection.execute(query).scalars())
    return found


def record_labels(
    engine: Engine, labels: Sequence[tuple[str, int]], *, now: datetime
) -> LabelOutcome:
    """Store (prediction_id, label) pairs; say which matched a logged prediction, which wait for
    theirs, and which can never match."""
    outcome = LabelOutcome()
    wanted: dict[str, int] = {}
    for prediction_id, label in labels:  # the last label given for an id in one call wins
        reason = why_never_issued(prediction_id, now)
        if reason is None:
            wanted[prediction_id] = label
        else:
            outcome.invalid.append({"prediction_id": prediction_id, "reason": reason})
    ids = list(wanted)
    with engine.begin() as connection:
        latest = _latest_labels(connection, ids)
        rows = []
        for prediction_id, label in wanted.items():
            if latest.get(prediction_id) == label:
                outcome.repeated += 1
                continue
            outcome.corrections += prediction_id in latest
            rows.append({"prediction_id": prediction_id, "label": label, "received_at": now})
        if rows:
            connection.execute(labels_table.insert(), rows)
        outcome.stored = len(rows)
        logged = _logged(connection, ids)
    outcome.matched = len(logged)
    outcome.pending = [i for i in ids if i not in logged]
    return outcome


def purge_unmatched(engine: Engine, *, now: datetime, keep: timedelta) -> int:
    """Drop labels whose prediction never arrived within `keep`: the promise /feedback makes."""
    cutoff = now - keep
    logged = select(predictions_table.c.prediction_id).where(
        predictions_table.c.prediction_id == labels_table.c.prediction_id
    )
    with engine.begin() as connection:
        result = connection.execute(
            delete(labels_table).where(labels_table.c.received_at < cutoff, ~logged.exists())
        )
    return result.rowcount or 0


def latest_labels_query() -> Any:
    """(prediction_id, label) of the latest label per prediction: what windows read."""
    newest = (
        select(func.max(labels_table.c.id).label("id"))
        .group_by(labels_table.c.prediction_id)
        .subquery()
    )
    return (
        select(labels_table.c.prediction_id, labels_table.c.label)
        .join(newest, newest.c.id == labels_table.c.id)
        .subquery()
    )
