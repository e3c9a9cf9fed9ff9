"""The first prediction log: requests, predictions keyed by (request id, row), feedback.

The release that wrote it had the census's columns in predictions; a log made now starts with
none, and takes its dataset's columns when its first model is served (0009, src/loop/columns.py).

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False, index=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("path", sa.String(64), nullable=False),
        sa.Column("status", sa.SmallInteger, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
    )
    op.create_table(
        "predictions",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("row_index", sa.Integer, nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("probability", sa.Float, nullable=False),
        sa.Column("predicted_class", sa.SmallInteger, nullable=False),
    )
    op.create_index("ix_predictions_request_row", "predictions", ["request_id", "row_index"])
    op.create_table(
        "feedback",
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("row_index", sa.Integer, primary_key=True),
        sa.Column("label", sa.SmallInteger, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("predictions")
    op.drop_table("requests")
