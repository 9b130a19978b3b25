"""Alembic's environment: always run from server/store/database.py's `migrate`,
on the connection it passes (already in a transaction, under its lock)."""

from alembic import context

from server.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite alters tables by copying them: batch mode does that for us.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
