"""Migration 0009_appraisal: it adds the group appraisal policies to a database with groups in it, and downgrades."""

from __future__ import annotations

import datetime as dt

from alembic import command
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from test_fleet_migrations import empty_engine
from test_svc_migrations import script_head

from bastion.service.db import alembic_config

__all__ = ["empty_engine"]

HEAD = script_head()
TABLE = "group_appraisal_policies"


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_keeps_groups_and_downgrade_removes_the_policies(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    command.upgrade(config, "0004_capabilities")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": now})
        conn.execute(
            text(
                "INSERT INTO products (id, tenant_id, name, description, created_at) VALUES ('p1', 't1', 'w', '', :n)"
            ),
            {"n": now},
        )
        conn.execute(
            text(
                "INSERT INTO device_groups (id, tenant_id, product_id, name, update_policy, os_feed, created_at, "
                "updated_at) VALUES ('g1', 't1', 'p1', 'Development', 'UpdateAll', 'retail', :n, :n)"
            ),
            {"n": now},
        )
    command.upgrade(config, "head")
    assert _revision(empty_engine) == HEAD
    assert TABLE in inspect(empty_engine).get_table_names()
    assert "ix_group_appraisal_policies_tenant_id" in {i["name"] for i in inspect(empty_engine).get_indexes(TABLE)}
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {TABLE} (group_id, tenant_id, relaxed, updated_at, updated_by) "  # noqa: S608 - a constant
                "VALUES ('g1', 't1', '[\"debug\"]', :n, 'token:x')"
            ),
            {"n": now},
        )
    command.downgrade(config, "0004_capabilities")
    assert _revision(empty_engine) == "0004_capabilities"
    assert TABLE not in inspect(empty_engine).get_table_names()
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM device_groups")).scalar() == 1
    command.upgrade(config, "head")
    assert _revision(empty_engine) == HEAD
