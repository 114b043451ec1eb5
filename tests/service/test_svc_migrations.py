"""The Alembic migrations produce exactly the schema of models.py (SQLite and PostgreSQL)."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

from bastion.service.db import MIGRATIONS_DIR, migrate
from bastion.service.models import Base


def script_head() -> str:
    """The one head of the packaged migration chain (two heads would be a merge mistake)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1, f"the migrations have {len(heads)} heads: {heads}; chain them"
    return heads[0]


def test_migrations_match_models(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diffs = compare_metadata(context, Base.metadata)
    assert diffs == []


def test_head_is_recorded_and_upgrade_is_idempotent(db_url: str, engine: Engine) -> None:
    migrate(db_url)  # second run is a no-op
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == script_head()
    assert set(inspect(engine).get_table_names()) >= set(Base.metadata.tables)


def test_sqlite_pragmas(engine: Engine) -> None:
    if engine.dialect.name != "sqlite":
        return  # PostgreSQL has no pragmas; the parametrized sibling covers SQLite
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
