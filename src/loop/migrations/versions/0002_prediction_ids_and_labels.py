"""Server-issued prediction ids as the predictions' key; labels in their own append-only table;
the model version of each request.

Rows logged before this version get the id 'legacy-<row number>' (their clients never saw an id),
and the labels they already had move to the labels table. The predictions table is rebuilt (the
same steps on SQLite and PostgreSQL): its key changes, and a table keyed by the id alone takes
rows faster than one with a separate sequence.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_OWN = ("id", "prediction_id", "request_id", "row_index", "ts", "model_version", "probability")
_OWN += ("predicted_class",)


def _features() -> list[sa.Column]:
    """The feature columns the predictions table has now (the census's, in a log written before
    the dataset spec; none in a new log), carried as they are."""
    found = sa.inspect(op.get_bind()).get_columns("predictions")
    return [sa.Column(c["name"], c["type"], nullable=True) for c in found if c["name"] not in _OWN]


def _carried(features: list[sa.Column]) -> list[str]:
    """The columns a copy carries (SQLAlchemy quotes each where it is written)."""
    names = ["request_id", "row_index", "ts", "model_version", *(c.name for c in features)]
    return [*names, "probability", "predicted_class"]


def _copy(source: str, target: str, columns: list[str], *, legacy_ids: bool) -> None:
    """INSERT INTO target (...) SELECT ... FROM source, every name quoted by the dialect."""
    metadata = sa.MetaData()
    old = sa.Table(source, metadata, autoload_with=op.get_bind())
    new = sa.Table(target, metadata, autoload_with=op.get_bind())
    chosen = [old.c[name] for name in columns]
    if legacy_ids:
        legacy = sa.literal("legacy-") + sa.cast(old.c.id, sa.String(20))
        query = sa.select(legacy, *chosen)
        op.execute(sa.insert(new).from_select(["prediction_id", *columns], query))
    else:
        query = sa.select(*chosen).order_by(old.c.ts, old.c.prediction_id)
        op.execute(sa.insert(new).from_select(columns, query))


def upgrade() -> None:
    features = _features()
    carried = _carried(features)
    op.create_table(
        "predictions_v2",
        sa.Column("prediction_id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        *features,
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("predicted_class", sa.SmallInteger, nullable=False),
    )
    _copy("predictions", "predictions_v2", carried, legacy_ids=True)
    op.create_table(
        "labels",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("prediction_id", sa.String(40), nullable=False, index=True),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "INSERT INTO labels (prediction_id, label, received_at) "
        "SELECT 'legacy-' || CAST(p.id AS VARCHAR(20)), f.label, f.received_at FROM feedback f "
        "JOIN predictions p ON p.request_id = f.request_id AND p.row_index = f.row_index "
        "ORDER BY f.received_at"
    )
    op.drop_table("feedback")
    op.drop_table("predictions")
    op.rename_table("predictions_v2", "predictions")
    op.create_index("ix_predictions_ts", "predictions", ["ts"])
    op.add_column("requests", sa.Column("model_version", sa.String(64), nullable=True))


def downgrade() -> None:
    """Back to predictions keyed by (request id, row) with one label per row. What that schema
    cannot hold is dropped: the prediction ids, earlier labels a correction replaced, and labels
    still waiting for their prediction."""
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("model_version")
    features = _features()
    carried = _carried(features)
    op.create_table(
        "predictions_v1",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        *features,
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("predicted_class", sa.SmallInteger, nullable=False),
    )
    _copy("predictions", "predictions_v1", carried, legacy_ids=False)
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("row_index", sa.Integer, primary_key=True),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(
        "INSERT INTO feedback (request_id, row_index, label, received_at) "
        "SELECT request_id, row_index, label, received_at FROM ("
        " SELECT p.request_id, p.row_index, l.label, l.received_at, ROW_NUMBER() OVER ("
        "  PARTITION BY p.request_id, p.row_index ORDER BY l.received_at DESC, l.id DESC"
        " ) AS newest FROM labels l JOIN predictions p ON p.prediction_id = l.prediction_id"
        ") ranked WHERE newest = 1"
    )
    op.drop_table("labels")
    op.drop_table("predictions")
    op.rename_table("predictions_v1", "predictions")
    op.create_index("ix_predictions_ts", "predictions", ["ts"])
    op.create_index("ix_predictions_request_row", "predictions", ["request_id", "row_index"])
