"""Readiness: the checks behind ``/readyz``, each bounded in time.

Example:
    >>> report = await readiness(settings, engine, now=now)  # doctest: +SKIP
    >>> report.ok, report.failed
    (False, ['database'])

The checks: the database answers; its Alembic revision is the code's head (a
worker of a newer or older release must not serve this schema); the blob store
takes a write; and every group's TUF timestamp has more than
:data:`TUF_MIN_REMAINING` left (the refresher re-signs with half its day left,
so less than this means refreshing is failing and devices will soon refuse the
metadata). The checks run concurrently in threads under :data:`CHECK_TIMEOUT_S`:
a hung database makes ``/readyz`` answer 503 ``database: timed out``, not hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import anyio.to_thread
import orjson
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

from bastion.service.config import Settings
from bastion.service.db import MIGRATIONS_DIR
from bastion.service.tuf.layout import tuf_root
from bastion.service.tuf.repository import TIMESTAMP_FILE

__all__ = [
    "CHECK_TIMEOUT_S",
    "MAX_TUF_GROUPS_CHECKED",
    "MAX_TUF_TIMESTAMP_BYTES",
    "TUF_MIN_REMAINING",
    "Readiness",
    "code_head",
    "readiness",
    "tuf_timestamps",
]

#: Bound on each check (seconds): a slow database makes the check fail, not the probe hang.
CHECK_TIMEOUT_S = 2.0
#: A group's TUF timestamp with less than this left is "near expiry" (its lifetime is 1 day,
#: re-signed with 12 h left; at 6 h the refresher has missed several runs).
TUF_MIN_REMAINING = dt.timedelta(hours=6)
#: Bound on the groups one probe reads (the rest are not checked; the count says so).
MAX_TUF_GROUPS_CHECKED = 10_000
#: Bound on one timestamp.json read.
MAX_TUF_TIMESTAMP_BYTES = 16 * 1024


@dataclass(frozen=True)
class Readiness:
    """The outcome of the checks: ``checks`` maps each name to ``"ok"`` or what failed."""

    checks: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> list[str]:
        """Names of the failed checks."""
        return [name for name, result in self.checks.items() if result != "ok"]

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return not self.failed


@functools.cache
def code_head() -> str:
    """The Alembic head revision this code ships."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    heads = ScriptDirectory.from_config(cfg).get_heads()
    return ",".join(sorted(heads))


def _check_database(engine: Engine) -> list[tuple[str, str]]:
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except Exception as exc:  # noqa: BLE001 - any driver failure means "not ready"; the type alone is reported
        return [("database", f"unavailable ({type(exc).__name__})"), ("migrations", "unknown (no database)")]
    head = ",".join(sorted(str(r) for r in rows))
    if head != code_head():
        return [("database", "ok"), ("migrations", f"database at {head or 'none'}, code at {code_head()}")]
    return [("database", "ok"), ("migrations", "ok")]


def _check_blobs(settings: Settings) -> list[tuple[str, str]]:
    base = settings.home / "blobs"
    probe = base / f".readyz-{secrets.token_hex(8)}"
    try:
        base.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, b"ok")
        finally:
            os.close(fd)
    except OSError as exc:
        return [("blobs", f"not writable ({type(exc).__name__})")]
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return [("blobs", "ok")]


def tuf_timestamps(settings: Settings) -> list[tuple[str, float, dt.datetime | None]]:
    """(group id, mtime, expiry or ``None`` if unreadable) of each group's timestamp.json, bounded."""
    base = tuf_root(settings)
    out: list[tuple[str, float, dt.datetime | None]] = []
    if not base.is_dir():
        return out
    for entry in sorted(base.iterdir())[:MAX_TUF_GROUPS_CHECKED]:
        path = entry / "metadata" / TIMESTAMP_FILE
        try:
            with path.open("rb") as fh:
                mtime = os.fstat(fh.fileno()).st_mtime
                raw = fh.read(MAX_TUF_TIMESTAMP_BYTES + 1)
        except OSError:
            continue  # not a group's repository
        try:
            if len(raw) > MAX_TUF_TIMESTAMP_BYTES:
                raise ValueError("too large")
            expires = dt.datetime.fromisoformat(orjson.loads(raw)["signed"]["expires"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError):
            out.append((entry.name, mtime, None))
            continue
        out.append((entry.name, mtime, expires))
    return out


def _check_tuf(settings: Settings, now: dt.datetime) -> list[tuple[str, str]]:
    near = [
        group
        for group, _mtime, expires in tuf_timestamps(settings)
        if expires is None or expires - now < TUF_MIN_REMAINING
    ]
    if near:
        shown = ", ".join(near[:5]) + (f" and {len(near) - 5} more" if len(near) > 5 else "")
        hours = TUF_MIN_REMAINING.total_seconds() / 3600
        return [("tuf", f"timestamp expires within {hours:g} h or is unreadable: {shown}")]
    return [("tuf", "ok")]


async def _bounded(name: str, work: Callable[[], list[tuple[str, str]]], timeout_s: float) -> list[tuple[str, str]]:
    try:
        with anyio.fail_after(timeout_s):
            return await anyio.to_thread.run_sync(work, abandon_on_cancel=True)
    except TimeoutError:
        return [(name, f"timed out after {timeout_s:g} s")]


async def readiness(
    settings: Settings, engine: Engine, *, now: dt.datetime, timeout_s: float = CHECK_TIMEOUT_S
) -> Readiness:
    """Run every check concurrently, each within ``timeout_s``."""
    results = await asyncio.gather(
        _bounded("database", lambda: _check_database(engine), timeout_s),
        _bounded("blobs", lambda: _check_blobs(settings), timeout_s),
        _bounded("tuf", lambda: _check_tuf(settings, now), timeout_s),
    )
    checks: dict[str, str] = {}
    for pairs in results:
        checks.update(pairs)
    if "migrations" not in checks:
        checks["migrations"] = "unknown (database check timed out)"
    return Readiness(checks)
