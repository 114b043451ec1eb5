"""Migration 0016_fleet_health: device_log_requests upgrades over a device, and downgrades cleanly."""

from __future__ import annotations

import datetime as dt

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from test_fleet_migrations import empty_engine
from test_svc_migrations import script_head

from bastion.service.db import alembic_config

__all__ = ["empty_engine"]

REVISION = "0016_fleet_health"


def test_upgrade_keeps_devices_and_downgrade_removes_the_log_requests(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    before = ScriptDirectory.from_config(config).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    command.upgrade(config, before)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    device = "cd" * 32
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": now})
        conn.execute(
            text("INSERT INTO devices (device_id, tenant_id, claimed_at, claimed_by) VALUES (:d, 't1', :now, 'x')"),
            {"d": device, "now": now},
        )
    command.upgrade(config, "head")
    assert script_head()
    assert "device_log_requests" in inspect(empty_engine).get_table_names()
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO device_log_requests (id, tenant_id, device_id, component_id, requested_by, requested_at,"
                " state, truncated, max_bytes, expires_at) VALUES ('lr1', 't1', :d, 'app1', 'x', :now, 'pending',"
                " false, 16384, :now)"
            ),
            {"d": device, "now": now},
        )
    indexes = {i["name"] for i in inspect(empty_engine).get_indexes("device_log_requests")}
    assert "ix_device_log_requests_device_state" in indexes
    command.downgrade(config, before)
    assert "device_log_requests" not in inspect(empty_engine).get_table_names()
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM devices")).scalar() == 1
    command.upgrade(config, "head")
