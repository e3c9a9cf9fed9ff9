"""The log belongs to one dataset, and its feature columns come from that dataset's spec.

A new log takes the spec's columns when its first model is served (or registered); a model whose
spec adds columns adds them by a recorded change (`log_column_changes`), which `python -m
src.loop.migrate drop-columns ID` takes back; a model of another dataset (another name, label or
positive value) is refused with one sentence. Column names are the user's (spaces, unicode, SQL
keywords, quotes): they reach SQL only as mapped names, which are plain lowercase ASCII, at most
63 bytes, never a keyword and never one of the log's own columns, and quoted wherever they are
written. A name that is already all that is kept as it is (the census log's columns stay theirs).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, Float, MetaData, Table, Text, delete, insert, select, text
from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS as POSTGRESQL_RESERVED
from sqlalchemy.dialects.sqlite.base import SQLiteIdentifierPreparer
from sqlalchemy.engine import Connection, Engine

from src.dataset.spec import DatasetSpec
from src.errors import RefusedError
from src.loop.tables import (
    FIXED_PREDICTION_COLUMNS,
    log_column_changes_table,
    log_columns_table,
    log_dataset_table,
    migration_lock,
    prediction_columns,
    upgrade,
)

MAX_IDENTIFIER_BYTES = 63  # PostgreSQL's limit
_PLAIN = re.compile(r"^[a-z_][a-z0-9_]*$")
_RESERVED = frozenset(POSTGRESQL_RESERVED) | frozenset(SQLiteIdentifierPreparer.reserved_words)
# Kinds of logged value: a number (numeric, boolean), days (a date-time input, as days since
# 1970, what the model reads) or text.
NUMBER, DAYS, TEXT = "number", "days", "text"


def sql_name(name: str) -> str:
    """The column's name in SQL: the name itself when it is plain, short, not a keyword and not
    one of the log's own columns; else a readable ASCII stem and a hash of the whole name."""
    taken = set(FIXED_PREDICTION_COLUMNS)
    if (
        _PLAIN.match(name)
        and len(name.encode()) <= MAX_IDENTIFIER_BYTES
        and name not in _RESERVED
        and name not in taken
    ):
        return name
    stem = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:40] or "column"
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"f_{stem}_{digest}"


def value_kind(spec: DatasetSpec, name: str) -> str:
    column = spec.column(name)
    if column.kind == "datetime":
        return DAYS
    return NUMBER if column.is_numeric else TEXT


@dataclass(frozen=True)
class LogLayout:
    """The log's dataset and its feature columns: the spec's names, their SQL names, their
    kinds, in the order they were added."""

    dataset: str
    label: str
    positive: str
    features: tuple[str, ...]
    columns: tuple[str, ...]  # SQL names, one per feature
    kinds: tuple[str, ...]
    sensitive: frozenset[str] = frozenset()

    def column_of(self, name: str) -> str:
        return self.columns[self.features.index(name)]

    def predictions(self) -> Table:
        """The predictions table with this log's feature columns (SQLAlchemy Core: every name
        quoted by the dialect)."""
        metadata = MetaData()
        fixed = prediction_columns()
        features = [
            Column(sql, Text if kind == TEXT else Float, nullable=True)
            for sql, kind in zip(self.columns, self.kinds, strict=True)
        ]
        return Table("predictions", metadata, *fixed, *features)


def read_layout(connection: Connection) -> LogLayout | None:
    """The layout recorded in the log, or None before its first dataset."""
    dataset = connection.execute(select(log_dataset_table)).first()
    if dataset is None:
        return None
    rows = connection.execute(select(log_columns_table).order_by(log_columns_table.c.position))
    rows = list(rows)
    return LogLayout(
        dataset=dataset.name,
        label=dataset.label,
        positive=dataset.positive,
        features=tuple(r.name for r in rows),
        columns=tuple(r.sql_name for r in rows),
        kinds=tuple(r.kind for r in rows),
        sensitive=frozenset(r.name for r in rows if r.sensitive),
    )


def log_layout(engine: Engine) -> LogLayout | None:
    with engine.connect() as connection:
        return read_layout(connection)


def _positive(spec: DatasetSpec) -> str:
    return str(spec.label.positives[0])


def other_dataset(layout: LogLayout, spec: DatasetSpec, where: str) -> str | None:
    """The sentence that refuses a model of another dataset, or None when it is this log's."""
    theirs = (layout.dataset, layout.label, layout.positive)
    ours = (spec.name, spec.label.column, _positive(spec))
    if theirs == ours:
        return None
    return (
        f"this log ({where}) holds the dataset '{layout.dataset}' (label {layout.label} = "
        f"{layout.positive}), and the model is for '{spec.name}' (label {spec.label.column} = "
        f"{_positive(spec)}): point DATABASE_URL (or PREDICTION_LOG_DIR) at another log for it"
    )


