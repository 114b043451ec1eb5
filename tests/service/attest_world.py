"""Database-side setup shared by the attestation service and HTTP tests.

A :class:`World` is one tenant with its CA, one trusted vendor, a known-good OS
image, and helpers to manufacture and claim simulated devices (rows are written
directly: the claim and publish flows have their own tests).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from attest_sim import OS_DIGEST, OS_VERSION, SimDevice, SimVendor
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.models import Attestation, Device, OsImage
from bastion.service.tenants.service import CreatedTenant
from bastion.service.vendors.service import trust_vendor


@dataclass
class World:
    """A tenant, a trusted vendor and a known-good OS, on one database."""

    sessions: sessionmaker[Session]
    tenant: CreatedTenant
    vendor: SimVendor
    now: dt.datetime
    devices: list[SimDevice] = field(default_factory=list)

    @classmethod
    def build(cls, sessions: sessionmaker[Session], tenant: CreatedTenant, now: dt.datetime) -> World:
        """Trust a fresh vendor CA and publish the simulator's OS measurement for ``tenant``."""
        vendor = SimVendor.create(now=now)
        world = cls(sessions=sessions, tenant=tenant, vendor=vendor, now=now)
        with sessions() as session:
            trust_vendor(session, vendor.pem.encode("ascii"), name="sim vendor", now=now)
        world.publish_os(OS_DIGEST.hex(), OS_VERSION)
        return world

    def publish_os(self, measurement: str, version: str, *, revoked: bool = False) -> None:
        """Record a known-good OS measurement for the tenant."""
        with self.sessions() as session:
            session.add(
                OsImage(
                    tenant_id=self.tenant.tenant_id,
                    measurement=measurement,
                    component_id=str(uuid.uuid4()),
                    version=version,
                    security_version=1,
                    size=1234,
                    published_at=self.now,
                    revoked_at=self.now if revoked else None,
                )
            )
            session.commit()

    def device(self, *, claimed: bool = True, revoked: bool = False, **kw: bytes) -> SimDevice:
        """Manufacture a device from the trusted vendor, claimed by the tenant unless told otherwise."""
        chip = SimDevice.manufacture(self.vendor, now=self.now, **kw)
        if claimed:
            with self.sessions() as session:
                session.add(
                    Device(
                        device_id=chip.device_id,
                        tenant_id=self.tenant.tenant_id,
                        claimed_at=self.now,
                        claimed_by="token:test",
                        revoked_at=self.now if revoked else None,
                    )
                )
                session.commit()
        self.devices.append(chip)
        return chip

    def records(self, device_id: str | None = None) -> list[Attestation]:
        """Attestation records (for ``device_id`` if given), oldest first."""
        with self.sessions() as session:
            query = select(Attestation).order_by(Attestation.id)
            if device_id is not None:
                query = query.where(Attestation.device_id == device_id)
            return list(session.scalars(query))

    def device_row(self, device_id: str) -> Device | None:
        """The device's row, or ``None`` if unclaimed."""
        with self.sessions() as session:
            return session.get(Device, device_id)


def openssl_verify(tmp_path: Path, ca_pem: str, cert_pem: str, *, at: dt.datetime) -> subprocess.CompletedProcess[str]:
    """Run ``openssl verify -CAfile <ca> -purpose sslclient -attime <at> <cert>``."""
    ca_file = tmp_path / "tenant-ca.pem"
    cert_file = tmp_path / "device.pem"
    ca_file.write_text(ca_pem)
    cert_file.write_text(cert_pem)
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(ca_file),
            "-purpose",
            "sslclient",
            "-attime",
            str(int(at.timestamp())),
            str(cert_file),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def pem(cert: x509.Certificate) -> str:
    """A certificate as PEM text."""
    return cert.public_bytes(Encoding.PEM).decode("ascii")
