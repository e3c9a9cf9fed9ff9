"""Labels that arrive after the prediction: stored by (request id, row), idempotently."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.engine import Engine

from src.loop.tables import feedback_table, predictions_table


def record_feedback(
    engine: Engine, labels: Sequence[tuple[str, int, int]]
) -> tuple[int, list[tuple[str, int]]]:
    """Store (request_id, row, label) for predictions that exist; repeating it changes nothing.

    Returns how many were stored and the keys that match no logged prediction."""
    keys = list(dict.fromkeys((request_id, row) for request_id, row, _ in labels))
    known: set[tuple[str, int]] = set()
    with engine.connect() as connection:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            query = select(predictions_table.c.request_id, predictions_table.c.row_index).where(
                tuple_(predictions_table.c.request_id, predictions_table.c.row_index).in_(chunk)
            )
            known.update((r, i) for r, i in connection.execute(query))
    latest = {(r, i): label for r, i, label in labels}  # the last label given for a key wins
    now = datetime.now(UTC)
    values = [
        {"request_id": r, "row_index": i, "label": label, "received_at": now}
        for (r, i), label in latest.items()
        if (r, i) in known
    ]
    if values:
        with engine.begin() as connection:
            connection.execute(_upsert(engine), values)  # executemany: one compiled statement
    return len(values), [k for k in keys if k not in known]


def _upsert(engine: Engine) -> Any:
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - the two backends this project supports
        raise NotImplementedError(f"no upsert for {engine.dialect.name}")
    statement = insert(feedback_table)
    return statement.on_conflict_do_update(
        index_elements=["request_id", "row_index"],
        set_={"label": statement.excluded.label, "received_at": statement.excluded.received_at},
    )
