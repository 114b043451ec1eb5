"""The one path that records a refused signed-device request (eligibility/refusals.record_refusal)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.eligibility.refusals import RefusalLog, record_refusal, suppressed_note
from bastion.service.models import AuditEvent

T0 = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


def _refuse(session: Session, log: RefusalLog | None, at: dt.datetime, code: str = "stale_report") -> bool:
    return record_refusal(
        session, log, ("dev1", "status", code), now=at, tenant_id=None, actor="device:dev1",
        action="device.status", target="device:dev1", detail=f"{code}: why",
    )  # fmt: skip


def test_one_record_per_key_and_window_then_the_count_of_the_suppressed(
    session_factory: sessionmaker[Session],
) -> None:
    log = RefusalLog(window_s=60)
    with session_factory() as session:
        assert _refuse(session, log, T0)
        assert not _refuse(session, log, T0 + dt.timedelta(seconds=1))
        assert not _refuse(session, log, T0 + dt.timedelta(seconds=2))
        assert _refuse(session, log, T0 + dt.timedelta(seconds=3), code="device_revoked")  # another key
        assert _refuse(session, log, T0 + dt.timedelta(seconds=61))
        details = [e.detail for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        outcomes = {e.outcome for e in session.scalars(select(AuditEvent))}
    assert details == [
        "stale_report: why",
        "device_revoked: why",
        "stale_report: why (2 more since the last record)",
    ]
    assert outcomes == {"denied"}


def test_without_a_log_every_refusal_is_recorded(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        assert _refuse(session, None, T0)
        assert _refuse(session, None, T0)
        assert len(session.scalars(select(AuditEvent)).all()) == 2


def test_the_note() -> None:
    assert suppressed_note(0) == ""
    assert suppressed_note(3) == " (3 more since the last record)"
