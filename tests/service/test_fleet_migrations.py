"""Migration 0002_fleet: it upgrades a 0001 database with data in it, and it downgrades."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.engine import make_url

from bastion.service.db import alembic_config, create_engine_for
from conftest import PG_URL

FLEET_TABLES = {
    "products",
    "device_groups",
    "app_signing_keys",
    "app_images",
    "deployments",
    "deployment_images",
    "device_update_status",
    "device_update_events",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on an empty database (a throwaway schema on PostgreSQL)."""
    if request.param == "sqlite":
        engine = create_engine_for(f"sqlite:///{tmp_path / 'm.db'}")
        yield engine
        engine.dispose()
        return
    schema = f"bastion_mig_{secrets.token_hex(6)}"
    admin = create_engine_for(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_engine_for(url.render_as_string(hide_password=False))
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_upgrade_keeps_existing_rows_and_downgrade_removes_the_fleet(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    command.upgrade(config, "0001")
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": now})
        conn.execute(
            text(
                "INSERT INTO os_images (tenant_id, measurement, component_id, version, security_version, size, "
                "published_at) VALUES ('t1', :m, 'c', '1.0.0', 1, 10, :now)"
            ),
            {"m": "ab" * 32, "now": now},
        )
        conn.execute(
            text("INSERT INTO devices (device_id, tenant_id, claimed_at, claimed_by) VALUES (:d, 't1', :now, 'x')"),
            {"d": "cd" * 32, "now": now},
        )
    command.upgrade(config, "0002_fleet")
    assert _revision(empty_engine) == "0002_fleet"
    assert set(inspect(empty_engine).get_table_names()) >= FLEET_TABLES
    with empty_engine.connect() as conn:
        # Images published before feeds existed are on retail; devices start in no group.
        assert conn.execute(text("SELECT feed, promoted_at FROM os_images")).one() == ("retail", None)
        assert conn.execute(text("SELECT group_id FROM devices")).one() == (None,)
    assert {i["name"] for i in inspect(empty_engine).get_indexes("devices")} >= {
        "ix_devices_tenant_id",
        "ix_devices_group_id",
    }
    command.downgrade(config, "0001")
    assert _revision(empty_engine) == "0001"
    names = set(inspect(empty_engine).get_table_names())
    assert not FLEET_TABLES & names
    assert "group_id" not in {c["name"] for c in inspect(empty_engine).get_columns("devices")}
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM devices")).scalar() == 1
    command.upgrade(config, "0002_fleet")
    assert _revision(empty_engine) == "0002_fleet"
