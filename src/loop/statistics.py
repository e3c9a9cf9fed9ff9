"""Hourly statistics computed where the log lives, in SQL, kept up to date incrementally.

Per hour and model version: rows, labelled rows by class, rows the served class got right, ROC-AUC
and average precision (PR-AUC) with ties treated as scikit-learn treats them; per hour: requests,
errors and p95 latency; per hour, version and feature: counts in the drift reference's bins, so a
window's PSI is a sum of stored counts. Each refresh computes only the hours that are not final
yet and the hours whose labels changed; an hour becomes final once its labels had time to arrive.

The statements are SQLAlchemy Core and run on SQLite and PostgreSQL; they compile for BigQuery
too (sqlalchemy-bigquery), where they would run as scheduled queries (design_gcp.md).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

from src.loop.columns import read_layout
from src.loop.tables import (
    hourly_bins_table,
    hourly_ops_table,
    hourly_quality_table,
    labels_table,
    predictions_table,
    requests_table,
    stats_state_table,
)
from src.monitoring.drift import FeatureReference

P95 = 0.95
CHUNK_HOURS = 168  # hours computed per statement: the database aggregates, memory stays flat


# --- dialect-specific pieces -----------------------------------------------------------------


class epoch_hour(FunctionElement):  # noqa: N801 - reads as SQL
    """Whole hours since 1970-01-01 UTC of a timestamp: the stats' hour, the same everywhere."""

    type = BigInteger()
    inherit_cache = True


@compiles(epoch_hour)
def _epoch_hour_postgresql(element: Any, compiler: Any, **kw: Any) -> str:
    # date_part gives a double; EXTRACT gives a numeric, several times slower to divide.
    ts = compiler.process(element.clauses, **kw)
    return f"CAST(FLOOR(date_part('epoch', {ts}) / 3600) AS BIGINT)"


@compiles(epoch_hour, "sqlite")
def _epoch_hour_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    # strftime('%s') reads the stored text, offset included, as UTC seconds.
    return f"(CAST(strftime('%s', {compiler.process(element.clauses, **kw)}) AS INTEGER) / 3600)"


@compiles(epoch_hour, "bigquery")
def _epoch_hour_bigquery(element: Any, compiler: Any, **kw: Any) -> str:
    return f"DIV(UNIX_SECONDS({compiler.process(element.clauses, **kw)}), 3600)"


class floor_int(FunctionElement):  # noqa: N801 - reads as SQL
    """floor() of a non-negative number, as an integer."""

    type = BigInteger()
    inherit_cache = True


@compiles(floor_int)
def _floor_default(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS BIGINT)"


