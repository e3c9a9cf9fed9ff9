"""Rows into the database, fast and without silent loss: the bulk path of each database (SQLite's
executemany over columns in one transaction, PostgreSQL's binary COPY), a row-by-row retry when a
batch is refused, and backoff while the database is unreachable.

A shipment becomes one block of columns: each request's values are extended onto them whole
(a batch's numbers straight from its matrix, its categories by one numpy take), and rows exist
only as the tuples the database driver reads one at a time."""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from src.loop.handoff import TEXT_SEPARATOR, Served, epoch_hour
from src.loop.metrics_files import CounterFile

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

logger = logging.getLogger("service")
BACKOFF_START, BACKOFF_MAX = 0.1, 5.0
ROWS_WRITTEN = "prediction_log_written_rows"
ROWS_RETRIED = "prediction_log_retried_rows"
ROWS_DROPPED = "prediction_log_dropped_rows"
BATCHES_FAILED = "prediction_log_failed_batches"
DATABASE_ERRORS = "prediction_log_database_errors"
# A body this long becomes columns (C loops per column); shorter, row tuples (less per request).
ROWS_AS_COLUMNS_FROM = 8


@dataclass(frozen=True)
class Tables:
    """The two tables the writer fills, as plain data: the writer process gets them from the
    service (src.loop.tables and src.loop.columns declare them, with SQLAlchemy, which the
    writer does without). `features` are the dataset's names of the feature columns, in order;
    `kinds` says how each is stored: number, days (a date-time as days since 1970) or text."""

    prediction_columns: tuple[str, ...]
    request_columns: tuple[str, ...]
    prediction_types: tuple[str, ...]  # PostgreSQL's type of each column, for binary COPY
    request_types: tuple[str, ...]
    features: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    sensitive: tuple[str, ...] = ()


HEAD = ("prediction_id", "request_id", "row_index", "ts", "model_version")
TAIL = ("probability", "predicted_class")


def log_tables(layout: Any) -> Tables:
    """The tables for a log's layout (src/loop/columns.py): its feature columns between the
    prediction's own."""
    from src.loop.tables import REQUEST_COLUMNS

    feature_types = tuple("text" if kind == "text" else "float8" for kind in layout.kinds)
    return Tables(
        prediction_columns=(*HEAD, *layout.columns, *TAIL),
        request_columns=tuple(REQUEST_COLUMNS),
        prediction_types=(
            *("text", "text", "int4", "timestamptz", "text"),
            *feature_types,
            *("float8", "int2"),
        ),
        request_types=("text", "timestamptz", "text", "int2", "float8", "int4", "text"),
        features=layout.features,
        kinds=layout.kinds,
        sensitive=tuple(sorted(layout.sensitive)),
    )


