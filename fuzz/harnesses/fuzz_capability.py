"""Fuzz device capability files (:mod:`bastion.images.capability`).

The input is a capability file: decoded without verification (what ``bastion
device capability show`` and the device's development-mode store do), verified
against the harness CA key, and shown (its times rendered, as the CLI and the
device's event log do).

Documented error: :class:`CapabilityError`.
"""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto.keys import public_key_bytes
from bastion.images.capability import (
    CapabilityClaims,
    CapabilityKind,
    build_capability,
    decode_capability,
    verify_capability,
)
from bastion.images.errors import CapabilityError

_CA = ec.derive_private_key(0xB457_4001, ec.SECP256R1())
_DEV = ec.derive_private_key(0xB457_4002, ec.SECP256R1())
_DEVICE_ID = "ab" * 32
_NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_T = int(_NOW.timestamp())
SEEDS: list[bytes] = [
    build_capability(
        CapabilityClaims(
            capability_id="0f5b8a52-5f0e-4d55-9d38-2a3f3b1f5e01",
            kind=CapabilityKind.APP_DEVELOPMENT,
            device_id=_DEVICE_ID,
            tenant_id="acme",
            developer_keys=(public_key_bytes(_DEV.public_key()),),
            issued_at=_T - 60,
            expires_at=_T + 3600,
        ),
        _CA,
    ),
    build_capability(
        CapabilityClaims(
            capability_id="0f5b8a52-5f0e-4d55-9d38-2a3f3b1f5e02",
            kind=CapabilityKind.FIELD_SERVICING,
            device_id=_DEVICE_ID,
            tenant_id="acme",
            developer_keys=(),
            issued_at=0,
            expires_at=1,
        ),
        _CA,
    ),
]


def test_one_input(data: bytes) -> None:
    """Decode, verify and show ``data`` as a capability file."""
    try:
        capability = decode_capability(data)
    except CapabilityError:
        return
    capability.issued().isoformat()
    capability.expires().isoformat()
    _ = capability.developer_key_ids
    try:
        verify_capability(data, trusted_keys=[_CA.public_key()], device_id=_DEVICE_ID, tenant_id="acme", now=_NOW)
    except CapabilityError:
        return
