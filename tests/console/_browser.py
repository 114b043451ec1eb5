"""Browser harness: Playwright driving Debian's Chromium against a real ``bastion service run``.

The browser is ``/usr/bin/chromium`` (``executable_path``); Playwright never downloads one.
The service is a subprocess on a free loopback port (:class:`bastion.cli._localstack.LocalStack`),
with its own data directory under the test's temp directory. Screenshots go under ``tmp_path``.

Typical use (fixtures in ``tests/console/conftest.py``)::

    def test_x(console_live, console_page, shots):
        console_page.goto(console_live.url + "/console/")
        shots.take(console_page, "home")
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from bastion.cli._localstack import LocalStack
from bastion.service.config import Settings
from bastion.service.db import create_engine_for
from bastion.service.models import ConsoleSession, Device

__all__ = [
    "CHROMIUM",
    "TIMEOUT_MS",
    "LiveConsole",
    "Shots",
    "chromium_args",
    "launch",
    "require_chromium",
    "start_live_console",
]

CHROMIUM = "/usr/bin/chromium"
#: Milliseconds Playwright waits for a page or an element (the machine is shared and loaded).
TIMEOUT_MS = 30_000


def chromium_args() -> list[str]:
    """Chromium's command-line switches for the tests.

    As root (CI runs as root), Chromium refuses to start with its sandbox, which needs
    unprivileged user namespaces of a non-root user; ``--no-sandbox`` is passed then and only
    then. The browser loads nothing but the test's own service on loopback.
    """
    args = ["--disable-dev-shm-usage", "--no-first-run", "--disable-gpu"]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    return args


def require_chromium() -> None:
    """Skip when Debian's chromium or the playwright package is missing (``.ci/run`` installs both)."""
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    pytest.importorskip("playwright.sync_api")


def launch(playwright: Any) -> Any:
    """Start headless Chromium from :data:`CHROMIUM`."""
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=chromium_args())


@dataclass
class Shots:
    """Saves full-page screenshots under a directory, numbered in order."""

    root: Path
    taken: list[Path] = field(default_factory=list)

    def take(self, page: Any, name: str) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{len(self.taken):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@dataclass
class LiveConsole:
    """A running service with one tenant: its URL, admin token and database (for seeding and clocks)."""

    stack: LocalStack
    url: str
    admin_token: str
    tenant_id: str
    engine: Engine

    def token(self, role: str, name: str | None = None) -> str:
        """A new token of ``role`` minted with the CLI's local admin path."""
        from bastion.service.auth.service import issue_token

        with Session(self.engine) as session:
            minted = issue_token(
                session, self.tenant_id, name=name or f"{role}-{secrets.token_hex(3)}", role=role, now=_now()
            )
            session.commit()
            return minted.token

    def add_device(self, *, os_version: str = "1.0.0", result: str | None = "ok", **fields: Any) -> str:
        """A claimed device row (no real chip: the console only reads and writes the service's records)."""
        device_id = secrets.token_hex(32)
        with Session(self.engine) as session:
            session.add(
                Device(
                    device_id=device_id,
                    tenant_id=self.tenant_id,
                    claimed_at=_now(),
                    claimed_by="test",
                    os_version=os_version,
                    last_result=result,
                    last_attested_at=_now() if result else None,
                    **fields,
                )
            )
            session.commit()
        return device_id

    def age_sessions(self, by: dt.timedelta) -> None:
        """Move every console session's clock back by ``by`` (the service runs on the real clock)."""
        with Session(self.engine) as session:
            for row in session.scalars(select(ConsoleSession)).all():
                row.last_seen_at -= by
                row.created_at -= by
            session.commit()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def start_live_console(root: Path) -> LiveConsole:
    """Start a service under ``root`` and create its tenant ``acme``."""
    stack = LocalStack(root)
    created = stack.bastion_json("tenant", "create", "acme")
    url = stack.start_service()
    settings = Settings.from_env(stack.env())
    engine = create_engine_for(settings.database_url)
    return LiveConsole(
        stack=stack, url=url, admin_token=created["token"], tenant_id=created["tenant_id"], engine=engine
    )
