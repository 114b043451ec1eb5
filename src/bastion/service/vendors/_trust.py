"""What the two service-wide trust stores (vendor CAs, OS-publisher keys) do alike: add once, audited."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bastion.service.audit.service import record
from bastion.service.models import Base

__all__ = ["MAX_TRUST_NAME", "add_once"]

#: Bound on the label of a trusted vendor CA or OS-publisher key.
MAX_TRUST_NAME = 200

_Row = TypeVar("_Row", bound=Base)


def add_once(
    session: Session,
    model: type[_Row],
    ident: str,
    make: Callable[[], _Row],
    *,
    label: str,
    action: str,
    target: str,
    actor: str,
    now: dt.datetime,
) -> tuple[_Row, bool]:
    """The row with primary key ``ident``, made by ``make`` and audited if it is new; commit.

    Idempotent: an existing row (also one a concurrent call committed first) is returned
    unchanged with ``False`` and nothing is recorded.
    """
    existing = session.get(model, ident)
    if existing is not None:
        return existing, False
    row = make()
    session.add(row)
    record(session, now=now, tenant_id=None, actor=actor, action=action, target=target, detail=f"name={label}")
    try:
        session.commit()
    except IntegrityError:  # a concurrent call added it between the lookup and the commit
        session.rollback()
        existing = session.get(model, ident)
        if existing is None:
            raise
        return existing, False
    return row, True
