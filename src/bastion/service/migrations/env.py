"""Alembic environment: migrations run on the engine handed over by :mod:`bastion.service.db`."""

from __future__ import annotations

from alembic import context

from bastion.service.models import Base

target_metadata = Base.metadata


def _run() -> None:
    engine = context.config.attributes.get("engine")
    if engine is None:
        raise RuntimeError("run migrations through bastion.service.db.migrate()")
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()


_run()
