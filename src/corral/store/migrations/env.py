"""Alembic environment: runs on the engine the Store hands over (no alembic.ini needed)."""

from __future__ import annotations

from alembic import context

from corral.store.migrate import include_name
from corral.store.models import Base

config = context.config
engine = config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        include_name=include_name,
        render_as_batch=connection.dialect.name == "sqlite",
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
