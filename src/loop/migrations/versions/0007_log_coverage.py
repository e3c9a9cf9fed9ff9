"""Rows the log could not keep, per hour and reason: what the monitoring windows cover.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_drops",
        sa.Column("hour", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("reason", sa.String(32), primary_key=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("log_drops")
