"""Migration 0003_insecure_no_sandbox: it keeps earlier attestation rows (NULL), and downgrades."""

from __future__ import annotations

import datetime as dt

from alembic import command
from sqlalchemy import Engine, inspect, text
from test_fleet_migrations import _revision, empty_engine  # noqa: F401 - the fixture, on SQLite and PostgreSQL

from bastion.service.db import alembic_config

_INSERT = text(
    "INSERT INTO attestations (at, device_id, tenant_id, result, reason, detail) "
    "VALUES (:at, :d, NULL, 'failed', 'bad_chain', '')"
)


def _columns(engine: Engine) -> set[str]:
    return {c["name"] for c in inspect(engine).get_columns("attestations")}


def test_upgrade_keeps_rows_with_null_and_downgrade_drops_the_column(empty_engine: Engine) -> None:  # noqa: F811
    config = alembic_config(empty_engine)
    command.upgrade(config, "0002_fleet")
    at = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    with empty_engine.begin() as conn:
        conn.execute(_INSERT, {"at": at, "d": "ab" * 32})
    command.upgrade(config, "0003_insecure_no_sandbox")
    assert _revision(empty_engine) == "0003_insecure_no_sandbox"
    assert "insecure_no_sandbox" in _columns(empty_engine)
    with empty_engine.begin() as conn:
        assert conn.execute(text("SELECT insecure_no_sandbox FROM attestations")).one() == (None,)
        conn.execute(text("UPDATE attestations SET insecure_no_sandbox = :v"), {"v": True})
        assert conn.execute(text("SELECT insecure_no_sandbox FROM attestations")).one() == (True,)
    command.downgrade(config, "0002_fleet")
    assert _revision(empty_engine) == "0002_fleet"
    assert "insecure_no_sandbox" not in _columns(empty_engine)
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM attestations")).scalar() == 1
    command.upgrade(config, "head")
    assert "insecure_no_sandbox" in _columns(empty_engine)
