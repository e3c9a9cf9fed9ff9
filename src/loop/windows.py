"""Monitoring windows, read from the hourly statistics (src/loop/statistics.py): the points the
agent judges, and the drift of the latest window against the training reference.

Nothing here reads rows of the log: points come from `hourly_ops` and `hourly_quality`, and a
window's drift is the sum of its hours' bin counts, so the cost follows the number of hours and
bins, not the number of rows.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from src.loop.columns import read_layout
from src.loop.statistics import as_utc, hour_of, hour_start, ts_bound
from src.loop.tables import (
    hourly_bins_table,
    hourly_ops_table,
    hourly_quality_table,
    log_drops_table,
)
from src.monitoring.drift import DriftReport, FeatureReference, compare_counts


def _quality_point(q: Any) -> dict[str, Any]:
    return {
        "roc_auc": round(q.roc_auc, 4),
        "pr_auc": round(q.pr_auc, 4),
        "acc": round(q.correct / q.labelled, 4),
        "labelled": q.labelled,
        "model_version": q.model_version,
    }


def _served_until(q: Any) -> tuple[datetime, int]:
    """When a version last served in its hour (hours computed before this was kept: by rows)."""
    last = as_utc(q.last_served) if q.last_served is not None else datetime.min
    return (last.replace(tzinfo=UTC) if last.tzinfo is None else last, q.rows)


def hourly_points(engine: Engine, *, min_labelled: int) -> list[dict[str, Any]]:
    """One point per complete hour with traffic, in the metrics_history.jsonl shape plus the
    model version. Quality (ROC-AUC, PR-AUC, accuracy) only for hours that are final (their
    labels had time to arrive) and hold at least `min_labelled` labelled rows of both classes,
    one point per model version; an hour without such figures still gives its operations
    (p95 latency, error rate) with null quality, so operational alerts never wait for labels."""
    with engine.connect() as connection:
        ops = {r.hour: r for r in connection.execute(select(hourly_ops_table))}
        quality: dict[int, list[Any]] = defaultdict(list)
        for q in connection.execute(select(hourly_quality_table)):
            quality[q.hour].append(q)
    points = []
    for hour in sorted(set(ops) | set(quality)):
        o = ops.get(hour)
        base = {
            "ts": hour_start(hour).isoformat(),
            "latency_p95_ms": None
            if o is None or o.latency_p95_ms is None
            else round(o.latency_p95_ms, 2),
            "error_rate": None if o is None or not o.requests else round(o.errors / o.requests, 4),
            "requests": 0 if o is None else o.requests,
        }
        judged = [
            q
            for q in quality[hour]
            if q.final and q.labelled >= min_labelled and q.roc_auc is not None
        ]
        if judged:
            # The version serving at the end of the hour comes last: the agent judges it.
            points += [{**base, **_quality_point(q)} for q in sorted(judged, key=_served_until)]
            continue
        served = max(quality[hour], key=_served_until, default=None)
        points.append(
            {
                **base,
                "roc_auc": None,
                "pr_auc": None,
                "acc": None,
                "labelled": sum(q.labelled for q in quality[hour]),
                "model_version": None if served is None else served.model_version,
            }
        )
    return points


def window_counts(
    engine: Engine, references: dict[str, FeatureReference], *, hours: int
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each feature's counts in its reference bins, summed over the last `hours` complete hours
    that had traffic (every model version: drift is about the inputs, not the model)."""
    b = hourly_bins_table
    with engine.connect() as connection:
        layout = read_layout(connection)
        last = connection.execute(select(func.max(b.c.hour))).scalar()
        if last is None or layout is None:
            return {}, {"hours": hours, "rows": 0}
        first = last - hours + 1
        query = (
            select(b.c.feature, b.c.bin, func.sum(b.c.count))
            .where(b.c.hour >= first, b.c.hour <= last)
            .group_by(b.c.feature, b.c.bin)
        )
        rows = connection.execute(query).all()
    counts = {name: np.zeros(ref.slots, dtype=np.int64) for name, ref in references.items()}
    # The bins are stored under each feature's SQL name (src/loop/columns.py).
    named = {layout.column_of(n): n for n in references if n in layout.features}
    for feature, slot, count in rows:
        name = named.get(feature)
        if name is not None and 0 <= slot < len(counts[name]):
            counts[name][slot] += int(count)
    total = int(next(iter(counts.values())).sum()) if counts else 0
    window = {
        "hours": hours,
        "rows": total,
        "first_hour": hour_start(first).isoformat(),
        "last_hour": hour_start(last).isoformat(),
    }
    return counts, window


