"""Migration 0006_token_expiry: existing tokens survive (never expiring), and it downgrades."""

from __future__ import annotations

import datetime as dt

from alembic import command
from sqlalchemy import Engine, inspect, text
from test_fleet_migrations import empty_engine

from bastion.service.db import alembic_config

__all__ = ["empty_engine"]

REVISION = "0006_token_expiry"
BEFORE = "0004_capabilities"


def test_upgrade_keeps_tokens_without_expiry_and_downgrade_drops_the_new_schema(empty_engine: Engine) -> None:
    config = alembic_config(empty_engine)
    command.upgrade(config, BEFORE)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with empty_engine.begin() as conn:
        conn.execute(text("INSERT INTO tenants (id, name, created_at) VALUES ('t1', 'acme', :now)"), {"now": now})
        conn.execute(
            text(
                "INSERT INTO api_tokens (id, tenant_id, name, role, secret_hash, created_at) "
                "VALUES (:id, 't1', 'old', 'admin', :h, :now)"
            ),
            {"id": "ab" * 16, "h": b"\x00" * 32, "now": now},
        )
    command.upgrade(config, REVISION)
    assert {c["name"] for c in inspect(empty_engine).get_columns("api_tokens")} >= {"expires_at", "revoked_by"}
    assert "auth_failures" in inspect(empty_engine).get_table_names()
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT name, expires_at, revoked_by FROM api_tokens")).one() == ("old", None, None)

    command.downgrade(config, BEFORE)
    assert "auth_failures" not in inspect(empty_engine).get_table_names()
    assert not {c["name"] for c in inspect(empty_engine).get_columns("api_tokens")} & {"expires_at", "revoked_by"}
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM api_tokens")).scalar_one() == "old"
    command.upgrade(config, "head")
