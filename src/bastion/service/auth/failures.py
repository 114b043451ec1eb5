"""The service-wide log of failed operator authentication, bounded by construction.

A request that fails authentication proves nothing about who sent it: a token
id is public (it names the token in audit logs), so writing each failure into
the audit view of the tenant that owns the presented id would let any outsider
push that tenant's real events out of view. Failures are therefore counted per
(time window, reason) in one service-wide table, and windows older than
:attr:`~bastion.service.auth.limits.AuthLimits.auth_failure_keep` are pruned
whenever a new window opens. The table never holds more than
``keep / window * len(REASONS)`` rows, however hard it is flooded.

Example:
    >>> window_start(dt.datetime(2026, 1, 1, 12, 7, 31, tzinfo=dt.UTC), dt.timedelta(minutes=5)).isoformat()
    '2026-01-01T12:05:00+00:00'
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import CursorResult, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.service.auth.limits import AuthLimits
from bastion.service.models import AuthFailure

__all__ = ["REASONS", "count_auth_failures", "list_auth_failures", "record_auth_failure", "window_start"]

#: Why an authentication failed; each names one row per window.
REASONS = (
    "no_token",  # no Authorization header, or not a Bearer one
    "malformed_token",  # not in the bst_<id>_<secret> format
    "unknown_token",  # well-formed, but no such token id
    "wrong_secret",  # a real token id with the wrong secret
    "token_revoked",  # the right secret, but the token was revoked
    "token_expired",  # the right secret, but the token has expired
)
_MAX_TARGET = 200
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def window_start(now: dt.datetime, window: dt.timedelta) -> dt.datetime:
    """The start of the window of length ``window`` that holds ``now`` (windows align to the epoch)."""
    step = int(window.total_seconds())
    elapsed = int((now - _EPOCH).total_seconds())
    return _EPOCH + dt.timedelta(seconds=elapsed - elapsed % step)


def _bump(session: Session, start: dt.datetime, reason: str, *, now: dt.datetime, target: str) -> bool:
    result: CursorResult[Any] = session.execute(  # type: ignore[assignment] # an UPDATE gives a CursorResult
        update(AuthFailure)
        .where(AuthFailure.window_start == start, AuthFailure.reason == reason)
        .values(count=AuthFailure.count + 1, last_at=now, last_target=target)
    )
    return bool(result.rowcount)


def record_auth_failure(session: Session, *, now: dt.datetime, reason: str, target: str, limits: AuthLimits) -> None:
    """Count one failed authentication and commit (anything pending in the session is rolled back first).

    Args:
        session: database session.
        now: current time.
        reason: one of :data:`REASONS`.
        target: what was attempted, e.g. ``"GET /api/v1/whoami"`` (never the token).
        limits: the window and retention.
    """
    if reason not in REASONS:
        raise ValueError(f"unknown auth failure reason {reason!r}")
    session.rollback()
    target = target[:_MAX_TARGET]
    start = window_start(now, limits.auth_failure_window)
    if _bump(session, start, reason, now=now, target=target):
        session.commit()
        return
    # The first failure of this reason in a new window: prune old windows, open this one.
    session.execute(delete(AuthFailure).where(AuthFailure.window_start < now - limits.auth_failure_keep))
    session.add(AuthFailure(window_start=start, reason=reason, count=1, first_at=now, last_at=now, last_target=target))
    try:
        session.commit()
    except IntegrityError:
        # A concurrent request opened the same window first: count into its row.
        session.rollback()
        _bump(session, start, reason, now=now, target=target)
        session.commit()


def list_auth_failures(session: Session, *, limit: int, offset: int = 0) -> Sequence[AuthFailure]:
    """The log, newest window first (reasons in a fixed order within a window)."""
    query = (
        select(AuthFailure).order_by(AuthFailure.window_start.desc(), AuthFailure.reason).limit(limit).offset(offset)
    )
    return session.scalars(query).all()


def count_auth_failures(session: Session) -> int:
    """How many rows the log holds (for paging)."""
    return int(session.scalar(select(func.count()).select_from(AuthFailure)) or 0)
