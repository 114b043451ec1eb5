"""Read side of the device pages: the filtered device list and the parts of one device's page.

Pure functions of a SQLAlchemy session, a tenant id and bounded parameters. Every
query is scoped to the tenant, and each list is cut by a named bound.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVarTuple

from sqlalchemy import Case, Select, case, func, select
from sqlalchemy.orm import Session

from bastion.service.console.paging import PageParams
from bastion.service.models import (
    Attestation,
    AuditEvent,
    Device,
    DeviceCertificate,
    DeviceGroup,
    DeviceOwnershipEvent,
    DeviceUpdateStatus,
    ErrorEvent,
    Product,
)

_Ts = TypeVarTuple("_Ts")

__all__ = [
    "STANDINGS",
    "DeviceFilters",
    "DeviceRow",
    "attestation_series",
    "certificates",
    "device_rows",
    "error_events",
    "group_choices",
    "installed",
    "ownership_events",
    "security_events",
    "standing_counts",
]

#: The standings a device can be filtered by.
STANDINGS = ("ok", "failed", "revoked", "never")
#: Rows of each part of a device's page.
CERTIFICATE_ROWS = 10
ERROR_ROWS = 20
SECURITY_ROWS = 20
OWNERSHIP_ROWS = 20
#: Attestations drawn in a device's history chart (the newest ones).
CHART_ATTESTATIONS = 500
#: Groups offered in the filter and the assign form.
MAX_GROUP_CHOICES = 500
_HEX_PREFIX = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class DeviceFilters:
    """The device list's filters; None is no filter. ``id_prefix`` is lowercase hex."""

    id_prefix: str | None = None
    group_id: str | None = None
    os_version: str | None = None
    standing: str | None = None

    @classmethod
    def parse(
        cls, *, id_prefix: str | None, group_id: str | None, os_version: str | None, standing: str | None
    ) -> tuple[DeviceFilters, list[str]]:
        """Filters from raw query values, and a notice for each one ignored."""
        notices = []
        prefix = id_prefix.lower() if id_prefix is not None else None
        if prefix is not None and not _HEX_PREFIX.fullmatch(prefix):
            notices.append("a device ID prefix is 1 to 64 hex characters; ignored")
            prefix = None
        if standing is not None and standing not in STANDINGS:
            notices.append(f"standing is one of {', '.join(STANDINGS)}; ignored")
            standing = None
        return cls(id_prefix=prefix, group_id=group_id, os_version=os_version, standing=standing), notices


@dataclass(frozen=True)
class DeviceRow:
    """One line of the device list."""

    device_id: str
    group: str | None
    os_version: str | None
    standing: str
    last_attested_at: dt.datetime | None
    last_reason: str | None
    cert_not_after: dt.datetime | None


def _standing_expr() -> Case[str]:
    return case(
        (Device.revoked_at.is_not(None), "revoked"),
        (Device.last_attested_at.is_(None), "never"),
        (Device.last_result == "ok", "ok"),
        else_="failed",
    )


def _filtered(query: Select[*_Ts], tenant_id: str, f: DeviceFilters) -> Select[*_Ts]:
    query = query.where(Device.tenant_id == tenant_id)
    if f.id_prefix is not None:
        # Hex only (checked), so no LIKE wildcard can be in it; a range keeps the primary key index usable.
        query = query.where(Device.device_id >= f.id_prefix, Device.device_id < f.id_prefix + "g")
    if f.group_id is not None:
        query = query.where(Device.group_id == f.group_id)
    if f.os_version is not None:
        query = query.where(Device.os_version == f.os_version)
    if f.standing == "revoked":
        query = query.where(Device.revoked_at.is_not(None))
    elif f.standing == "never":
        query = query.where(Device.revoked_at.is_(None), Device.last_attested_at.is_(None))
    elif f.standing == "ok":
        query = query.where(
            Device.revoked_at.is_(None), Device.last_attested_at.is_not(None), Device.last_result == "ok"
        )
    elif f.standing == "failed":
        query = query.where(
            Device.revoked_at.is_(None),
            Device.last_attested_at.is_not(None),
            (Device.last_result != "ok") | Device.last_result.is_(None),
        )
    return query


def _standing(device: Device) -> str:
    if device.revoked_at is not None:
        return "revoked"
    if device.last_attested_at is None:
        return "never"
    return "ok" if device.last_result == "ok" else "failed"


