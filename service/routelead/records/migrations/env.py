"""Alembic environment: runs on the connection `routelead.records.db.migrate` hands over."""

from __future__ import annotations

from alembic import context
from routelead.records.schema import metadata
from sqlalchemy.engine import Connection

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations with `routelead migrate`, which supplies the database connection")
# SQLite cannot ALTER most things in place: batch mode rebuilds tables when a migration needs it.
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
