"""The prediction log's database schema, declared once: requests, predictions, labels.

SQLAlchemy Core, so any database URL works (SQLite in WAL mode by default, PostgreSQL). The tables
below are what the code reads and writes; Alembic migrations (src/loop/migrations/) create them
and evolve logs that users already hold, and `upgrade()` applies them safely when several processes
start at once.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import Connection, Engine

metadata = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only
# A prediction id: the request's key (12 hex digits of milliseconds, 16 random) and the row.
PREDICTION_ID_LENGTH = 40

requests_table = Table(
    "requests",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False, index=True),  # the client's correlation id
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("path", String(64), nullable=False),
    Column("status", SmallInteger, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("rows", Integer, nullable=False),
    Column("model_version", String(64), nullable=True),
    # PostgreSQL: the transaction that wrote the row (txid_current(), the column's default): the
    # statistics re-read rows of transactions that may not have committed at their last refresh.
    Column("xact", BigInteger, nullable=True, index=True),
)


# The log's own columns. Each feature of the log's dataset has a column too, added when a model of
# that dataset is first served or registered (src/loop/columns.py says how, and under which name).
def prediction_columns() -> list[Column[Any]]:
    """The predictions table's own columns (new objects each call: a table with a dataset's
    feature columns is built from them, src/loop/columns.py)."""
    return [
        Column("prediction_id", String(PREDICTION_ID_LENGTH), primary_key=True),
        Column("request_id", String(128), nullable=False),  # correlation only
        Column("row_index", Integer, nullable=False),
        Column("ts", DateTime(timezone=True), nullable=False, index=True),
        Column("model_version", String(64), nullable=False),
        Column("probability", Float, nullable=False),
        Column("predicted_class", SmallInteger, nullable=False),
    ]


predictions_table = Table("predictions", metadata, *prediction_columns())
FIXED_PREDICTION_COLUMNS = tuple(c.name for c in predictions_table.columns)

# The dataset the log belongs to (one row), its feature columns, and every change to them.
log_dataset_table = Table(
    "log_dataset",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("name", String(100), nullable=False),
    Column("label", Text, nullable=False),
    Column("positive", Text, nullable=False),
    Column("spec_sha256", String(64), nullable=False),  # the spec that claimed the log
    Column("claimed_at", DateTime(timezone=True), nullable=False),
)
log_columns_table = Table(
    "log_columns",
    metadata,
    Column("name", Text, primary_key=True),  # the spec's name, as the user wrote it
    Column("sql_name", String(63), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),  # number or text
    Column("sensitive", Boolean, nullable=False),
    Column("position", Integer, nullable=False),
)
log_column_changes_table = Table(
    "log_column_changes",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("action", String(32), nullable=False),  # add, or "drop <id>"
    Column("spec_sha256", String(64), nullable=False),
    Column("columns", Text, nullable=False),  # JSON: name, sql_name, kind of each
)

# Labels are their own table, joined when read: a label may arrive before its prediction is
# written, from any worker. Append-only: a label that contradicts an earlier one is a correction
# with its own time; readers take the latest per prediction.
labels_table = Table(
    "labels",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("prediction_id", String(PREDICTION_ID_LENGTH), nullable=False, index=True),
    Column("label", SmallInteger, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
    Column("xact", BigInteger, nullable=True, index=True),  # as in requests
)

# Predicted rows the log answered but could not keep, per hour of their request and reason
# (buffer_full, rejected, writer_died, ...): with the rows it kept, the share a window covers.
# Every process adds to its hour's count; nothing is ever subtracted.
log_drops_table = Table(
    "log_drops",
    metadata,
    Column("hour", BigInteger, primary_key=True, autoincrement=False),
    Column("reason", String(32), primary_key=True),
    Column("rows", BigInteger, nullable=False),
)

REQUEST_COLUMNS = ("request_id", "ts", "path", "status", "latency_ms", "rows", "model_version")
MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works; it names this project's migration lock among PostgreSQL's advisory locks.
_ADVISORY_LOCK = 0x5ADC0DE


def make_engine(url: str) -> Engine:
    """An engine; SQLite gets WAL (readers never block the writer), a busy timeout, and the
    folder its file goes in."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})
        if engine.url.database and engine.url.database != ":memory:":
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)

        @event.listens_for(engine, "connect")
        def _wal(connection: Any, record: Any) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@contextmanager
