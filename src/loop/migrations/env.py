"""Alembic's entry: migrations run on the connection src.loop.tables.upgrade() hands over."""

from alembic import context

connection = context.config.attributes["connection"]
# Batch mode: SQLite changes a table by copying it, which Alembic does for us.
context.configure(connection=connection, target_metadata=None, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
