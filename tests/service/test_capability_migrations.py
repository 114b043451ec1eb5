"""Migration 0004_capabilities: it is the head, it upgrades a fleet database with data in it, and it downgrades."""

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
NEW_DEVICE_COLUMNS = {"capability_id", "capability_kind", "group_before_development"}


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_keeps_devices_and_downgrade_removes_capabilities(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    command.upgrade(config, "0002_fleet")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    device = "cd" * 32
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": now})
        conn.execute(
            text("INSERT INTO devices (device_id, tenant_id, claimed_at, claimed_by) VALUES (:d, 't1', :now, 'x')"),
            {"d": device, "now": now},
        )
        # A row that points at the device: SQLite's rebuild of the devices table must keep it valid.
        conn.execute(
            text(
                "INSERT INTO device_update_status (device_id, tenant_id, os_version, boot_slot, installed, "
                "last_report_iat, reported_at) VALUES (:d, 't1', '1.0.0', 'A', '[]', 1, :now)"
            ),
            {"d": device, "now": now},
        )
    command.upgrade(config, "head")
    assert _revision(empty_engine) == HEAD
    assert "device_capabilities" in inspect(empty_engine).get_table_names()
    assert {c["name"] for c in inspect(empty_engine).get_columns("devices")} >= NEW_DEVICE_COLUMNS
    with empty_engine.begin() as conn:
        # Devices claimed before capabilities existed attest under none.
        assert conn.execute(text("SELECT capability_id, capability_kind FROM devices")).one() == (None, None)
        conn.execute(
            text(
                "INSERT INTO device_capabilities (id, tenant_id, device_id, kind, developer_key_ids, sha256, "
                "issued_at, expires_at, issued_by) VALUES ('c1', 't1', :d, 'appDevelopment', '[]', :h, :now, "
                ":now, 'token:x')"
            ),
            {"d": device, "h": "ab" * 32, "now": now},
        )
    assert {i["name"] for i in inspect(empty_engine).get_indexes("device_capabilities")} >= {
        "ix_device_capabilities_tenant_id",
        "ix_device_capabilities_device_id",
    }
    command.downgrade(config, "0002_fleet")
    assert _revision(empty_engine) == "0002_fleet"
    assert "device_capabilities" not in inspect(empty_engine).get_table_names()
    assert not NEW_DEVICE_COLUMNS & {c["name"] for c in inspect(empty_engine).get_columns("devices")}
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM devices")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM device_update_status")).scalar() == 1
    command.upgrade(config, "head")
    assert _revision(empty_engine) == HEAD
