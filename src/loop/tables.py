"""The prediction log's database schema, declared once: requests, predictions, labels.

SQLAlchemy Core, so any database URL works (SQLite in WAL mode by default, PostgreSQL).
"""

from __future__ import annotations

from typing import Any

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
)
from sqlalchemy.engine import Engine

from src.schema import COLUMNS, SENSITIVE

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

FEATURE_NAMES = tuple(c.name for c in COLUMNS)
FEATURE_NAMES_WITHOUT_SENSITIVE = frozenset(n for n in FEATURE_NAMES if n not in SENSITIVE)
PREDICTION_COLUMNS = (
    "request_id",
    "row_index",
    "ts",
    "model_version",
    *FEATURE_NAMES,
    "probability",
    "predicted_class",
)
REQUEST_COLUMNS = ("request_id", "ts", "path", "status", "latency_ms", "rows")


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
