"""A device group's appraisal policy: show it, list the relaxed groups, change it (audited).

The rules themselves, and how a refusal names the failed claim, live in
:mod:`bastion.service.attestation.appraisal`; this slice only stores which of
them a tenant relaxed for which group. Relaxing weakens what a certificate
vouches for, so changing a policy takes an admin token and every change is an
audit event (``device_group.appraisal``, with the rules before and after).
A tightened policy takes effect at the group's devices' next attestation: the
attestation reads the policy whenever a rule fails, uncached.

Example:
    >>> view = set_policy(session, who, "Thermostat/Development", ["debug"], now=now)  # doctest: +SKIP
    >>> view.relaxed  # doctest: +SKIP
    ('debug',)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.service.attestation.appraisal import RELAXABLE_RULES, Rule, parse_rules
from bastion.service.audit.service import record
from bastion.service.auth.service import Principal
from bastion.service.errors import InvalidRequest
from bastion.service.fleet.service import get_group_for
from bastion.service.models import DeviceGroup, GroupAppraisalPolicy

__all__ = [
    "MAX_PAGE",
    "MAX_RULE_NAMES",
    "PolicyPage",
    "PolicyView",
    "get_policy",
    "list_policies",
    "parse_relaxed",
    "set_policy",
]

#: Bound on one page of :func:`list_policies`.
MAX_PAGE = 500
#: Bound on the number of rule names in one request (there are five rules).
MAX_RULE_NAMES = 8


@dataclass(frozen=True)
class PolicyView:
    """A group's appraisal policy.

    Attributes:
        group_id: the group.
        group_name: its name.
        relaxed: the relaxed rules' names, sorted.
        updated_at: when it last changed (None: never relaxed).
        updated_by: who changed it.
    """

    group_id: str
    group_name: str
    relaxed: tuple[str, ...]
    updated_at: dt.datetime | None
    updated_by: str | None


@dataclass(frozen=True)
class PolicyPage:
    """One page of the groups with a relaxed rule, and whether more follow."""

    items: tuple[PolicyView, ...]
    limit: int
    offset: int
    more: bool


def _view(group: DeviceGroup, row: GroupAppraisalPolicy | None) -> PolicyView:
    if row is None:
        return PolicyView(group.id, group.name, (), None, None)
    relaxed = tuple(sorted(rule.value for rule in parse_rules(row.relaxed)))
    return PolicyView(group.id, group.name, relaxed, row.updated_at, row.updated_by)


def parse_relaxed(names: Sequence[str]) -> frozenset[Rule]:
    """The rules named, each of them relaxable.

    Raises:
        InvalidRequest: an unknown rule, or one that cannot be relaxed (the detail lists the rules).
    """
    allowed = ", ".join(sorted(rule.value for rule in RELAXABLE_RULES))
    if len(names) > MAX_RULE_NAMES:
        raise InvalidRequest(f"name at most {MAX_RULE_NAMES} rules; the rules are {allowed}", code="invalid_rule")
    rules: set[Rule] = set()
    for name in names:
        try:
            rule = Rule(name)
        except ValueError:
            raise InvalidRequest(
                f"unknown appraisal rule {name[:40]!r}; the rules that can be relaxed are {allowed}",
                code="invalid_rule",
            ) from None
        if rule not in RELAXABLE_RULES:
            raise InvalidRequest(
                f"the {rule.value!r} rule cannot be relaxed (the evidence would contradict its own certificate); "
                f"the rules that can be relaxed are {allowed}",
                code="invalid_rule",
            )
        rules.add(rule)
    return frozenset(rules)


def get_policy(session: Session, who: Principal, ref: str, *, now: dt.datetime) -> PolicyView:
    """The caller's group's policy.

    Raises:
        NotFound: no such group in the caller's tenant.
    """
    group = get_group_for(session, who, ref, action="device_group.read", now=now)
    return _view(group, session.get(GroupAppraisalPolicy, group.id))


def list_policies(session: Session, who: Principal, *, limit: int, offset: int) -> PolicyPage:
    """The caller's groups that relax at least one rule, by group name, one page at a time."""
    limit = max(1, min(limit, MAX_PAGE))
    rows = session.execute(
        select(DeviceGroup, GroupAppraisalPolicy)
        .join(GroupAppraisalPolicy, GroupAppraisalPolicy.group_id == DeviceGroup.id)
        .where(GroupAppraisalPolicy.tenant_id == who.tenant_id, DeviceGroup.tenant_id == who.tenant_id)
        .order_by(DeviceGroup.name, DeviceGroup.id)
        .offset(offset)
        .limit(limit + 1)
    ).all()
    views = [_view(group, policy) for group, policy in rows]
    return PolicyPage(items=tuple(views[:limit]), limit=limit, offset=offset, more=len(views) > limit)


def set_policy(session: Session, who: Principal, ref: str, relax: Sequence[str], *, now: dt.datetime) -> PolicyView:
    """Replace the set of rules relaxed for a group; audit and commit a change.

    Args:
        session: the service database.
        who: the caller (the endpoint requires an admin).
        ref: the group's id or ``"PRODUCT/GROUP"``.
        relax: the rules to relax from now on (empty: enforce every rule).
        now: the time of the change.

    Raises:
        InvalidRequest: an unknown rule, or ``swversion``.
        NotFound: no such group in the caller's tenant.
    """
    rules = parse_relaxed(relax)
    group = get_group_for(session, who, ref, action="device_group.appraisal", now=now)
    row = session.get(GroupAppraisalPolicy, group.id)
    before = _view(group, row).relaxed
    after = tuple(sorted(rule.value for rule in rules))
    if before == after:
        return _view(group, row)
    if not after and row is not None:
        session.delete(row)  # every rule enforced again: no row (the audit log keeps the history)
        row = None
    elif after:
        if row is None:
            row = GroupAppraisalPolicy(group_id=group.id, tenant_id=who.tenant_id)
            session.add(row)
        row.relaxed = list(after)
        row.updated_at = now
        row.updated_by = who.actor[:100]
    record(
        session,
        now=now,
        tenant_id=who.tenant_id,
        actor=who.actor,
        action="device_group.appraisal",
        target=f"device_group:{group.id}",
        detail=f"relaxed: {','.join(before) or 'none'} -> {','.join(after) or 'none'}",
    )
    session.commit()
    return _view(group, row)
