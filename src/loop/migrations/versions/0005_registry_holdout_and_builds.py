"""The registry's holdout (carved once, recorded with its hash) and the compiled trees of each
version (the native library lleaves builds, keyed by what it depends on, verified by hash).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "registry_holdout",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("file", sa.String(200), nullable=False),
        sa.Column("carved_from", sa.String(64), nullable=False),
        sa.Column("carved_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "model_builds",
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("build_key", sa.String(200), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("built_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_builds")
    op.drop_table("registry_holdout")
