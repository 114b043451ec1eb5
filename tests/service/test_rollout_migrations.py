"""Migration 0017_rollouts: it adds the rollouts table to a database with a deployment in it, and downgrades."""

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
BEFORE = "0015_error_reports"
TABLE = "rollouts"


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_keeps_deployments_and_downgrade_removes_the_rollouts(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    command.upgrade(config, BEFORE)
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
                "updated_at) VALUES ('g1', 't1', 'p1', 'Production', 'UpdateAll', 'retail', :n, :n)"
            ),
            {"n": now},
        )
        conn.execute(
            text(
                "INSERT INTO deployments (id, tenant_id, group_id, created_at, created_by) "
                "VALUES (7, 't1', 'g1', :n, 'token:x')"
            ),
            {"n": now},
        )
    command.upgrade(config, "head")
    assert _revision(empty_engine) == HEAD
    assert TABLE in inspect(empty_engine).get_table_names()
    indexes = {i["name"] for i in inspect(empty_engine).get_indexes(TABLE)}
    assert {"ix_rollouts_state", "ix_rollouts_group_id", "ix_rollouts_deployment_id"} <= indexes
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO {TABLE} (tenant_id, group_id, kind, deployment_id, seed, stages, stage, state, "  # noqa: S608 - a constant
                "stage_started_at, soak_seconds, halt_rules, previous, history, created_at, created_by, updated_at, "
                "version) VALUES ('t1', 'g1', 'deployment', 7, 's', '[100, 10000]', 0, 'running', :n, 60, '{}', "
                "'[]', '[]', :n, 'token:x', :n, 1)"
            ),
            {"n": now},
        )
    command.downgrade(config, BEFORE)
    assert _revision(empty_engine) == BEFORE
    assert TABLE not in inspect(empty_engine).get_table_names()
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM deployments")).scalar() == 1
    command.upgrade(config, "head")
    assert _revision(empty_engine) == HEAD
