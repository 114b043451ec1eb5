"""Migration 0015_error_reports: it upgrades a database with a device in it, and it downgrades."""

from __future__ import annotations

import datetime as dt

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from test_fleet_migrations import empty_engine
from test_svc_migrations import script_head

from bastion.service.db import alembic_config

__all__ = ["empty_engine"]

REVISION = "0015_error_reports"
TABLES = {
    "error_report_batches",
    "error_buckets",
    "error_bucket_versions",
    "error_bucket_devices",
    "error_events",
    "error_daily_counts",
    "device_release_activity",
}


def test_upgrade_keeps_devices_and_downgrade_removes_the_error_tables(empty_engine: Engine) -> None:
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
    assert set(inspect(empty_engine).get_table_names()) >= TABLES
    with empty_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO error_report_batches (tenant_id, device_id, batch_id, iat, received_at, records, dropped)"
                " VALUES ('t1', :d, :b, 1, :now, 0, 0)"
            ),
            {"d": device, "b": "ab" * 16, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO device_release_activity (tenant_id, device_id, component_id, version, day, first_seen,"
                " last_seen) VALUES ('t1', :d, '', '1.0.0', :day, :now, :now)"
            ),
            {"d": device, "day": now.date(), "now": now},
        )
    uniques = {u["name"] for u in inspect(empty_engine).get_unique_constraints("error_report_batches")}
    assert "uq_error_report_batches_device_batch" in uniques
    indexes = {i["name"] for i in inspect(empty_engine).get_indexes("error_events")}
    assert indexes >= {"ix_error_events_tenant_last_at", "ix_error_events_tenant_release", "ix_error_events_tenant_os"}
    command.downgrade(config, before)
    assert not TABLES & set(inspect(empty_engine).get_table_names())
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM devices")).scalar() == 1
    command.upgrade(config, "head")


def test_0020_fills_the_counted_devices_from_the_stored_events(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    command.upgrade(config, "0019_console_sessions")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    device, bucket = "cd" * 32, "b" + "0" * 16
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": now})
        conn.execute(
            text("INSERT INTO devices (device_id, tenant_id, claimed_at, claimed_by) VALUES (:d, 't1', :now, 'x')"),
            {"d": device, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO error_report_batches (id, tenant_id, device_id, batch_id, iat, received_at, records,"
                " dropped) VALUES (1, 't1', :d, :b, 1, :now, 3, 0)"
            ),
            {"d": device, "b": "ab" * 16, "now": now},
        )
        conn.execute(
            text(
                "INSERT INTO error_buckets (id, tenant_id, fingerprint, algorithm, category, event_type, component_id,"
                " title, state, first_seen, last_seen, event_count, device_count, first_version, last_version)"
                " VALUES (:b, 't1', :fp, 1, 'AppCrash', 'python_exception', 'app', 't', 'open', :now, :now, 3, 1,"
                " '1.0.0', '1.1.0')"
            ),
            {"b": bucket, "fp": "f" * 64, "now": now},
        )
        for version in ("1.0.0", "1.0.0", "1.1.0"):
            conn.execute(
                text(
                    "INSERT INTO error_events (tenant_id, device_id, batch_pk, bucket_id, os_version, component_id,"
                    " version, category, event_class, event_type, count, first_at, last_at, description, detail,"
                    " received_at) VALUES ('t1', :d, 1, :b, '1.0.0', 'app', :v, 'AppCrash', 'Error',"
                    " 'python_exception', 1, :now, :now, 'x', '{}', :now)"
                ),
                {"d": device, "b": bucket, "v": version, "now": now},
            )
    command.upgrade(config, "0020_bucket_version_devices")
    with empty_engine.connect() as conn:
        rows = conn.execute(text("SELECT bucket_id, version, device_id FROM error_bucket_version_devices")).all()
    assert sorted(tuple(r) for r in rows) == [(bucket, "1.0.0", device), (bucket, "1.1.0", device)]
    command.downgrade(config, "0019_console_sessions")
    assert "error_bucket_version_devices" not in inspect(empty_engine).get_table_names()
