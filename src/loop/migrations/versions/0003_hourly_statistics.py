"""Hourly statistics kept in the database: operations, quality per model version, drift bins.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hourly_ops",
        sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("latency_p95_ms", sa.Float, nullable=True),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "hourly_quality",
        sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("labelled", sa.Integer, nullable=False),
        sa.Column("positives", sa.Integer, nullable=False),
        sa.Column("correct", sa.Integer, nullable=False),
        sa.Column("roc_auc", sa.Float, nullable=True),
        sa.Column("pr_auc", sa.Float, nullable=True),
        sa.Column("final", sa.Boolean, nullable=False),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "hourly_bins",
        sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("model_version", sa.String(64), primary_key=True),
        sa.Column("feature", sa.String(64), primary_key=True),
        sa.Column("bin", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_labels_received_at", "labels", ["received_at"])
    op.create_table(
        "stats_state",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("computed_before_hour", sa.BigInteger, nullable=False),
        sa.Column("final_before_hour", sa.BigInteger, nullable=False),
        sa.Column("labels_seen_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_watermark", sa.BigInteger, nullable=False),
        sa.Column("reference", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    # Derived tables only: a refresh after the next upgrade computes them again.
    op.drop_table("stats_state")
    op.drop_index("ix_labels_received_at", table_name="labels")
    op.drop_table("hourly_bins")
    op.drop_table("hourly_quality")
    op.drop_table("hourly_ops")
