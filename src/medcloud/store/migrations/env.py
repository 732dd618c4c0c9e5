"""Alembic environment: runs against the connection the catalog hands over (see store.db.Database.migrate)."""

from __future__ import annotations

from alembic import context

from medcloud.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - migrations always run through Catalog.migrate()
    raise RuntimeError("run migrations through medcloud.store.db.Database.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
