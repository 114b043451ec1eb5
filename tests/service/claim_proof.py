"""Claims with proof, for tests: evidence over a claim challenge, and vendor vouchers.

Tests that are not about claiming write ``Device`` rows directly
(:class:`attest_world.World`); these helpers go through the real claim endpoints.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from typing import Any

from attest_sim import SimDevice, SimVendor
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.voucher import sign_voucher
from bastion.service.models import Device
from conftest import bearer

__all__ = [
    "add_device_row",
    "b64",
    "claim_challenge",
    "claim_evidence",
    "claim_with_evidence",
    "claim_with_voucher",
    "voucher_for",
]


def b64(data: bytes) -> str:
    """Unpadded base64url text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def claim_challenge(client: TestClient, token: str, device_id: str) -> bytes:
    """Ask for a claim challenge bound to the token's tenant; return the nonce."""
    response = client.post("/api/v1/devices/claim/challenge", json={"device_id": device_id}, headers=bearer(token))
    assert response.status_code == 200, response.text
    nonce: str = response.json()["nonce"]
    return base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))


def claim_evidence(client: TestClient, token: str, chip: SimDevice) -> bytes:
    """The chip's EAT over a fresh claim challenge of the token's tenant."""
    return chip.eat(claim_challenge(client, token, chip.device_id))


def claim_with_evidence(client: TestClient, token: str, evidence: bytes) -> Any:
    """POST the evidence; return the response."""
    return client.post("/api/v1/devices/claim", json={"evidence": b64(evidence)}, headers=bearer(token))


def voucher_for(
    vendor: SimVendor, tenant_id: str, device_ids: Sequence[str], *, now: dt.datetime, days: int = 30
) -> bytes:
    """A voucher signed by ``vendor`` for ``device_ids`` and ``tenant_id``."""
    return sign_voucher(
        vendor.key, vendor.cert, tenant_id=tenant_id, device_ids=device_ids, now=now, lifetime=dt.timedelta(days=days)
    )


def claim_with_voucher(client: TestClient, token: str, voucher: bytes) -> Any:
    """POST the voucher; return the response."""
    return client.post("/api/v1/devices/claim/voucher", json={"voucher": b64(voucher)}, headers=bearer(token))


def add_device_row(
    sessions: sessionmaker[Session], tenant_id: str, device_id: str, *, at: dt.datetime | None = None
) -> None:
    """Write a claimed device's row directly, for tests that are not about claiming."""
    with sessions() as session:
        session.add(
            Device(
                device_id=device_id,
                tenant_id=tenant_id,
                claimed_at=at or dt.datetime.now(dt.UTC),
                claimed_by="token:test",
            )
        )
        session.commit()
