"""Batch decisions into the prediction log: scored rows recorded as /predict records them (a
request line per 10,000 rows, path "batch", so the service's own latency and error figures are
not mixed with it), their prediction ids handed back for the labels that come later."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from src.loop.columns import ensure_layout
from src.loop.handoff import Served, column_layout
from src.loop.ids import new_request_key, prediction_ids
from src.loop.inserts import BatchWriter, log_tables
from src.loop.metrics_files import CounterFile
from src.loop.tables import make_engine
from src.settings import Settings

ROWS_PER_REQUEST = 10_000  # a prediction id holds the row in five digits


def _values(column: Any, rows: np.ndarray, spec: Any, name: str) -> tuple[Any, ...]:
    """A table column's raw values for these rows, as a client would have sent them."""
    from src.dataset.table import request_value

    tokens = frozenset(spec.missing)
    described = spec.column(name)
    out = []
    for value in column.take(rows).to_pylist():
        blank = value is None or (isinstance(value, str) and value.strip() in tokens)
        out.append(None if blank else request_value(described, value))
    return tuple(out)


def log_scored(
    predictor: Any,
    table: Any,
    kept: np.ndarray,
    matrix: np.ndarray,
    probabilities: np.ndarray,
    settings: Settings | None = None,
) -> list[str]:
    """Write the scored rows (positions `kept` of `table`) to the log; their prediction ids."""
    import pyarrow as pa

    settings = settings or Settings()
    engine = make_engine(settings.prediction_log_url)
    try:
        tables = log_tables(ensure_layout(engine, predictor.spec))  # another dataset: refused
        writer = BatchWriter(
            engine,
            log_sensitive=settings.log_sensitive_fields,
            counters=CounterFile(None),
            tables=tables,
        )
        layout, spec = column_layout(predictor.encoder), predictor.spec
        present = [name for name in spec.features if name in table.column_names]
        ids: list[str] = []
        for start in range(0, len(kept), ROWS_PER_REQUEST):
            stop = min(start + ROWS_PER_REQUEST, len(kept))
            rows = pa.array(kept[start:stop])
            columns = {name: _values(table.column(name), rows, spec, name) for name in present}
            key = new_request_key()
            served = Served.of_columns(
                layout,
                matrix[start:stop],
                columns,
                probabilities[start:stop],
                predictor.version,
                predictor.threshold,
                key,
            )
            request = (f"batch-{key}", datetime.now(UTC), "batch", 200, 0.0, served)
            writer.write([request], stop_waiting=lambda: False)
            ids += prediction_ids(key, stop - start)
        writer.count_drops()
        return ids
    finally:
        engine.dispose()