@compiles(floor_int, "sqlite")
def _floor_sqlite(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"  # truncates: x >= 0


@compiles(floor_int, "bigquery")
def _floor_bigquery(element: Any, compiler: Any, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INT64)"


def hour_start(hour: int) -> datetime:
    return datetime.fromtimestamp(hour * 3600, UTC)


def hour_of(moment: datetime) -> int:
    return math.floor(moment.timestamp() / 3600)


def ts_bound(dialect: str, moment: datetime) -> Any:
    """A whole-second timestamp to compare the log's `ts` with, using its index. SQLite keeps
    `ts` as UTC text ('2026-03-01 05:00:00.000000+00:00', or without offset or fraction), which
    sorts as time against a bound with neither."""
    if dialect == "sqlite":
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return moment


# --- the statements ----------------------------------------------------------------------------


def _in_hours(ts: Any, start: Any, end: Any) -> ColumnElement[bool]:
    return and_(ts >= start, ts < end)


def labelled_rows(start: Any, end: Any) -> Any:
    """(hour, model_version, score, label, served class) of every labelled row in the range;
    the latest label per prediction."""
    p, lab = predictions_table, labels_table
    ranked = (
        select(
            epoch_hour(p.c.ts).label("hour"),
            p.c.model_version,
            p.c.probability.label("score"),
            p.c.predicted_class.label("served"),
            lab.c.label,
            func.row_number()
            .over(partition_by=lab.c.prediction_id, order_by=lab.c.id.desc())
            .label("newest"),
        )
        .join(lab, lab.c.prediction_id == p.c.prediction_id)
        .where(_in_hours(p.c.ts, start, end))
        .subquery("ranked")
    )
    return select(ranked).where(ranked.c.newest == 1).subquery("labelled")


def quality_select(start: Any, end: Any) -> Any:
    """Per hour and version: labelled, positives, correct, and the sums ROC-AUC and average
    precision are made of. Rows are grouped by distinct score, so tied scores share their rank
    (ROC-AUC: a tie counts a half) and one precision step (average precision), as in
    scikit-learn's roc_auc_score and average_precision_score."""
    rows = labelled_rows(start, end)
    key = (rows.c.hour, rows.c.model_version)
    by_score = (
        select(
            *key,
            rows.c.score,
            func.sum(rows.c.label).label("pos"),
            func.sum(1 - rows.c.label).label("neg"),
            func.sum(case((rows.c.served == rows.c.label, 1), else_=0)).label("correct"),
        )
        .group_by(*key, rows.c.score)
        .subquery("by_score")
    )
    part = (by_score.c.hour, by_score.c.model_version)
    window = {"partition_by": part}
    cumulative = select(
        *part,
        by_score.c.pos,
        by_score.c.neg,
        by_score.c.correct,
        (
            func.sum(by_score.c.neg).over(**window, order_by=by_score.c.score.asc())
            - by_score.c.neg
        ).label("neg_below"),
        func.sum(by_score.c.pos).over(**window, order_by=by_score.c.score.desc()).label("tp"),
        func.sum(by_score.c.neg).over(**window, order_by=by_score.c.score.desc()).label("fp"),
    ).subquery("cumulative")
    c = cumulative.c
    return select(
        c.hour,
        c.model_version,
        func.sum(c.pos + c.neg).label("labelled"),
        func.sum(c.pos).label("positives"),
        func.sum(c.correct).label("correct"),
        func.sum(c.pos * (c.neg_below + 0.5 * c.neg)).label("auc_sum"),
        func.sum(case((c.pos > 0, c.pos * cast(c.tp, Float) / (c.tp + c.fp)), else_=0.0)).label(
            "ap_sum"
        ),
    ).group_by(c.hour, c.model_version)


def rows_select(start: Any, end: Any) -> Any:
    p = predictions_table
    hour = epoch_hour(p.c.ts).label("hour")  # grouped by its label: BigQuery wants the alias
    return (
        select(
            hour,
            p.c.model_version,
            func.count().label("rows"),
            func.max(p.c.ts).label("last_served"),
        )
        .where(_in_hours(p.c.ts, start, end))
        .group_by(hour, p.c.model_version)
    )


def ops_select(start: Any, end: Any) -> Any:
    """Per hour: /predict requests, errors, and the two latencies p95 lies between (numpy's
    linear interpolation: index 0.95 x (n - 1) of the sorted latencies)."""
    r = requests_table
    ranked = (
        select(
            epoch_hour(r.c.ts).label("hour"),
            r.c.status,
            r.c.latency_ms,
            (
                func.row_number().over(partition_by=epoch_hour(r.c.ts), order_by=r.c.latency_ms) - 1
            ).label("i"),
            func.count().over(partition_by=epoch_hour(r.c.ts)).label("n"),
        )
        .where(_in_hours(r.c.ts, start, end), r.c.path == "/predict")
        .subquery("ranked")
    )
    c = ranked.c
    low = floor_int(P95 * (c.n - 1))
    return select(
        c.hour,
        func.count().label("requests"),
        func.sum(case((c.status != 200, 1), else_=0)).label("errors"),
        func.max(c.n).label("n"),
        func.max(case((c.i == low, c.latency_ms))).label("low"),
        func.max(case((c.i == low + 1, c.latency_ms))).label("high"),
    ).group_by(c.hour)


def binned_columns(
    references: dict[str, FeatureReference], layout: Any
) -> dict[str, tuple[FeatureReference, Any]]:
    """Each reference feature the log has a column for: its bins and that column (by its SQL
    name: the name the hourly bins store). A feature the log lacks is not counted."""
    if layout is None:
        return {}
    table = layout.predictions()
    return {
        layout.column_of(name): (ref, table.c[layout.column_of(name)])
        for name, ref in references.items()
        if name in layout.features
    }


def bin_expression(reference: FeatureReference, value: Any) -> Any:
    """The slot of a value (a column of the log) in a feature's reference bins, as drift.py
    counts it."""
    missing = reference.slots - 1
    if reference.kind == "categorical":
        other = len(reference.categories)
        whens = [(value.is_(None), missing)]
        whens += [(value == literal(c), i) for i, c in enumerate(reference.categories)]
        return case(*whens, else_=other)
    whens = [(value.is_(None), missing)]
    for i, (edge, point) in enumerate(
        zip(reference.edges.tolist(), reference.points.tolist(), strict=True)
    ):
        whens.append((value < edge, 2 * i))
        whens.append((value == edge, 2 * i + int(point)))
    return case(*whens, else_=2 * len(reference.edges))


def bins_select(feature: str, binned: tuple[FeatureReference, Any], start: Any, end: Any) -> Any:
    reference, value = binned
    p = value.table  # the log's table with its feature columns: one FROM for the statement
    hour, slot = epoch_hour(p.c.ts).label("hour"), bin_expression(reference, value).label("bin")
    return (
        select(
            hour,
            p.c.model_version,
            literal(feature).label("feature"),
            slot,
            func.count().label("count"),
        )
        .where(_in_hours(p.c.ts, start, end))
        .group_by(hour, p.c.model_version, slot)
    )


def all_bins_select(binned: dict[str, tuple[FeatureReference, Any]], start: Any, end: Any) -> Any:
    """Every feature's bin counts in one pass over the rows: one grouping set per feature
    (PostgreSQL, BigQuery). A row of the result holds one feature's slot, the others null."""
    p = next(iter(binned.values()))[1].table  # one table object: one FROM
    hour = epoch_hour(p.c.ts).label("hour")
    slots = [
        bin_expression(ref, value).label(f"bin_{i}")
        for i, (ref, value) in enumerate(binned.values())
    ]
    return (
        select(hour, p.c.model_version, *slots, func.count().label("count"))
        .where(_in_hours(p.c.ts, start, end))
        .group_by(func.grouping_sets(*(tuple_(hour, p.c.model_version, slot) for slot in slots)))
    )


def unpivot_bins(all_bins: Any, features: list[str]) -> Any:
    """all_bins_select's rows (one feature's slot each, the others null) as (hour, version,
    feature, bin, count) rows, in the database. Read into Python instead, a week of a 10M-row
    log with 50 features was 84,000 rows of 53 fields: +115 MiB in the refresh process."""
    counted = all_bins.cte("all_bins")  # referenced once per feature: computed once
    return union_all(
        *(
            select(
                counted.c.hour,
                counted.c.model_version,
                literal(feature).label("feature"),
                counted.c[f"bin_{i}"].label("bin"),
                counted.c.count,
            ).where(counted.c[f"bin_{i}"].is_not(None))
            for i, feature in enumerate(features)
        )
    )


def bins_work_mem_mb(features: int) -> int:
    """PostgreSQL hashes a grouping set only while the planner's guess of every hashed set's
    groups fits in work_mem; it sorts the rows again for each set that does not fit. Its guess
    for a bin expression is fixed (200 values), so the need grows with the number of features,
    not rows: at 64 MB it sorted 20 of 50 sets (a week of 233,000 rows: 5.1 s; 2.7 s with all
    hashed, 32 MB used)."""
    return max(64, 5 * features)


# Where GROUPING SETS is there, one pass counts every feature's bins; SQLite counts each alone.
GROUPING_SETS = frozenset({"postgresql", "bigquery"})


def statements(
    binned: dict[str, tuple[FeatureReference, Any]],
    start: Any,
    end: Any,
    *,
    dialect: str = "postgresql",
) -> dict[str, Any]:
    """Every statement one range of hours needs, by name (what the BigQuery test compiles).
    `binned` (binned_columns) holds each counted feature's bins and column, by SQL name."""
    out = {
        "quality": quality_select(start, end),
        "rows": rows_select(start, end),
        "ops": ops_select(start, end),
    }
    if not binned:
        return out
    if dialect in GROUPING_SETS:
        out["bins"] = all_bins_select(binned, start, end)
    else:
        out.update({f"bins:{f}": bins_select(f, b, start, end) for f, b in binned.items()})
    return out


# --- refreshing the tables ----------------------------------------------------------------------


def reference_hash(references: dict[str, FeatureReference]) -> str:
    text = json.dumps({n: r.to_dict() for n, r in sorted(references.items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Refresh:
    hours_computed: int
    hours_late: int
    final_before_hour: int | None
    rebuilt: bool


def _p95(n: int, low: float | None, high: float | None) -> float | None:
    if not n or low is None:
        return None
    position = P95 * (n - 1)
    fraction = position - math.floor(position)
    return low if high is None or fraction == 0 else low + (high - low) * fraction


def compute_hours(
    connection: Connection,
    binned: dict[str, tuple[FeatureReference, Any]],
    first: int,
    end: int,
    *,
    final_before: int,
    now: datetime,
) -> None:
    """Recompute hours [first, end): delete what is stored for them, insert fresh figures."""
    dialect = connection.dialect.name
    start_b, end_b = ts_bound(dialect, hour_start(first)), ts_bound(dialect, hour_start(end))
    for table in (hourly_ops_table, hourly_quality_table, hourly_bins_table):
        connection.execute(delete(table).where(table.c.hour >= first, table.c.hour < end))
    found = statements(binned, start_b, end_b, dialect=dialect)
    ops = [
        {
            "hour": r.hour,
            "requests": r.requests,
            "errors": r.errors,
            "latency_p95_ms": _p95(r.n, r.low, r.high),
            "final": r.hour < final_before,
            "computed_at": now,
        }
        for r in connection.execute(found.pop("ops"))
    ]
    if ops:
        connection.execute(insert(hourly_ops_table), ops)
    rows = {(r.hour, r.model_version): r for r in connection.execute(found.pop("rows"))}
    quality = {(r.hour, r.model_version): r for r in connection.execute(found.pop("quality"))}
    records = [
        {
            **_quality_record(key, r.rows, quality.get(key), final_before, now),
            "last_served": as_utc(r.last_served),
        }
        for key, r in rows.items()
    ]
    if records:
        connection.execute(insert(hourly_quality_table), records)
    if "bins" in found:  # one pass, unpivoted where it ran: rows never travel to Python
        found["bins"] = unpivot_bins(found["bins"], list(binned))
        connection.exec_driver_sql(f"SET LOCAL work_mem = '{bins_work_mem_mb(len(binned))}MB'")
    for statement in found.values():  # the bins: one statement, or one per feature (SQLite)
        connection.execute(
            insert(hourly_bins_table).from_select(
                ["hour", "model_version", "feature", "bin", "count"], statement
            )
        )


def _quality_record(
    key: tuple[int, str], rows: int, q: Any, final_before: int, now: datetime
) -> dict[str, Any]:
    hour, version = key
    labelled = int(q.labelled) if q is not None else 0
    positives = int(q.positives) if q is not None else 0
    negatives = labelled - positives
    both = positives > 0 and negatives > 0
    return {
        "hour": hour,
        "model_version": version,
        "rows": rows,
        "labelled": labelled,
        "positives": positives,
        "correct": int(q.correct) if q is not None else 0,
        "roc_auc": float(q.auc_sum) / (positives * negatives) if both else None,
        "pr_auc": float(q.ap_sum) / positives if both else None,
        "final": hour < final_before,
        "computed_at": now,
    }


def _ranges(hours: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted hours as [first, end) runs."""
    run_start = previous = None
    for hour in sorted(set(hours)):
        if run_start is None:
            run_start = previous = hour
        elif hour == previous + 1:
            previous = hour
        else:
            yield run_start, previous + 1
            run_start = previous = hour
    if run_start is not None:
        yield run_start, previous + 1


def refresh(
    engine: Engine,
    references: dict[str, FeatureReference],
    *,
    now: datetime,
    label_delay: timedelta,
    rebuild: bool = False,
) -> Refresh:
    """Bring the statistics up to date, computing only what changed since the last refresh:
    the hours completed since (traffic arrives in time order), hours that received traffic out of
    order (a backfill with event times), and hours whose labels arrived or changed. The current
    hour is never computed. An hour is final once `label_delay` has passed since it ended; until
    then its quality is held back from the points (windows.py)."""
    current = hour_of(now)
    final_before = min(current, hour_of(now - label_delay))
    fingerprint = reference_hash(references)
    with engine.begin() as connection:
        horizon = _oldest_running_transaction(connection)  # first, before anything is read
        binned = binned_columns(references, read_layout(connection))
        state = connection.execute(select(stats_state_table)).first()
        rebuilt = rebuild or state is None or state.reference != fingerprint
        marks = {
            "request_watermark": connection.execute(select(func.max(requests_table.c.id))).scalar()
            or 0,
            "labels_seen_until": now,
            "xact_watermark": horizon,
        }
        if rebuilt:
            for table in (hourly_ops_table, hourly_quality_table, hourly_bins_table):
                connection.execute(delete(table))
            first = _first_hour(connection)
            hours = list(range(first, current)) if first is not None else []
            late = 0
        else:
            recent = range(min(state.computed_before_hour, current), current)
            changed = _changed_hours(connection, state, current)
            hours = sorted(set(recent) | set(changed))
            late = len(set(changed) - set(recent))
        for run_first, run_end in _ranges(hours):
            for chunk in range(run_first, run_end, CHUNK_HOURS):
                compute_hours(
                    connection,
                    binned,
                    chunk,
                    min(chunk + CHUNK_HOURS, run_end),
                    final_before=final_before,
                    now=now,
                )
        for table in (hourly_ops_table, hourly_quality_table):  # hours whose labels had time
            connection.execute(
                update(table)
                .where(table.c.hour < final_before, table.c.final.is_(False))
                .values(final=True)
            )
        _save_state(connection, state is not None, current, final_before, marks, fingerprint)
    return Refresh(len(hours), late, final_before, rebuilt)


# The oldest transaction of a client that has written (or is writing) in this database, this one
# included, as the 64-bit id txid_current() gives the log's rows (a 32-bit xid widened by the
# current epoch: running transactions are never 2^31 apart). Transactions in the cluster's other
# databases, and autovacuum's, never write the log's rows: counting them (txid_snapshot_xmin)
# made refreshes re-read hours for nothing, whenever an ANALYZE happened to be running. NULL
# when a session here is hidden from this role: then the cluster's.
OLDEST_IN_THIS_DATABASE = """
SELECT CASE WHEN coalesce(bool_and(a.usename IS NOT NULL) FILTER (WHERE a.pid IS NOT NULL), true)
            THEN least(min(c.t - ((c.t - a.backend_xid::text::bigint) & 4294967295)), max(c.t))
       END
FROM (SELECT txid_current() AS t) c
LEFT JOIN pg_stat_activity a
  ON a.datname = current_database() AND a.backend_type = 'client backend'
 AND a.pid <> pg_backend_pid() AND (a.backend_xid IS NOT NULL OR a.usename IS NULL)
"""


def _oldest_running_transaction(connection: Connection) -> int | None:
    """PostgreSQL: every transaction older than this one has ended (so its rows are visible);
    the next refresh reads again the rows of this one and later ones. Tunes the refresh too."""
    if connection.dialect.name != "postgresql":
        return None
    horizon = connection.exec_driver_sql(OLDEST_IN_THIS_DATABASE).scalar()
    if horizon is None:  # other sessions' transactions are hidden from this role: the cluster's
        horizon = connection.exec_driver_sql(
            "SELECT txid_snapshot_xmin(txid_current_snapshot())"
        ).scalar()
    _tune_postgresql(connection)
    return horizon


def _tune_postgresql(connection: Connection) -> None:
    """For this transaction only. Sorts of a week's labelled rows fit in memory; JIT compiling
    took 1.1 s of a 2 s statement and saved nothing. The bins' grouping sets hash within the
    default memory because the planner knows how many hours there are (migration 0008); it
    used to be let have 1000x work_mem instead, and took 1.3 GB for a week of a 10M-row log."""
    connection.exec_driver_sql("SET LOCAL work_mem = '64MB'")
    connection.exec_driver_sql("SET LOCAL jit = off")


def _first_hour(connection: Connection) -> int | None:
    """The log's first hour with traffic (both minima are read from the `ts` indexes)."""
    firsts = [
        connection.execute(select(func.min(table.c.ts))).scalar()
        for table in (predictions_table, requests_table)
    ]
    moments = [as_utc(f) for f in firsts if f is not None]
    return hour_of(min(moments)) if moments else None


def as_utc(value: Any) -> datetime:
    """A stored time as an aware UTC datetime (SQLite hands back text, with or without offset;
    the log writes UTC)."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# Labels are found by when they arrived; this much overlap between refreshes covers a label
# whose transaction was still open when the last refresh looked.
LABEL_OVERLAP = timedelta(minutes=10)


def _changed_hours(connection: Connection, state: Any, current: int) -> list[int]:
    """Hours (before the current one) that changed since the last refresh: a label arrived for
    one of their rows, or traffic was logged into them out of time order (a backfill), or a
    writer committed late. On PostgreSQL by the writing transaction: every row of a transaction
    that had not ended when the last refresh began is read again (ids and times do not follow
    commit order there). SQLite commits one writer at a time, so its ids do."""
    p, lab, r = predictions_table, labels_table, requests_table
    horizon = getattr(state, "xact_watermark", None)
    if connection.dialect.name == "postgresql" and horizon is not None:
        new_labels, new_requests = lab.c.xact >= horizon, r.c.xact >= horizon
    else:
        since = as_utc(state.labels_seen_until) - LABEL_OVERLAP
        new_labels, new_requests = lab.c.received_at >= since, r.c.id > state.request_watermark
    labelled = (
        select(epoch_hour(p.c.ts).label("hour"))
        .distinct()
        .join(lab, lab.c.prediction_id == p.c.prediction_id)
        .where(new_labels)
    )
    served = select(epoch_hour(r.c.ts).label("hour")).distinct().where(new_requests)
    hours = {h for query in (labelled, served) for (h,) in connection.execute(query)}
    return sorted(h for h in hours if h < current)


def _save_state(
    connection: Connection,
    exists: bool,
    computed_before: int,
    final_before: int,
    marks: dict[str, Any],
    fingerprint: str,
) -> None:
    values = {
        "computed_before_hour": computed_before,
        "final_before_hour": final_before,
        **marks,
        "reference": fingerprint,
    }
    if exists:
        connection.execute(
            update(stats_state_table).where(stats_state_table.c.id == 1).values(**values)
        )
    else:
        connection.execute(insert(stats_state_table).values(id=1, **values))
