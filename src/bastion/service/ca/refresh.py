"""The background task that keeps every trusted tenant CA's CRL fresh and complete.

Each API worker runs it. Every :data:`CRL_REFRESH_INTERVAL_S` it re-signs each
CRL that is missing, has less than its refresh margin left, or misses a
revocation committed after it was signed (a publish lost between the commit and
the signature). Concurrent runs are harmless: CRL numbers come from an atomic
update, and a CRL that was just re-signed by another worker is not stale.

Example:
    >>> async with crl_refresher(sessionmaker, key, clock, interval_s=CRL_REFRESH_INTERVAL_S):  # doctest: +SKIP
    ...     await serve()
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from sqlalchemy.orm import Session, sessionmaker

from bastion.service.ca.crl import DEFAULT_CRL_POLICY, CrlPolicy, refresh_all_crls
from bastion.service.periodic import PeriodicTask, periodic

__all__ = ["CRL_REFRESH_INTERVAL_S", "crl_refresher", "refresh_crls_once"]

#: How often a worker checks every CRL. A lost publish is caught up within
#: this; a CRL lives 24 h and is re-signed with 12 h left.
CRL_REFRESH_INTERVAL_S = 60.0


def refresh_crls_once(
    make_session: sessionmaker[Session], master_key: bytes, *, now: dt.datetime, policy: CrlPolicy = DEFAULT_CRL_POLICY
) -> int:
    """One refresh pass in a session of its own; returns how many CRLs were signed."""
    with make_session() as session:
        return refresh_all_crls(session, master_key=master_key, now=now, policy=policy)


@asynccontextmanager
async def crl_refresher(
    make_session: sessionmaker[Session],
    master_key: bytes,
    clock: Callable[[], dt.datetime],
    interval_s: float | None,
) -> AsyncIterator[None]:
    """Run the refresh passes (:mod:`bastion.service.periodic`) for the duration of the block; ``None`` disables it."""

    def one_pass() -> str:
        count = refresh_crls_once(make_session, master_key, now=clock())
        return f"re-signed {count} CRL(s)" if count else ""

    task = None if interval_s is None else PeriodicTask("crl_refresh", one_pass, interval_s)
    async with periodic(task):
        yield
