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

from src.dataset.spec import adult_spec

COLUMNS = [adult_spec().column(name) for name in adult_spec().features]

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
_FEATURES = [c.name for c in COLUMNS]
_CARRIED = ", ".join(
    ["request_id", "row_index", "ts", "model_version", *_FEATURES, "probability", "predicted_class"]
)


def upgrade() -> None:
    op.create_table(
        "predictions_v2",
        sa.Column("prediction_id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        *(
            sa.Column(c.name, sa.Float if c.is_numeric else sa.String(200), nullable=True)
            for c in COLUMNS
        ),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("predicted_class", sa.SmallInteger, nullable=False),
    )
    op.execute(
        f"INSERT INTO predictions_v2 (prediction_id, {_CARRIED}) "  # noqa: S608 - our own names
        f"SELECT 'legacy-' || CAST(id AS VARCHAR(20)), {_CARRIED} FROM predictions"
    )
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
    op.create_table(
        "predictions_v1",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        *(
            sa.Column(c.name, sa.Float if c.is_numeric else sa.String(200), nullable=True)
            for c in COLUMNS
        ),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("predicted_class", sa.SmallInteger, nullable=False),
    )
    op.execute(
        f"INSERT INTO predictions_v1 ({_CARRIED}) "  # noqa: S608 - our own names
        f"SELECT {_CARRIED} FROM predictions ORDER BY ts, prediction_id"
    )
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
