"""Exact statistics under concurrent writers, and the version that served last in an hour.

On PostgreSQL every request and label row records the transaction that wrote it (`xact`,
txid_current()); a refresh reads the oldest transaction still running when it starts, and the next
refresh re-reads every row written by that transaction or a later one, so a batch committed late
is counted (ids and timestamps do not follow commit order). SQLite commits one writer at a time,
so its ids do. `hourly_quality.last_served` is the newest row of a version in an hour: the agent
judges the version that served last.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_WRITTEN_BY = ("requests", "labels")


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for table in _WRITTEN_BY:
        op.add_column(
            table,
            sa.Column(
                "xact",
                sa.BigInteger,
                nullable=True,
                server_default=sa.text("txid_current()") if postgresql else None,
            ),
        )
        op.create_index(f"ix_{table}_xact", table, ["xact"])
    op.add_column("hourly_quality", sa.Column("last_served", sa.DateTime(timezone=True)))
    op.add_column("stats_state", sa.Column("xact_watermark", sa.BigInteger, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("stats_state") as batch:
        batch.drop_column("xact_watermark")
    with op.batch_alter_table("hourly_quality") as batch:
        batch.drop_column("last_served")
    for table in _WRITTEN_BY:
        op.drop_index(f"ix_{table}_xact", table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("xact")
