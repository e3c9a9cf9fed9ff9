"""The log belongs to one dataset: its name, label and positive value, its feature columns (the
spec's names and the names they have in SQL), and every change to them.

A log written before (the census's) has its feature columns already: they are recorded as the
Adult census dataset's, under their own names, as the change that made the log. A new log has
none: its first model's spec adds them (src/loop/columns.py).

Revision ID: 0009
Revises: 0008
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
FIXED = ("prediction_id", "request_id", "row_index", "ts", "model_version", "probability")
FIXED += ("predicted_class",)


def upgrade() -> None:
    dataset = op.create_table(
        "log_dataset",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("positive", sa.Text, nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
    )
    columns = op.create_table(
        "log_columns",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("sql_name", sa.String(63), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sensitive", sa.Boolean, nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
    )
    changes = op.create_table(
        "log_column_changes",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("spec_sha256", sa.String(64), nullable=False),
        sa.Column("columns", sa.Text, nullable=False),
    )
    _adopt_the_census_columns(dataset, columns, changes)


def _adopt_the_census_columns(dataset: sa.Table, columns: sa.Table, changes: sa.Table) -> None:
    """A log that already has feature columns was written for the census: record them so."""
    present = [
        c["name"]
        for c in sa.inspect(op.get_bind()).get_columns("predictions")
        if c["name"] not in FIXED
    ]
    if not present:
        return
    from src.dataset.spec import adult_spec

    spec = adult_spec()
    now = datetime.now(UTC)
    kinds = {
        name: "number" if spec.column(name).is_numeric else "text"
        for name in spec.features
        if name in present
    }
    op.bulk_insert(
        dataset,
        [
            {
                "id": 1,
                "name": spec.name,
                "label": spec.label.column,
                "positive": str(spec.label.positives[0]),
                "spec_sha256": spec.digest,
                "claimed_at": now,
            }
        ],
    )
    recorded = [
        {
            "name": name,
            "sql_name": name,
            "kind": kinds.get(name, "text"),
            "sensitive": name in spec.sensitive,
            "position": position,
        }
        for position, name in enumerate(present)
    ]
    op.bulk_insert(columns, recorded)
    op.bulk_insert(
        changes,
        [
            {
                "ts": now,
                "action": "add",
                "spec_sha256": spec.digest,
                "columns": json.dumps(
                    [{k: r[k] for k in ("name", "sql_name", "kind")} for r in recorded]
                ),
            }
        ],
    )


def downgrade() -> None:
    """The feature columns stay in predictions (their rows with them); what they were is gone."""
    op.drop_table("log_column_changes")
    op.drop_table("log_columns")
    op.drop_table("log_dataset")
