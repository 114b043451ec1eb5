"""Rows for the console page tests, written straight into a migrated database (no HTTP).

``seed_fleet`` makes a small fleet with a known breakdown; the page tests and the
view tests both check against the numbers it documents.
"""

from __future__ import annotations

import datetime as dt
import sys
import uuid
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.orm import Session

from bastion.service.models import Attestation, Device, DeviceGroup, OsImage, Product

# The fleet helpers (image packages, an app key, an in-memory TUF publisher) live beside the service tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from fleet_world import FakePublisher, Fleet

__all__ = ["XSS", "FakeHealth", "FakePublisher", "Fleet", "SeededFleet", "device_id", "make_product", "seed_fleet"]

XSS = "<script>alert(1)</script>"


@dataclass(frozen=True)
class SeededFleet:
    """What :func:`seed_fleet` made."""

    product_id: str
    group_ids: tuple[str, str]
    device_ids: tuple[str, ...]


def device_id(n: int, prefix: str = "d") -> str:
    """A 64-hex device id, distinct per ``n`` and ``prefix``."""
    return (prefix.encode().hex() + f"{n:x}").rjust(64, "0")


def make_product(
    session: Session,
    tenant_id: str,
    *,
    now: dt.datetime,
    name: str = "widget",
    groups: tuple[str, ...] = ("Field Test", "Production"),
) -> tuple[str, list[str]]:
    """A product with ``groups`` (retail feed, UpdateAll, the second with a 02:00 + 120 min window)."""
    product = Product(id=str(uuid.uuid4()), tenant_id=tenant_id, name=name, description="", created_at=now)
    session.add(product)
    session.flush()
    ids = []
    for i, gname in enumerate(groups):
        group = DeviceGroup(
            id=str(uuid.uuid4()),
            tenant_id=tenant_id,
            product_id=product.id,
            name=gname,
            update_policy="UpdateAll",
            os_feed="retail" if i else "retail-eval",
            window_start="02:00" if i else None,
            window_minutes=120 if i else None,
            created_at=now,
            updated_at=now,
        )
        session.add(group)
        ids.append(group.id)
    session.flush()
    return product.id, ids


def seed_fleet(session: Session, tenant_id: str, *, now: dt.datetime, prefix: str = "d") -> SeededFleet:
    """Ten devices: by standing 5 ok, 2 failed, 1 expired, 1 revoked, 1 never;
    by OS 6 x 1.0.0, 3 x 1.1.0, 1 none; by group 7 first, 2 second, 1 none;
    by last seen 4 <1h, 3 <24h, 1 <7d, 1 older, 1 never.
    Attestations: in the last hour 4 ok + 1 failed, 3 hours ago 2 ok, 3 days ago 1 failed.
    """
    product_id, (g1, g2) = make_product(session, tenant_id, now=now)
    hour = dt.timedelta(hours=1)
    # (standing, os, group, last attested age)
    spec: list[tuple[str, str | None, str | None, dt.timedelta | None]] = [
        ("ok", "1.0.0", g1, hour / 2),
        ("ok", "1.0.0", g1, hour / 3),
        ("ok", "1.0.0", g1, hour / 4),
        ("ok", "1.1.0", g1, 3 * hour),
        ("ok", "1.1.0", g2, 5 * hour),
        ("failed", "1.0.0", g1, hour / 5),
        ("failed", "1.1.0", g2, 20 * hour),
        ("expired", "1.0.0", g1, 3 * 24 * hour),
        ("revoked", "1.0.0", g1, 30 * 24 * hour),
        ("never", None, None, None),
    ]
    for n, version in enumerate(("1.0.0", "1.1.0")):
        session.add(
            OsImage(
                tenant_id=tenant_id,
                measurement=f"{prefix}{n}".encode().hex().ljust(64, "0"),
                component_id=str(uuid.UUID(int=5)),
                version=version,
                security_version=1,
                size=1,
                published_at=now - 30 * 24 * hour,
                feed="retail",
            )
        )
    ids = []
    for n, (standing, os_version, group, age) in enumerate(spec):
        did = device_id(n, prefix)
        ids.append(did)
        session.add(
            Device(
                device_id=did,
                tenant_id=tenant_id,
                claimed_at=now - 60 * 24 * hour,
                claimed_by="token:test",
                revoked_at=now - hour if standing == "revoked" else None,
                last_attested_at=None if age is None else now - age,
                last_result=None if standing == "never" else ("failed" if standing == "failed" else "ok"),
                os_version=os_version,
                cert_not_after=None if age is None else (now - hour if standing == "expired" else now + 20 * hour),
                group_id=group,
            )
        )
    for result, age in [("ok", hour / 2)] * 4 + [("failed", hour / 4), ("ok", 3 * hour), ("ok", 3 * hour)]:
        session.add(Attestation(at=now - age, device_id=ids[0], tenant_id=tenant_id, result=result, reason=result))
    session.add(Attestation(at=now - 72 * hour, device_id=ids[0], tenant_id=tenant_id, result="failed", reason="x"))
    session.commit()
    return SeededFleet(product_id=product_id, group_ids=(g1, g2), device_ids=tuple(ids))


@dataclass(frozen=True)
class Health:
    """A release's health as ``errorreports.health`` answers it."""

    devices: int
    crashed_devices: int
    crash_free_rate: float | None


@dataclass
class FakeHealth:
    """An in-memory rollout health source: which devices run a release, and which of them crashed."""

    running: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    crashed: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def release_health(
        self,
        session: Session,
        tenant_id: str,
        *,
        component_id: str,
        version: str,
        since: dt.datetime,
        until: dt.datetime,
        group_id: str | None = None,
        device_ids: Collection[str] | None = None,
    ) -> Health:
        seen = self.running.get((component_id, version), set())
        if device_ids is not None:
            seen &= set(device_ids)
        crashed = len(seen & self.crashed.get((component_id, version), set()))
        return Health(len(seen), crashed, None if not seen else 1 - crashed / len(seen))

    def new_buckets(
        self,
        session: Session,
        tenant_id: str,
        *,
        component_id: str,
        version: str,
        since: dt.datetime,
        device_ids: Collection[str] | None = None,
    ) -> list[str]:
        return []
