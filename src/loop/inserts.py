"""Rows into the database, fast and without silent loss: the bulk path of each database (SQLite's
executemany in one transaction, PostgreSQL's COPY), a row-by-row retry when a batch is refused,
and backoff while the database is unreachable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import orjson
from sqlalchemy.engine import Engine

from src.loop.tables import (
    FEATURE_NAMES,
    FEATURE_NAMES_WITHOUT_SENSITIVE,
    PREDICTION_COLUMNS,
    REQUEST_COLUMNS,
)
from src.multiprocess_metrics import CounterFile

logger = logging.getLogger("service")
BACKOFF_START, BACKOFF_MAX = 0.1, 5.0
ROWS_WRITTEN = "prediction_log_written_rows"
ROWS_RETRIED = "prediction_log_retried_rows"
ROWS_DROPPED = "prediction_log_dropped_rows"
BATCHES_FAILED = "prediction_log_failed_batches"
_ALL_FEATURES = itemgetter(*FEATURE_NAMES)


def _is_outage(exc: BaseException) -> bool:
    """A database that cannot be reached (retry later), as opposed to rows it refuses."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "OperationalError" in names or "InterfaceError" in names:
        # SQLite reports a missing table or a bad statement as OperationalError too.
        message = str(exc).lower()
        return "no such table" not in message and "syntax error" not in message
    return False


class BatchWriter:
    """Turns queued requests into rows and inserts them, one transaction per batch."""

    def __init__(self, engine: Engine, *, log_sensitive: bool, counters: CounterFile) -> None:
        self.engine = engine
        self.keep = FEATURE_NAMES if log_sensitive else FEATURE_NAMES_WITHOUT_SENSITIVE
        self.counters = counters
        self.dialect = engine.dialect.name

    def write(
        self, requests: Sequence[tuple[Any, ...]], *, stop_waiting: Callable[[], bool]
    ) -> int:
        """Write one shipment; return how many prediction rows it held (written or dropped)."""
        predictions = [
            row
            for request_id, ts, _, _, _, served in requests
            if served is not None
            for row in self._rows(request_id, ts, served)
        ]
        request_rows = [
            (
                request_id,
                self._stamp(ts),
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
                self._insert_batch(predictions, request_rows)
                self.counters.inc(ROWS_WRITTEN, len(predictions))
                return len(predictions)
            except Exception as exc:
                if not _is_outage(exc):
                    self.counters.inc(BATCHES_FAILED, 1)
                    return self._row_by_row(predictions, request_rows, exc)
                if stop_waiting():
                    self.counters.inc(ROWS_DROPPED, len(predictions), reason="database_unavailable")
                    return len(predictions)
                logger.warning("prediction log: database unavailable (%s); retrying", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)

    def _row_by_row(
        self,
        predictions: list[tuple[Any, ...]],
        request_rows: list[tuple[Any, ...]],
        exc: Exception,
    ) -> int:
        """One bad row costs one row: each is tried alone, the refused ones counted."""
        logger.warning("prediction log: a batch was refused (%s); retrying row by row", exc)
        rejected = 0
        for row in predictions:
            try:
                self._insert_batch([row], [])
            except Exception as row_error:
                rejected += 1
                logger.error("prediction log: a row was refused: %s", type(row_error).__name__)
        for row in request_rows:
            try:
                self._insert_batch([], [row])
            except Exception:
                logger.error("prediction log: a request line was refused")
        written = len(predictions) - rejected
        self.counters.inc(ROWS_RETRIED, len(predictions))
        self.counters.inc(ROWS_WRITTEN, written)
        self.counters.inc(ROWS_DROPPED, rejected, reason="rejected")
        return len(predictions)

    def _insert_batch(
        self, predictions: list[tuple[Any, ...]], request_rows: list[tuple[Any, ...]]
    ) -> None:
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            if self.dialect == "postgresql":
                _copy(cursor, "predictions", PREDICTION_COLUMNS, predictions)
                _copy(cursor, "requests", REQUEST_COLUMNS, request_rows)
            else:
                _executemany(cursor, "predictions", PREDICTION_COLUMNS, predictions)
                _executemany(cursor, "requests", REQUEST_COLUMNS, request_rows)
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
        finally:
            connection.close()

    @staticmethod
    def _stamp(ts: datetime) -> str:
        """A time as text, once per request rather than once per row: ISO-8601 with microseconds
        and the UTC offset, which SQLite's date functions and PostgreSQL both read (and which
        sorts as text)."""
        return ts.isoformat(" ", timespec="microseconds")

    def _rows(self, request_id: str, ts: datetime, served: Any) -> list[tuple[Any, ...]]:
        records = orjson.loads(served.body)
        n = len(records)
        try:  # whole records (the usual case): one C call per row
            features = list(map(_ALL_FEATURES, records))
        except KeyError:
            features = [tuple(map(record.get, FEATURE_NAMES)) for record in records]
        if self.keep is not FEATURE_NAMES:
            kept = [name in self.keep for name in FEATURE_NAMES]
            features = [
                tuple(v if k else None for v, k in zip(f, kept, strict=True)) for f in features
            ]
        probabilities = np.frombuffer(served.probabilities)
        classes = (probabilities >= served.threshold).astype(np.int64).tolist()
        key = served.request_key
        return list(
            zip(
                [f"{key}-{i:05d}" for i in range(n)],
                repeat(request_id, n),
                range(n),
                repeat(self._stamp(ts), n),
                repeat(served.model_version, n),
                *zip(*features, strict=True),
                probabilities.tolist(),
                classes,
                strict=True,
            )
        )


def _executemany(cursor: Any, table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
    if rows:
        marks = ", ".join("?" * len(columns))
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)  # noqa: S608


def _copy(cursor: Any, table: str, columns: tuple[str, ...], rows: list[Any]) -> None:
    """PostgreSQL's bulk-load path (psycopg 3's COPY), which its docs recommend for many rows."""
    if rows:
        with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
