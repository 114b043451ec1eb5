"""Records of refused downloads and credential requests, bounded so that a flood cannot fill an audit view.

Every refusal is logged. An audit event is written for the first refusal of its
kind in each window (:data:`REFUSAL_WINDOW_S`): per device and reason when the
refused party is authentic (a verified device signature or a credential whose
MAC verified), else one service-wide event per reason (``tenant_id`` NULL, in no
tenant's view). The next recorded event says how many were suppressed since, so
counts are kept while rows stay bounded.

Example:
    >>> log = RefusalLog()
    >>> log.admit(("dev1", "expired"), now=100.0), log.admit(("dev1", "expired"), now=101.0)
    (0, None)
    >>> log.admit(("dev1", "expired"), now=161.0)
    1
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bastion.service.audit.service import record, record_denied
from bastion.service.eligibility.credential import CredentialError

__all__ = [
    "MAX_REFUSAL_KEYS",
    "REFUSAL_WINDOW_S",
    "RefusalLog",
    "record_download_refusal",
    "record_refusal",
    "record_symlink_refusal",
    "refusal_key",
    "suppressed_note",
]

#: At most one audit event per (device or "anonymous", reason) in this many seconds.
REFUSAL_WINDOW_S = 60.0
#: Bound on the keys remembered (oldest forgotten first; a forgotten key records again).
MAX_REFUSAL_KEYS = 4096

_log = logging.getLogger("bastion.service.eligibility")


class RefusalLog:
    """Decides which refusals become audit events (thread-safe, bounded)."""

    def __init__(self, *, window_s: float = REFUSAL_WINDOW_S, max_keys: int = MAX_REFUSAL_KEYS) -> None:
        """A log that records each key at most once per ``window_s`` seconds."""
        self._window = window_s
        self._max_keys = max_keys
        self._seen: OrderedDict[tuple[str, ...], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, key: tuple[str, ...], *, now: float) -> int | None:
        """``None``: suppressed (counted); else record now, with this many suppressed since the last record."""
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen[0] < self._window:
                self._seen[key] = (seen[0], seen[1] + 1)
                return None
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self._max_keys:
                self._seen.popitem(last=False)
            return seen[1] if seen is not None else 0


def suppressed_note(suppressed: int) -> str:
    """What a record adds when refusals of its kind were suppressed since the last one ("" for none)."""
    return f" ({suppressed} more since the last record)" if suppressed else ""


def record_refusal(
    session: Session,
    refusals: RefusalLog | None,
    key: tuple[str, ...],
    *,
    now: dt.datetime,
    tenant_id: str | None,
    actor: str,
    action: str,
    target: str,
    detail: str,
) -> bool:
    """Record a refused request (``record_denied``) unless the ``refusals`` log suppresses it in its window.

    The one path of the signed-device endpoints (status reports, download
    credentials): at most one record per ``key`` and window, the next one saying
    how many were suppressed. Without a ``refusals`` log every refusal is recorded.

    Returns:
        True if a record was written (and committed, after rolling back anything pending).
    """
    suppressed = 0 if refusals is None else refusals.admit(key, now=now.timestamp())
    if suppressed is None:
        return False
    record_denied(
        session,
        now=now,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        target=target,
        detail=detail + suppressed_note(suppressed),
    )
    return True


def refusal_key(error: CredentialError) -> tuple[str, ...]:
    """The :class:`RefusalLog` key of a refused download: the device if the credential was authentic."""
    return (error.grant.device_id if error.grant is not None else "anonymous", "download", error.reason)


def record_download_refusal(
    engine: Engine | None,
    error: CredentialError,
    *,
    group_id: str,
    path: str,
    now: dt.datetime,
    suppressed: int = 0,
) -> None:
    """Log a refused target download that :class:`RefusalLog` admitted, and write its audit event."""
    grant = error.grant
    who = f"device:{grant.device_id}" if grant is not None else "anonymous"
    _log.warning("target download refused (%s) for %s in group %s", error.reason, who, group_id)
    if engine is None:
        return
    more = suppressed_note(suppressed)
    with Session(engine) as session:
        record(
            session,
            now=now,
            tenant_id=grant.tenant_id if grant is not None else None,
            actor=who,
            action="device.download",
            target=f"group:{group_id}",
            outcome="denied",
            detail=f"{error.reason}: {path[:120]}{more}",
        )
        session.commit()


def record_symlink_refusal(
    engine: Engine | None, *, group_id: str, path: str, now: dt.datetime, suppressed: int = 0
) -> None:
    """Log a symlink the TUF static server refused to follow and write a service-wide audit event.

    A link in the tree means something other than the repository writer changed
    it (the writer never makes one): the operator should look.
    """
    _log.warning("refused a symlink in the TUF tree: %s", path[:200])
    if engine is None:
        return
    more = suppressed_note(suppressed)
    with Session(engine) as session:
        record(
            session,
            now=now,
            tenant_id=None,
            actor="tuf-static",
            action="tuf.symlink_refused",
            target=f"group:{group_id}",
            outcome="denied",
            detail=f"a symlink in the TUF tree was not followed: {path[:160]}{more}",
        )
        session.commit()
