"""The two service-wide trust stores share one add-once path (vendors/_trust.py): idempotent, audited once."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.service.models import AuditEvent, OsPublisherKey
from bastion.service.vendors._trust import add_once
from bastion.service.vendors.os_keys import trust_os_publisher

T0 = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)


def _row(kid: str, name: str) -> OsPublisherKey:
    return OsPublisherKey(key_id=kid, name=name, public_key_pem="pem", created_at=T0, created_by="test")


def test_a_row_a_concurrent_call_committed_first_is_returned_not_raised(session_factory: sessionmaker[Session]) -> None:
    kid = "ab" * 32

    def make() -> OsPublisherKey:
        with session_factory() as other:  # the other worker wins the race after our lookup
            other.add(_row(kid, "first"))
            other.commit()
        return _row(kid, "second")

    with session_factory() as session:
        row, added = add_once(
            session, OsPublisherKey, kid, make, label="second", action="os_publisher.trust",
            target=f"os_publisher_key:{kid}", actor="test", now=T0,
        )  # fmt: skip
        assert (row.name, added) == ("first", False)
        # Our audit record went with the rolled-back insert: nothing is recorded for a row we did not add.
        assert session.scalars(select(AuditEvent).where(AuditEvent.action == "os_publisher.trust")).all() == []


def test_trusting_twice_records_once(session_factory: sessionmaker[Session]) -> None:
    pem = public_key_pem(generate_private_key().public_key())
    with session_factory() as session:
        assert trust_os_publisher(session, pem, name="Acme OS", now=T0).added
        again = trust_os_publisher(session, pem, name="renamed", now=T0)
        assert (again.added, again.key.name) == (False, "Acme OS")
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "os_publisher.trust")).all()
        assert [e.detail for e in events] == ["name=Acme OS"]