def ensure_layout(engine: Engine, spec: DatasetSpec) -> LogLayout:
    """The log, made ready for a model of `spec`: the schema upgraded, the dataset claimed (a
    new log) or checked (RefusedError for another dataset), the spec's new columns added by a
    recorded change. Safe for several processes at once: they take turns."""
    upgrade(engine)
    where = engine.url.render_as_string(hide_password=True)
    current = log_layout(engine)
    if current is not None:
        if problem := other_dataset(current, spec, where):
            raise RefusedError(problem)
        if set(spec.features) <= set(current.features):
            return current  # nothing to change: no lock taken
    with migration_lock(engine) as connection:
        layout = read_layout(connection)
        if layout is None:
            _claim(connection, spec)
        elif problem := other_dataset(layout, spec, where):
            raise RefusedError(problem)
        _add_columns(connection, spec, read_layout(connection))
        connection.commit()
        return read_layout(connection)


def _claim(connection: Connection, spec: DatasetSpec) -> None:
    connection.execute(
        insert(log_dataset_table).values(
            id=1,
            name=spec.name,
            label=spec.label.column,
            positive=_positive(spec),
            spec_sha256=spec.digest,
            claimed_at=datetime.now(UTC),
        )
    )


def _quoted(connection: Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def _add_columns(connection: Connection, spec: DatasetSpec, layout: LogLayout | None) -> None:
    """The spec's features the log lacks, added as columns, recorded as one change."""
    known = set(layout.features) if layout else set()
    new = [name for name in spec.features if name not in known]
    if not new:
        return
    taken = set(layout.columns) if layout else set()
    existing = _existing_columns(connection)
    added = []
    for position, name in enumerate(new, start=len(known)):
        column = sql_name(name)
        if column in taken:  # a hash collision: as good as impossible, refused rather than mixed
            raise RefusedError(f"column '{name}' maps to '{column}', which the log already uses")
        kind = value_kind(spec, name)
        if column not in existing:  # a census log upgraded in place already has its columns
            sql_type = "TEXT" if kind == TEXT else "DOUBLE PRECISION"
            connection.execute(
                text(f"ALTER TABLE predictions ADD COLUMN {_quoted(connection, column)} {sql_type}")
            )
        connection.execute(
            insert(log_columns_table).values(
                name=name,
                sql_name=column,
                kind=kind,
                sensitive=spec.column(name).sensitive,
                position=position,
            )
        )
        added.append({"name": name, "sql_name": column, "kind": kind})
    connection.execute(
        insert(log_column_changes_table).values(
            ts=datetime.now(UTC),
            action="add",
            spec_sha256=spec.digest,
            columns=json.dumps(added),
        )
    )


def _existing_columns(connection: Connection) -> set[str]:
    from sqlalchemy import inspect

    return {c["name"] for c in inspect(connection).get_columns("predictions")}


def column_changes(engine: Engine) -> list[dict[str, Any]]:
    """Every recorded change of the log's columns, oldest first."""
    with engine.connect() as connection:
        rows = connection.execute(
            select(log_column_changes_table).order_by(log_column_changes_table.c.id)
        )
        return [
            {
                "id": r.id,
                "ts": r.ts,
                "action": r.action,
                "spec_sha256": r.spec_sha256,
                "columns": json.loads(r.columns),
            }
            for r in rows
        ]


def drop_change(engine: Engine, change_id: int) -> list[str]:
    """Take back a change that added columns: drop them (their values go), record it. The
    columns of the log's first change make the log what it is: those are never dropped."""
    with migration_lock(engine) as connection:
        table = log_column_changes_table
        change = connection.execute(select(table).where(table.c.id == change_id)).first()
        if change is None or change.action != "add":
            raise RefusedError(f"no change {change_id} that added columns")
        first = connection.execute(select(table.c.id).order_by(table.c.id).limit(1)).scalar()
        if change_id == first:
            raise RefusedError(f"change {change_id} made the log: its columns are the dataset's")
        columns = json.loads(change.columns)
        for column in columns:
            quoted = _quoted(connection, column["sql_name"])
            connection.execute(text(f"ALTER TABLE predictions DROP COLUMN {quoted}"))
            connection.execute(
                delete(log_columns_table).where(log_columns_table.c.name == column["name"])
            )
        connection.execute(
            insert(table).values(
                ts=datetime.now(UTC),
                action=f"drop {change_id}",
                spec_sha256=change.spec_sha256,
                columns=change.columns,
            )
        )
        connection.commit()
        return [c["name"] for c in columns]
