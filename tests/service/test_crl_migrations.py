"""Migration 0007_crl_rotation: it upgrades a database with a tenant CA in it, and it downgrades."""

from __future__ import annotations

import datetime as dt

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from test_fleet_migrations import empty_engine
from test_svc_migrations import script_head

from bastion.service.db import alembic_config

__all__ = ["empty_engine"]

REVISION = "0007_crl_rotation"
NEW_CA_COLUMNS = {"retire_at", "crl_number", "crl_der", "crl_this_update", "crl_next_update"}


def test_upgrade_keeps_tenant_cas_and_downgrade_removes_the_crl_state(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    # Whatever it revises once the branches are chained (0004_capabilities on this branch).
    before = ScriptDirectory.from_config(config).get_revision(REVISION).down_revision
    assert isinstance(before, str)
    command.upgrade(config, before)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": now})
        conn.execute(
            text(
                "INSERT INTO tenant_cas (tenant_id, cert_pem, sealed_key, not_after, active, created_at) "
                "VALUES ('t1', 'pem', :key, :now, true, :now)"
            ),
            {"key": b"sealed", "now": now},
        )
    command.upgrade(config, "head")
    assert script_head()
    assert {c["name"] for c in inspect(empty_engine).get_columns("tenant_cas")} >= NEW_CA_COLUMNS
    with empty_engine.begin() as conn:
        # A CA from before has no CRL yet (the first read or the refresh task signs one) and is not superseded.
        row = conn.execute(text("SELECT crl_number, crl_der, retire_at FROM tenant_cas")).one()
        assert tuple(row) == (0, None, None)
        conn.execute(
            text(
                "INSERT INTO device_certificates (ca_id, tenant_id, device_id, serial, issued_at, not_after) "
                "VALUES (1, 't1', :d, 'ab', :now, :now)"
            ),
            {"d": "cd" * 32, "now": now},
        )
    indexes = {i["name"] for i in inspect(empty_engine).get_indexes("device_certificates")}
    assert indexes >= {"ix_device_certificates_device_id", "ix_device_certificates_ca_revoked"}
    command.downgrade(config, before)
    assert "device_certificates" not in inspect(empty_engine).get_table_names()
    assert not NEW_CA_COLUMNS & {c["name"] for c in inspect(empty_engine).get_columns("tenant_cas")}
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM tenant_cas")).scalar() == 1
    command.upgrade(config, "head")
