"""PostgreSQL: planner statistics on each log row's hour, the expression the statistics group by.

Without them the planner reads the hour's distinct values from `ts`, which is unique: it took a
week of 2.3M rows for 30M groups, sized its hash table for them (1.3 GB for 10,752 real groups),
or sorted on disk when not allowed that much. ANALYZE fills them now, not when autovacuum next
finds the tables grown by a tenth; it samples 30,000 rows whatever the table's size, and neither
statement blocks the writers (SHARE UPDATE EXCLUSIVE).

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# The text `epoch_hour(ts)` compiles to (src/loop/statistics.py): the planner matches the tree.
HOUR = "CAST(FLOOR(date_part('epoch', ts) / 3600) AS BIGINT)"
TABLES = ("predictions", "requests")


def _postgresql_14() -> bool:
    """Statistics on an expression came with PostgreSQL 14; an older server plans as before."""
    dialect = op.get_bind().dialect
    return dialect.name == "postgresql" and dialect.server_version_info >= (14,)


def upgrade() -> None:
    if not _postgresql_14():
        return
    for table in TABLES:
        op.execute(f"CREATE STATISTICS {table}_hour ON ({HOUR}) FROM {table}")
    op.execute(f"ANALYZE {', '.join(TABLES)}")


def downgrade() -> None:
    if not _postgresql_14():
        return
    for table in TABLES:
        op.execute(f"DROP STATISTICS IF EXISTS {table}_hour")