def migration_lock(engine: Engine) -> Iterator[Connection]:
    """One process at a time migrates: PostgreSQL's advisory lock, or a file lock beside SQLite."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _ADVISORY_LOCK})
            connection.commit()
            try:
                yield connection
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _ADVISORY_LOCK})
                connection.commit()
            return
        database = engine.url.database
        lock_path = Path(f"{database}.migrate.lock") if database else None
        if lock_path is None:  # in-memory SQLite: one process by definition
            yield connection
            return
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield connection
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the log's schema to the latest version (or `revision`), whatever state it is in:
    empty, the first version (from before migrations were tracked), or any later one. Safe to
    call from several processes at once: they take turns, and all but the first find nothing to
    do."""
    _migrate(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Back to `revision` ("base": nothing), under the same lock; each step keeps the rows the
    older schema can hold (src/loop/migrations/)."""
    _migrate(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        if "alembic_version" not in inspect(connection).get_table_names():
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _migrate(engine: Engine, direction: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with migration_lock(engine) as connection:
        config.attributes["connection"] = connection
        tables = set(inspect(connection).get_table_names())
        if "predictions" in tables and "alembic_version" not in tables:
            command.stamp(config, "0001")  # a log written before migrations existed
        getattr(command, direction)(config, revision)
        connection.commit()


def create_tables(engine: Engine) -> None:
    upgrade(engine)


# --- statistics, kept by src.loop.statistics: the hourly figures the monitor reads ----------------
# An hour is an integer: whole hours since 1970-01-01 UTC (the same on every database).

hourly_ops_table = Table(
    "hourly_ops",
    metadata,
    Column("hour", BigInteger, primary_key=True, autoincrement=False),
    Column("requests", Integer, nullable=False),
    Column("errors", Integer, nullable=False),  # /predict requests not answered 200
    Column("latency_p95_ms", Float, nullable=True),
    Column("final", Boolean, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
)

hourly_quality_table = Table(
    "hourly_quality",
    metadata,
    Column("hour", BigInteger, primary_key=True, autoincrement=False),
    Column("model_version", String(64), primary_key=True),
    Column("rows", Integer, nullable=False),
    Column("labelled", Integer, nullable=False),
    Column("positives", Integer, nullable=False),
    Column("correct", Integer, nullable=False),  # labelled rows the served class got right
    Column("roc_auc", Float, nullable=True),  # null unless both classes are labelled
    Column("pr_auc", Float, nullable=True),
    Column("final", Boolean, nullable=False),
    Column("computed_at", DateTime(timezone=True), nullable=False),
    # The version's newest row in the hour: the one serving at the end of it is judged.
    Column("last_served", DateTime(timezone=True), nullable=True),
)

hourly_bins_table = Table(
    "hourly_bins",
    metadata,
    Column("hour", BigInteger, primary_key=True, autoincrement=False),
    Column("model_version", String(64), primary_key=True),
    Column("feature", String(64), primary_key=True),
    Column("bin", Integer, primary_key=True, autoincrement=False),
    Column("count", BigInteger, nullable=False),
)

# One row: how far the statistics are final, and the last label they have seen.
stats_state_table = Table(
    "stats_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("computed_before_hour", BigInteger, nullable=False),  # the current hour, last time
    Column("final_before_hour", BigInteger, nullable=False),
    Column("labels_seen_until", DateTime(timezone=True), nullable=False),  # by arrival time
    Column("request_watermark", BigInteger, nullable=False),  # the newest requests.id seen
    Column("reference", String(64), nullable=True),  # hash of the bins the counts use
    # PostgreSQL: the oldest transaction still running when the last refresh began; rows of it
    # and of later transactions are read again (commit order, not id order).
    Column("xact_watermark", BigInteger, nullable=True),
)


# --- the model registry (src/registry/): versions, aliases, and what happened to them -----------

model_versions_table = Table(
    "model_versions",
    metadata,
    Column("version", String(64), primary_key=True),  # the artifact set's content hash
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("source", String(500), nullable=False),  # the folder it was registered from
    Column("manifest", Text, nullable=False),  # the set's manifest.json, as registered
)

model_aliases_table = Table(
    "model_aliases",
    metadata,
    Column("alias", String(32), primary_key=True),  # champion, challenger
    Column("version", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Append-only: registered, promoted, refused, rolled_back, forced, and the agent's acts.
model_events_table = Table(
    "model_events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("ts", DateTime(timezone=True), nullable=False, index=True),
    Column("kind", String(32), nullable=False),
    Column("version", String(64), nullable=True),
    Column("previous", String(64), nullable=True),
    Column("actor", String(200), nullable=False),  # the command or rule that acted
    Column("reason", Text, nullable=False),
    Column("details", Text, nullable=True),  # JSON: the gate's numbers, a plan's hash
)

# The registry's holdout: one row, written once (src/holdout.py says how its rows are chosen).
registry_holdout_table = Table(
    "registry_holdout",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("rule", String(200), nullable=False),
    Column("sha256", String(64), nullable=False),  # of the rows file in the store
    Column("rows", Integer, nullable=False),
    Column("file", String(200), nullable=False),  # its name in the store
    Column("carved_from", String(64), nullable=False),  # the version whose training left it out
    Column("carved_at", DateTime(timezone=True), nullable=False),
)

# A version's trees compiled to native code, per build key (lleaves, LLVM, CPU): loading native
# code is running it, so its hash is kept here, beside the versions, not beside the file.
model_builds_table = Table(
    "model_builds",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("build_key", String(200), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("built_at", DateTime(timezone=True), nullable=False),
)
