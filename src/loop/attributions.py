"""Attribution drift: what the served model leans on now, against what it leaned on in training.

The monitoring job takes a bounded sample of the window's logged rows (ATTRIBUTION_SAMPLE_ROWS,
2,000 by default): SAMPLE_POINTS instants spread evenly over the window, and the rows logged at
or after each (after the rows already taken), read through the `ts` index, so its cost does not
grow with the log. It scores
their exact contributions (src/model/reasons.py) and compares each input's share of the mean
|contribution| with the training summary (shap_summary.csv). An input whose share moved by more
than ATTRIBUTION_DRIFT_SHARE is named in the drift report, and the plan shows it with its numbers.
"""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from src.dataset.spec import ColumnSpec, DatasetSpec
from src.loop.columns import read_layout
from src.loop.statistics import as_utc, ts_bound

SAMPLE_POINTS = 40


def _request_value(column: ColumnSpec, value: Any) -> Any:
    """A logged value as a client sent it: what the encoder reads."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if column.kind == "boolean":
        return bool(value)
    if column.kind == "datetime":
        from src.dataset.table import iso_from_days

        return iso_from_days(float(value))
    if column.kind == "categorical":
        return int(value) if column.integer_codes else str(value)
    return value


def window_sample(
    engine: Engine, spec: DatasetSpec, window: dict[str, Any], rows: int
) -> list[dict[str, Any]]:
    """Up to `rows` logged rows of the window, spread over it, as request rows (model inputs):
    from each of SAMPLE_POINTS instants, the next rows logged at or after it (and after the
    rows already taken), each a range of the ts index."""
    start = datetime.fromisoformat(window["first_hour"])
    end = datetime.fromisoformat(window["last_hour"]) + timedelta(hours=1)
    out: list[dict[str, Any]] = []
    with engine.connect() as connection:
        layout = read_layout(connection)
        if layout is None:
            return out
        names = [n for n in spec.model_inputs if n in layout.features]
        table = layout.predictions()
        columns = [table.c[layout.column_of(n)] for n in names]
        dialect = connection.dialect.name
        upper = ts_bound(dialect, end)
        after = None  # the last instant taken: later queries start strictly after it
        for i in range(SAMPLE_POINTS):
            wanted = math.ceil((rows - len(out)) / (SAMPLE_POINTS - i))
            at = start + (end - start) * i / SAMPLE_POINTS
            bound = table.c.ts >= ts_bound(dialect, at)
            if after is not None and after >= at:
                bound = table.c.ts > ts_bound(dialect, after)
            query = (
                select(table.c.ts, *columns)
                .where(bound, table.c.ts < upper)
                .order_by(table.c.ts)
                .limit(wanted)
            )
            for record in connection.execute(query):
                after = as_utc(record[0])
                out.append(
                    {
                        n: _request_value(spec.column(n), v)
                        for n, v in zip(names, record[1:], strict=True)
                    }
                )
    return out


def attribution_drift(
    explainer: Any,
    encoder: Any,
    rows: list[dict[str, Any]],
    training: dict[str, float],
    threshold: float,
) -> dict[str, Any] | None:
    """Each input's share of the mean |contribution| on `rows` against training's; the inputs
    whose share moved by more than `threshold`. None when the rows do not encode (a window of
    another model's rows)."""
    from src.model.reasons import mean_abs, shares

    started = time.perf_counter()
    matrix = encoder.encode(rows) if rows else None
    if matrix is None:
        return None
    window = shares(mean_abs(explainer.contributions(matrix), explainer.names))
    before = shares({n: training.get(n, 0.0) for n in explainer.names})
    columns = {
        n: {
            "training_share": round(before[n], 4),
            "window_share": round(window[n], 4),
            "change": round(window[n] - before[n], 4),
        }
        for n in explainer.names
    }
    drifted = sorted(
        (n for n, c in columns.items() if abs(c["change"]) > threshold),
        key=lambda n: (-abs(columns[n]["change"]), n),
    )
    return {
        "threshold": threshold,
        "rows": len(rows),
        "drifted": drifted,
        "columns": columns,
        "seconds": round(time.perf_counter() - started, 3),
    }


def training_summary(path: Any) -> dict[str, float]:
    """shap_summary.csv as {column: mean |contribution|}."""
    import csv

    with open(path, newline="") as handle:
        return {r["column"]: float(r["mean_abs_contribution"]) for r in csv.DictReader(handle)}