def device_rows(session: Session, tenant_id: str, f: DeviceFilters, params: PageParams) -> list[DeviceRow]:
    """The tenant's devices matching ``f``, by device ID: ``params.fetch`` of them after ``params.offset``."""
    label = (Product.name + "/" + DeviceGroup.name).label("group_label")
    query = (
        select(Device, label)
        .outerjoin(DeviceGroup, DeviceGroup.id == Device.group_id)
        .outerjoin(Product, Product.id == DeviceGroup.product_id)
    )
    query = _filtered(query, tenant_id, f).order_by(Device.device_id).offset(params.offset).limit(params.fetch)
    return [
        DeviceRow(
            device_id=d.device_id,
            group=group,
            os_version=d.os_version,
            standing=_standing(d),
            last_attested_at=d.last_attested_at,
            last_reason=d.last_reason,
            cert_not_after=d.cert_not_after,
        )
        for d, group in session.execute(query).all()
    ]


def standing_counts(session: Session, tenant_id: str, f: DeviceFilters) -> list[tuple[str, int]]:
    """How many of the matching devices are in each standing (one GROUP BY)."""
    standing = _standing_expr().label("standing")
    query = _filtered(select(standing, func.count()), tenant_id, f).group_by(standing)
    found = {str(s): int(n) for s, n in session.execute(query).all()}
    return [(s, found.get(s, 0)) for s in STANDINGS]


def group_choices(session: Session, tenant_id: str) -> list[tuple[str, str]]:
    """``(group id, "product/group")`` of the tenant's groups, by name."""
    query = (
        select(DeviceGroup.id, Product.name, DeviceGroup.name)
        .join(Product, Product.id == DeviceGroup.product_id)
        .where(DeviceGroup.tenant_id == tenant_id)
        .order_by(Product.name, DeviceGroup.name)
        .limit(MAX_GROUP_CHOICES)
    )
    return [(gid, f"{p}/{g}") for gid, p, g in session.execute(query).all()]


def certificates(session: Session, tenant_id: str, device_id: str) -> Sequence[DeviceCertificate]:
    """The device's newest certificates."""
    query = (
        select(DeviceCertificate)
        .where(DeviceCertificate.device_id == device_id, DeviceCertificate.tenant_id == tenant_id)
        .order_by(DeviceCertificate.id.desc())
        .limit(CERTIFICATE_ROWS)
    )
    return session.scalars(query).all()


def installed(session: Session, tenant_id: str, device_id: str) -> DeviceUpdateStatus | None:
    """The update status the device last reported (its installed images), if any."""
    row = session.get(DeviceUpdateStatus, device_id)
    return row if row is not None and row.tenant_id == tenant_id else None


def error_events(session: Session, tenant_id: str, device_id: str) -> Sequence[ErrorEvent]:
    """The device's newest error-report records."""
    query = (
        select(ErrorEvent)
        .where(ErrorEvent.device_id == device_id, ErrorEvent.tenant_id == tenant_id)
        .order_by(ErrorEvent.id.desc())
        .limit(ERROR_ROWS)
    )
    return session.scalars(query).all()


def security_events(session: Session, tenant_id: str, device_id: str) -> Sequence[AuditEvent]:
    """The tenant's audit events about the device (revocations, assignments, denied attempts), newest first."""
    query = (
        select(AuditEvent)
        .where(AuditEvent.tenant_id == tenant_id, AuditEvent.target == f"device:{device_id}")
        .order_by(AuditEvent.id.desc())
        .limit(SECURITY_ROWS)
    )
    return session.scalars(query).all()


def ownership_events(session: Session, tenant_id: str, device_id: str) -> Sequence[DeviceOwnershipEvent]:
    """The device's claims, unclaims and releases by this tenant, newest first."""
    query = (
        select(DeviceOwnershipEvent)
        .where(DeviceOwnershipEvent.device_id == device_id, DeviceOwnershipEvent.tenant_id == tenant_id)
        .order_by(DeviceOwnershipEvent.id.desc())
        .limit(OWNERSHIP_ROWS)
    )
    return session.scalars(query).all()


def attestation_series(session: Session, tenant_id: str, device_id: str) -> dict[str, list[tuple[dt.datetime, float]]]:
    """Attestations ok and failed per hour, over the device's newest :data:`CHART_ATTESTATIONS`."""
    query = (
        select(Attestation.at, Attestation.result)
        .where(Attestation.device_id == device_id, Attestation.tenant_id == tenant_id)
        .order_by(Attestation.at.desc())
        .limit(CHART_ATTESTATIONS)
    )
    ok: Counter[dt.datetime] = Counter()
    failed: Counter[dt.datetime] = Counter()
    for at, result in session.execute(query).all():
        hour = at.replace(minute=0, second=0, microsecond=0)
        (ok if result == "ok" else failed)[hour] += 1
    hours = sorted(set(ok) | set(failed))
    return {
        "ok": [(h, float(ok[h])) for h in hours],
        "failed": [(h, float(failed[h])) for h in hours],
    }