def _is_outage(exc: BaseException) -> bool:
    """A database that cannot be reached (retry later), as opposed to rows it refuses."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "OperationalError" in names or "InterfaceError" in names:
        # SQLite reports a missing table or a bad statement as OperationalError too.
        message = str(exc).lower()
        return "no such table" not in message and "syntax error" not in message
    return False


def store_drops(engine: Any, dialect: str, drops: dict[tuple[int, str], int]) -> bool:
    """Add drop counts per (hour, reason) to log_drops, in one transaction; False (and the
    counts untouched, for the caller to keep) when the database cannot take them now."""
    marks = "?, ?, ?" if dialect == "sqlite" else "%s, %s, %s"
    statement = (
        f"INSERT INTO log_drops (hour, reason, rows) VALUES ({marks}) "  # noqa: S608
        "ON CONFLICT (hour, reason) DO UPDATE SET rows = log_drops.rows + excluded.rows"
    )
    connection = None
    try:
        connection = engine.raw_connection()
        cursor = connection.cursor()
        cursor.executemany(statement, [(h, r, n) for (h, r), n in drops.items()])
        connection.commit()
        return True
    except Exception as exc:  # a broken connection may fail its rollback too: never fatal
        logger.warning("prediction log: drop counts not stored yet (%s)", type(exc).__name__)
        return False
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()


class BatchWriter:
    """Turns queued requests into column blocks and inserts them, one transaction per batch."""

    def __init__(
        self,
        engine: Engine,
        *,
        log_sensitive: bool,
        counters: CounterFile,
        tables: Tables,
    ) -> None:
        self.engine = engine
        self.tables = tables
        self.features = tables.features
        self._all_features = _getter(self.features)
        hidden = set() if log_sensitive else set(tables.sensitive)
        self.keep = tuple(name for name in self.features if name not in hidden)
        self._kinds = dict(zip(self.features, tables.kinds, strict=True))
        self.counters = counters
        self.dialect = engine.dialect.name
        self._lookups: dict[tuple[str | None, ...], np.ndarray] = {}
        self._suffixes: list[str] = []
        self._drops: dict[tuple[int, str], int] = {}  # counted, not yet stored
        self.counted_rows = 0  # every row this writer has counted as dropped

    def write(
        self, requests: Sequence[tuple[Any, ...]], *, stop_waiting: Callable[[], bool]
    ) -> int:
        """Write one shipment; return how many prediction rows it held (written or dropped)."""
        block, undecodable = _Block(len(self.tables.prediction_columns)), 0
        for request_id, ts, _, _, _, served in requests:
            if served is None:
                continue
            try:  # a request that cannot be decoded costs its own rows, never the shipment
                self._extend(block, request_id, ts, served)
            except Exception as exc:
                undecodable += served.rows
                self._count_drop(epoch_hour(ts), "rejected", served.rows)
                logger.error("prediction log: a request's rows were refused: %s", exc)
        if undecodable:
            self.counters.inc(ROWS_DROPPED, undecodable, reason="rejected")
        return undecodable + self._insert(block, requests, stop_waiting)

    def _insert(
        self, block: _Block, requests: Sequence[tuple[Any, ...]], stop_waiting: Callable[[], bool]
    ) -> int:
        """The block and the request lines in one transaction; retried while the database is
        unreachable, row by row when it refuses the batch. Returns the rows the block held."""
        request_rows = [
            (
                request_id,
                self._when(ts),
                path,
                status,
                latency_ms,
                served.rows if served else 0,
                served.model_version if served else None,
            )
            for request_id, ts, path, status, latency_ms, served in requests
        ]
        backoff = BACKOFF_START
        while True:
            try:
                self._insert_batch(block.predictions(), request_rows)
                self.counters.inc(ROWS_WRITTEN, block.count)
                return block.count
            except Exception as exc:
                if not _is_outage(exc):
                    self.counters.inc(BATCHES_FAILED, 1)
                    return self._row_by_row(block, request_rows, exc)
                self.counters.inc(DATABASE_ERRORS, 1)
                if stop_waiting():
                    self.counters.inc(ROWS_DROPPED, block.count, reason="database_unavailable")
                    for hour, rows in block.hours:
                        self._count_drop(hour, "database_unavailable", rows)
                    return block.count
                logger.warning("prediction log: database unavailable (%s); retrying", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _row_by_row(
        self, block: _Block, request_rows: list[tuple[Any, ...]], exc: Exception
    ) -> int:
        """One bad row costs one row: each is tried alone, the refused ones counted."""
        logger.warning("prediction log: a batch was refused (%s); retrying row by row", exc)
        hours = [hour for hour, rows in block.hours for _ in range(rows)]
        rejected = 0
        for row, hour in zip(block.predictions(), hours, strict=True):
            try:
                self._insert_batch(iter([row]), [])
            except Exception as row_error:
                rejected += 1
                self._count_drop(hour, "rejected", 1)
                logger.error("prediction log: a row was refused: %s", type(row_error).__name__)
        for row in request_rows:
            try:
                self._insert_batch(None, [row])
            except Exception:
                logger.error("prediction log: a request line was refused")
        written = block.count - rejected
        self.counters.inc(ROWS_RETRIED, block.count)
        self.counters.inc(ROWS_WRITTEN, written)
        self.counters.inc(ROWS_DROPPED, rejected, reason="rejected")
        return block.count

    # --- drops per hour: what the monitoring windows cover -----------------------------------

    def _count_drop(self, hour: int, reason: str, rows: int) -> None:
        self._drops[(hour, reason)] = self._drops.get((hour, reason), 0) + rows
        self.counted_rows += rows

    def count_drops(self) -> int:
        """Add this writer's own drop counts (rows refused, a database that never came back) to
        the log_drops table; kept for the next try while the database cannot take them.
        Returns the rows stored now."""
        if self._drops and store_drops(self.engine, self.dialect, self._drops):
            stored, self._drops = sum(self._drops.values()), {}
            return stored
        return 0

    # --- inserts ---------------------------------------------------------------------------------

    def _insert_batch(
        self, predictions: Iterator[tuple[Any, ...]] | None, request_rows: list[tuple[Any, ...]]
    ) -> None:
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            t = self.tables
            first = next(predictions, None) if predictions is not None else None
            if first is not None:  # the block's rows, read one at a time by the driver
                rows = chain((first,), predictions)
                if self.dialect == "postgresql":
                    _copy(cursor, "predictions", t.prediction_columns, t.prediction_types, rows)
                else:
                    _executemany(cursor, "predictions", t.prediction_columns, rows)
            if request_rows:
                if self.dialect == "postgresql":
                    _copy(cursor, "requests", t.request_columns, t.request_types, request_rows)
                else:
                    _executemany(cursor, "requests", t.request_columns, request_rows)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    def _when(self, ts: datetime) -> Any:
        """A time as the database takes it fastest: PostgreSQL's binary COPY takes the datetime;
        SQLite takes text, formatted once per request rather than once per row: ISO-8601 with
        microseconds and the UTC offset, which its date functions read (and which sorts)."""
        if self.dialect == "postgresql":
            return ts
        return ts.isoformat(" ", timespec="microseconds")

    # --- a request's rows, as columns ------------------------------------------------------------

    def _extend(self, block: _Block, request_id: str, ts: datetime, served: Served) -> None:
        n = served.rows
        if served.columns is not None:
            features = self._from_columns(served, n)
        elif n < ROWS_AS_COLUMNS_FROM:
            self._extend_rows(block, request_id, ts, served)
            return
        else:  # a batch that met the validator: its body, as columns
            features = self._from_body(served.body)
        probabilities = np.frombuffer(served.probabilities)
        key = served.request_key
        parts = (
            list(map(key.__add__, self._row_suffixes(n))),
            [request_id] * n,
            range(n),
            [self._when(ts)] * n,
            [served.model_version] * n,
            *(
                _stored(features.get(name), self._kinds[name], n)
                if name in self.keep
                else [None] * n
                for name in self.features
            ),
            probabilities.tolist(),
            (probabilities >= served.threshold).astype(np.int64).tolist(),
        )
        for column, values in zip(block.columns, parts, strict=True):
            column.extend(values)
        block.column_rows += n
        block.column_hours.append((epoch_hour(ts), n))

    def _extend_rows(self, block: _Block, request_id: str, ts: datetime, served: Served) -> None:
        """A body (single rows, mostly): its rows as tuples at once; for a row or two, columns
        and numpy cost more than the rows themselves."""
        records = orjson.loads(served.body)
        try:  # whole records (the usual case): one C call per row
            features = list(map(self._all_features, records))
        except KeyError:
            features = [tuple(map(record.get, self.features)) for record in records]
        kinds = [self._kinds[name] if name in self.keep else None for name in self.features]
        features = [
            tuple(_one(v, kind) for v, kind in zip(f, kinds, strict=True)) for f in features
        ]
        n = len(features)
        probabilities = struct.unpack(f"<{n}d", served.probabilities)
        key, version, threshold = served.request_key, served.model_version, served.threshold
        when = self._when(ts)
        suffixes = self._row_suffixes(n)
        block.rows.extend(  # a list first: a bad row leaves the block as it was
            [
                (key + suffixes[i], request_id, i, when, version, *row, p, int(p >= threshold))
                for i, (row, p) in enumerate(zip(features, probabilities, strict=True))
            ]
        )
        block.row_hours.append((epoch_hour(ts), n))

    def _row_suffixes(self, n: int) -> list[str]:
        """ "-00000", "-00001", ...: the row part of a prediction id, made once."""
        if len(self._suffixes) < n:
            self._suffixes = [f"-{i:05d}" for i in range(max(n, 1024))]
        return self._suffixes[:n]

    def _from_body(self, body: bytes) -> dict[str, Sequence[Any]]:
        records = orjson.loads(body)
        try:  # whole records (the usual case): one C call per row
            features = list(map(self._all_features, records))
        except KeyError:
            features = [tuple(map(record.get, self.features)) for record in records]
        columns = dict(zip(self.features, zip(*features, strict=True), strict=True))
        return {name: v for name, v in columns.items() if name in self.keep}

    def _from_columns(self, served: Served, n: int) -> dict[str, Sequence[Any]]:
        """Each logged field's n values from a batch's columns (fields not sent: left out)."""
        logged = served.columns
        layout, matrix = logged.layout, logged.matrix
        features: dict[str, Sequence[Any]] = {}
        for j, name in enumerate(layout.numeric):
            features[name] = matrix[:, j].tolist()
        for name, j, values in layout.categorical:
            codes = matrix[:, j]
            lookup = self._lookup(values)
            # NaN: a missing value the model never saw in training; the last slot is None.
            index = np.where(np.isnan(codes), len(values), codes).astype(np.intp)
            features[name] = lookup.take(index).tolist()
        for name, joined in logged.texts.items():
            values = joined.decode().split(TEXT_SEPARATOR)
            if len(values) != n:  # cannot happen through the API's contract (NUL is refused)
                raise ValueError(f"{name}: {len(values)} values for {n} rows")
            features[name] = values
        for name, mask in logged.missing.items():
            column = features[name]
            for i in np.flatnonzero(np.frombuffer(mask, dtype=np.uint8)).tolist():
                column[i] = None
        return features

    def _lookup(self, values: tuple[str | None, ...]) -> np.ndarray:
        lookup = self._lookups.get(values)
        if lookup is None:
            lookup = np.array([*values, None], dtype=object)
            self._lookups[values] = lookup
        return lookup


class _Block:
    """A shipment's predictions: batches as columns (in the table's column order), bodies as
    row tuples; read back as one stream of rows."""

    def __init__(self, width: int) -> None:
        self.columns: list[list[Any]] = [[] for _ in range(width)]
        self.column_rows = 0
        self.column_hours: list[tuple[int, int]] = []  # (hour, rows) per request: drop counts
        self.rows: list[tuple[Any, ...]] = []
        self.row_hours: list[tuple[int, int]] = []

    def predictions(self) -> Iterator[tuple[Any, ...]]:
        return chain(zip(*self.columns, strict=True), self.rows)

    @property
    def count(self) -> int:
        return self.column_rows + len(self.rows)

    @property
    def hours(self) -> list[tuple[int, int]]:
        return self.column_hours + self.row_hours


def quote(name: str) -> str:
    """An identifier as SQL quotes it (both databases): names reach SQL only this way."""
    return '"' + name.replace('"', '""') + '"'


def _column_list(columns: tuple[str, ...]) -> str:
    return ", ".join(map(quote, columns))


def _executemany(cursor: Any, table: str, columns: tuple[str, ...], rows: Any) -> None:
    marks = ", ".join("?" * len(columns))
    names = _column_list(columns)  # every name quoted: mapped names (src/loop/columns.py)
    statement = f"INSERT INTO {quote(table)} ({names}) VALUES ({marks})"  # noqa: S608 - quoted
    cursor.executemany(statement, rows)


def _copy(
    cursor: Any, table: str, columns: tuple[str, ...], types: tuple[str, ...], rows: Any
) -> None:
    """PostgreSQL's bulk-load path, binary: no number or time is formatted as text and parsed
    back (psycopg 3's COPY, which its docs recommend for many rows)."""
    statement = f"COPY {quote(table)} ({_column_list(columns)}) FROM STDIN (FORMAT BINARY)"
    with cursor.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def _getter(names: tuple[str, ...]) -> Any:
    if len(names) == 1:  # itemgetter of one name gives the value, not a 1-tuple
        only = names[0]
        return lambda record: (record[only],)
    return itemgetter(*names)


_NUMBERS = frozenset({float, int, type(None)})
_TEXTS = frozenset({str, type(None)})


def _one(value: Any, kind: str | None) -> Any:
    """One logged value as its column stores it (None for a field the log does not keep)."""
    if kind is None or value is None:
        return None
    if kind == "text":
        return value if type(value) is str else _text(value)
    if kind == "days" and type(value) is str:
        from src.model.contract import parse_datetime

        return parse_datetime(value).timestamp() / 86_400.0
    return float(value) if type(value) in (bool, str) else value


def _stored(values: Any, kind: str, n: int) -> Any:
    """A column of values as stored: checked with a C loop (set of types), converted only when
    some value needs it (a boolean or text in a number column, a code in a text column)."""
    if values is None:
        return [None] * n
    types = set(map(type, values))
    if (kind == "text" and types <= _TEXTS) or (kind != "text" and types <= _NUMBERS):
        return values
    return [_one(v, kind) for v in values]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
