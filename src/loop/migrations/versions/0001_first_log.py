"""The first prediction log: requests, predictions keyed by (request id, row), feedback.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from src.dataset.spec import adult_spec

COLUMNS = [adult_spec().column(name) for name in adult_spec().features]

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
        *(
            sa.Column(c.name, sa.Float if c.is_numeric else sa.String(200), nullable=True)
            for c in COLUMNS
        ),
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