def drift_report(
    engine: Engine, references: dict[str, FeatureReference], *, hours: int, threshold: float
) -> dict[str, Any]:
    """The drift of the last `hours` against the reference, from stored counts only."""
    counts, window = window_counts(engine, references, hours=hours)
    if not window["rows"]:
        raise ValueError("no statistics yet: nothing to compare")
    unseen = unseen_categories(engine, references, window)
    details = {
        name: compare_counts(
            ref,
            counts[name],
            threshold=threshold,
            unseen=unseen.get(name, ([], 0))[0],
            unseen_rows=unseen.get(name, ([], 0))[1],
        )
        for name, ref in references.items()
    }
    report = DriftReport(threshold=threshold, details=details).to_dict()
    report["window"] = window
    return report


# --- coverage: the share of answered rows the log kept --------------------------------------------


def hourly_coverage(engine: Engine) -> dict[int, dict[str, Any]]:
    """Per hour that lost rows: rows logged (the statistics), rows dropped (log_drops, every
    reason), and the share of answered rows (logged + dropped) the log kept."""
    q, d = hourly_quality_table, log_drops_table
    with engine.connect() as connection:
        by_hour = select(d.c.hour, func.sum(d.c.rows)).group_by(d.c.hour)
        dropped = {hour: rows for hour, rows in connection.execute(by_hour)}
        logged_by_hour = (
            select(q.c.hour, func.sum(q.c.rows))
            .where(q.c.hour.in_(list(dropped)))
            .group_by(q.c.hour)
        )
        logged = {hour: rows for hour, rows in connection.execute(logged_by_hour)}
    return {
        hour: _coverage(int(logged.get(hour) or 0), int(lost)) for hour, lost in dropped.items()
    }


def window_coverage(engine: Engine, *, first_hour: int, last_hour: int) -> dict[str, Any]:
    """The same over the hours [first_hour, last_hour]."""
    q, d = hourly_quality_table, log_drops_table
    with engine.connect() as connection:
        logged = connection.execute(
            select(func.sum(q.c.rows)).where(q.c.hour >= first_hour, q.c.hour <= last_hour)
        ).scalar()
        dropped = connection.execute(
            select(func.sum(d.c.rows)).where(d.c.hour >= first_hour, d.c.hour <= last_hour)
        ).scalar()
    return _coverage(int(logged or 0), int(dropped or 0))


def _coverage(logged: int, dropped: int) -> dict[str, Any]:
    answered = logged + dropped
    share = logged / answered if answered else 1.0
    return {"rows_logged": logged, "rows_dropped": dropped, "share": round(share, 6)}


def add_coverage(
    engine: Engine, points: list[dict[str, Any]], report: dict[str, Any] | None
) -> None:
    """Say, in each hourly point and beside the drift window, which share of the answered rows
    the figures stand on: 1.0 where the log kept every row, less where it dropped some."""
    if report is None:
        return
    lost = hourly_coverage(engine)
    for point in points:
        hour = hour_of(datetime.fromisoformat(point["ts"]))
        point["log_coverage"] = lost[hour]["share"] if hour in lost else 1.0
    window = report.get("window", {})
    if "first_hour" in window:  # beside the window, not in it: readers type its values
        report["log_coverage"] = window_coverage(
            engine,
            first_hour=hour_of(datetime.fromisoformat(window["first_hour"])),
            last_hour=hour_of(datetime.fromisoformat(window["last_hour"])),
        )


def coverage_line(report: dict[str, Any]) -> str | None:
    """One line for the operator when the drift window stands on a partial log."""
    coverage = report.get("log_coverage", {})
    if not coverage.get("rows_dropped"):
        return None
    return (
        f"the log kept {coverage['share']:.1%} of the rows answered in the drift window "
        f"({coverage['rows_dropped']:,} dropped); figures built on it cover that share"
    )


UNSEEN_LISTED = 20


def unseen_categories(
    engine: Engine, references: dict[str, FeatureReference], window: dict[str, Any]
) -> dict[str, tuple[list[str], int]]:
    """Per categorical feature: the values of the window's rows its reference never had (the
    most frequent first), and how many rows held one. A value outside a column's domain that
    was served as missing (`unknown: missing`) is logged as sent: here it is named and counted."""
    from sqlalchemy import and_

    out: dict[str, tuple[list[str], int]] = {}
    with engine.connect() as connection:
        layout = read_layout(connection)
        if layout is None:
            return out
        table = layout.predictions()
        dialect = connection.dialect.name
        start = ts_bound(dialect, datetime.fromisoformat(window["first_hour"]))
        end = ts_bound(dialect, datetime.fromisoformat(window["last_hour"]) + timedelta(hours=1))
        for name, ref in references.items():
            if ref.kind != "categorical" or name not in layout.features:
                continue
            value = table.c[layout.column_of(name)]
            known = [*ref.categories, *ref.rare]
            found = connection.execute(
                select(value, func.count())
                .where(and_(table.c.ts >= start, table.c.ts < end, value.is_not(None)))
                .where(value.not_in(known) if known else value.is_not(None))
                .group_by(value)
                .order_by(func.count().desc(), value)
            ).all()
            if found:
                out[name] = ([str(v) for v, _ in found[:UNSEEN_LISTED]], sum(n for _, n in found))
    return out
