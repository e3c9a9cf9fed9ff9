"""The prediction log: every served row, each request's latency and status, and labels that come
later. SQLAlchemy Core, so any database URL works (SQLite in WAL mode by default, PostgreSQL).

Writes never happen on the request path: requests put one item on a bounded queue and a writer
thread inserts in batches. A full queue drops the item (counted), it never slows a request down;
close() drains the queue, so a graceful shutdown loses nothing that was answered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    create_engine,
    event,
    select,
    tuple_,
)
from sqlalchemy.engine import Engine

from src.schema import COLUMNS, SENSITIVE

logger = logging.getLogger("service")
metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

requests_table = Table(
    "requests",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, index=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("path", String(64), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("rows", Integer, nullable=False),
)

predictions_table = Table(
    "predictions",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("row_index", Integer, nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("model_version", String(64), nullable=False),
    *(
        Column(c.name, Float if c.kind == "numeric" else String(200), nullable=True)
        for c in COLUMNS
    ),
    Column("probability", Float, nullable=False),
    Column("predicted_class", SmallInteger, nullable=False),
    Index("ix_predictions_request_row", "request_id", "row_index"),
)

feedback_table = Table(
    "feedback",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("row_index", Integer, primary_key=True),
    Column("label", SmallInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

_FEATURE_NAMES = tuple(c.name for c in COLUMNS)


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL (readers never block the writer) and a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _wal(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine)


@dataclass(frozen=True)
class _Predictions:
    request_id: str
    ts: datetime
    model_version: str
    rows: Sequence[dict[str, Any]]
    probabilities: np.ndarray
    threshold: float


@dataclass(frozen=True)
class _Request:
    request_id: str
    ts: datetime
    path: str
    status: int
    latency_ms: float
    rows: int


_STOP = object()


class PredictionLog:
    """A bounded queue and one writer thread in front of the database."""

    def __init__(
        self,
        engine: Engine,
        *,
        queue_size: int = 10_000,
        batch_items: int = 500,
        flush_seconds: float = 0.25,
        log_sensitive: bool = True,
        on_drop: Callable[[int], None] = lambda rows: None,
    ) -> None:
        self.engine = engine
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self.batch_items = batch_items
        self.flush_seconds = flush_seconds
        self.log_sensitive = log_sensitive
        self.on_drop = on_drop
        self.dropped_rows = 0
        self.written_rows = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)

    def start(self) -> PredictionLog:
        create_tables(self.engine)
        self._thread.start()
        return self

    # --- the request path: O(1), never blocks ----------------------------------------------

    def record_predictions(
        self,
        request_id: str,
        ts: datetime,
        model_version: str,
        rows: Sequence[dict[str, Any]],
        probabilities: np.ndarray,
        threshold: float,
    ) -> bool:
        item = _Predictions(request_id, ts, model_version, rows, probabilities, threshold)
        return self._put(item, len(rows))

    def record_request(
        self, request_id: str, ts: datetime, path: str, status: int, latency_ms: float, rows: int
    ) -> bool:
        return self._put(_Request(request_id, ts, path, status, latency_ms, rows), 0)

    def _put(self, item: Any, rows: int) -> bool:
        try:
            self.queue.put_nowait(item)
        except queue.Full:
            self.dropped_rows += rows
            self.on_drop(rows)
            return False
        return True

    # --- the writer --------------------------------------------------------------------------

    def _run(self) -> None:
        stopping = False
        while not stopping:
            try:
                first = self.queue.get(timeout=self.flush_seconds)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < self.batch_items:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is _STOP for item in batch)
            self._write([item for item in batch if item is not _STOP])
            for _ in batch:
                self.queue.task_done()

    def _write(self, batch: list[Any]) -> None:
        if not batch:
            return
        prediction_rows = [
            row for item in batch if isinstance(item, _Predictions) for row in self._rows(item)
        ]
        request_rows = [vars(item) for item in batch if isinstance(item, _Request)]
        try:
            with self.engine.begin() as connection:
                if prediction_rows:
                    connection.execute(predictions_table.insert(), prediction_rows)
                if request_rows:
                    connection.execute(requests_table.insert(), request_rows)
        except Exception:  # a database outage must not kill the writer: count and go on
            logger.exception("prediction log: a batch could not be written")
            self.dropped_rows += len(prediction_rows)
            self.on_drop(len(prediction_rows))
            return
        self.written_rows += len(prediction_rows)

    def _rows(self, item: _Predictions) -> list[dict[str, Any]]:
        out = []
        for index, (row, probability) in enumerate(
            zip(item.rows, item.probabilities.tolist(), strict=True)
        ):
            record = {name: row.get(name) for name in _FEATURE_NAMES}
            if not self.log_sensitive:
                for name in SENSITIVE:
                    record[name] = None
            record.update(
                request_id=item.request_id,
                row_index=index,
                ts=item.ts,
                model_version=item.model_version,
                probability=probability,
                predicted_class=int(probability >= item.threshold),
            )
            out.append(record)
        return out

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written (True), or `timeout` passes."""
        deadline = time.monotonic() + timeout
        while self.queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        """Drain the queue and stop the writer: called at shutdown, after the last response."""
        if self._thread.is_alive():
            self.queue.put(_STOP)  # blocking: the stop marker must not be dropped
            self._thread.join()
        self.engine.dispose()


# --- feedback ------------------------------------------------------------------------------------


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
