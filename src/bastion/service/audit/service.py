"""Recording and reading audit events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.service.models import AuditEvent

__all__ = ["NOT_IN_TENANT", "list_events", "record", "record_denied", "record_not_found"]

_MAX_ACTOR = 100
_MAX_ACTION = 64
_MAX_TARGET = 200
_MAX_DETAIL = 1000

#: The detail of every lookup that found nothing for the caller, missing or another tenant's alike.
NOT_IN_TENANT = "no such object in this tenant"


def record(
    session: Session,
    *,
    now: dt.datetime,
    tenant_id: str | None,
    actor: str,
    action: str,
    target: str,
    outcome: str = "ok",
    detail: str = "",
) -> None:
    """Add an audit event to the session; it commits with the caller's write."""
    session.add(
        AuditEvent(
            at=now,
            tenant_id=tenant_id,
            actor=actor[:_MAX_ACTOR],
            action=action[:_MAX_ACTION],
            target=target[:_MAX_TARGET],
            outcome=outcome,
            detail=detail[:_MAX_DETAIL],
        )
    )


def record_denied(
    session: Session,
    *,
    now: dt.datetime,
    tenant_id: str | None,
    actor: str,
    action: str,
    target: str,
    detail: str,
) -> None:
    """Record a denied attempt and commit it at once (the request is about to fail).

    Anything else pending in the session is rolled back first, so a denial
    never commits a half-done write.
    """
    session.rollback()
    record(
        session,
        now=now,
        tenant_id=tenant_id,
        actor=actor,
        action=action,
        target=target,
        outcome="denied",
        detail=detail,
    )
    session.commit()


def record_not_found(
    session: Session, *, now: dt.datetime, tenant_id: str, actor: str, action: str, target: str
) -> None:
    """Record a lookup that found nothing in the caller's tenant, and commit it.

    The event is the same whether the object does not exist or belongs to
    another tenant, so the caller's audit view never tells the two apart
    (issue 7, section 6: nothing in one tenant's audit reveals another tenant's
    object). The caller's own tenant is the only one written to: an outsider
    cannot write into the owner's view.
    """
    record_denied(
        session, now=now, tenant_id=tenant_id, actor=actor, action=action, target=target, detail=NOT_IN_TENANT
    )


def list_events(session: Session, tenant_id: str, *, limit: int, offset: int = 0) -> Sequence[AuditEvent]:
    """Return up to ``limit`` of the tenant's audit events, newest first, after skipping ``offset``."""
    query = (
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id)
        .order_by(AuditEvent.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return session.scalars(query).all()
