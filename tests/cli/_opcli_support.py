"""Run the ``bastion`` CLI in-process against a live service, logged in under named profiles."""

from __future__ import annotations

import base64
import datetime as dt
import secrets
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from bastion.cli.apps import app as cli_app
from bastion.cli.main import _register
from bastion.cli.output import CliError
from bastion.service.config import Settings
from bastion.service.models import Device


def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, settings: Settings) -> Path:
    """Point the CLI at ``settings`` and a config file in ``tmp_path``; return the config's path."""
    config = tmp_path / "operator" / "config.json"
    monkeypatch.setenv("BASTION_HOME", str(settings.home))
    monkeypatch.setenv("BASTION_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BASTION_MASTER_KEY", base64.b64encode(settings.master_key).decode())
    monkeypatch.setenv("BASTION_CONFIG", str(config))
    monkeypatch.delenv("BASTION_PROFILE", raising=False)
    monkeypatch.setenv("COLUMNS", "250")
    _register()
    return config


def invoke(*args: str, stdin: str | None = None) -> Result:
    """``bastion ARGS`` as a result (exit code, stdout, stderr, exception)."""
    _register()
    return CliRunner().invoke(cli_app, list(args), input=stdin, catch_exceptions=True)


def run(*args: str, stdin: str | None = None) -> str:
    """``bastion ARGS``'s stdout; a CliError is raised as it is, any other failure fails the test."""
    result = invoke(*args, stdin=stdin)
    if isinstance(result.exception, CliError):
        raise result.exception
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def new_device_id() -> str:
    """A random device ID (64 lowercase hex characters)."""
    return secrets.token_hex(32)


def add_device(sessions: sessionmaker[Session], tenant_id: str, device_id: str, *, group_id: str | None = None) -> None:
    """Write a claimed device's row directly, for tests that are not about claiming."""
    with sessions() as session:
        session.add(
            Device(
                device_id=device_id,
                tenant_id=tenant_id,
                claimed_at=dt.datetime.now(dt.UTC),
                claimed_by="token:test",
                group_id=group_id,
            )
        )
        session.commit()
