"""Server-issued prediction ids; labels in their own append-only table; model version per request.

Rows logged before this version get the id 'legacy-<row number>' (their clients never saw an id),
and the labels they already had move to the labels table.

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


def upgrade() -> None:
    op.add_column("predictions", sa.Column("prediction_id", sa.String(40), nullable=True))
    op.execute(
        "UPDATE predictions SET prediction_id = 'legacy-' || CAST(id AS VARCHAR(20)) "
        "WHERE prediction_id IS NULL"
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
        "SELECT p.prediction_id, f.label, f.received_at FROM feedback f "
        "JOIN predictions p ON p.request_id = f.request_id AND p.row_index = f.row_index "
        "ORDER BY f.received_at"
    )
    op.drop_table("feedback")
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("prediction_id", existing_type=sa.String(40), nullable=False)
        batch.drop_index("ix_predictions_request_row")
        batch.create_unique_constraint("uq_predictions_prediction_id", ["prediction_id"])
    op.add_column("requests", sa.Column("model_version", sa.String(64), nullable=True))
