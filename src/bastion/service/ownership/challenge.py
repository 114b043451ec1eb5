"""Claim challenges: stateless nonces bound to the claiming tenant and the device, with an expiry.

A physical-access claim (``bastion device claim --dir DEV``) proves possession:
the device signs attestation evidence (the same EAT it attests with) over a
nonce that the service issued *to this tenant for this device*. The nonce has
the layout of an attestation nonce (:mod:`bastion.service.attestation.challenges`)::

    random (16) || expiry (u32 big-endian, epoch seconds) || MAC (12)
    MAC = first 12 bytes of HMAC-SHA256(claim_key,
              b"bastion-claim-v1" || len(tenant_id) (u8) || tenant_id || device_id || random || expiry)

but a separate key, ``HKDF-SHA256(master key, info=b"bastion claim challenge key
v1")``: an attestation nonce is never a claim nonce, nor the other way round.
Evidence over another tenant's claim challenge fails the MAC for the caller's
tenant (``claim_challenge_invalid``): a challenge cannot be replayed across
tenants. Single use is enforced by the caller, which inserts the nonce in the
``challenges`` table in the claim's transaction (a conflict is a replay).

The nonce code itself is :mod:`bastion.service.macnonce`, shared with attestation;
this module holds only what makes a claim nonce a claim nonce (key, domain, binding).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bastion.service import macnonce
from bastion.service.errors import ClaimRefused

__all__ = [
    "CLAIM_CHALLENGE_TTL",
    "CLAIM_KEY_INFO",
    "CLAIM_MAC_DOMAIN",
    "ClaimKey",
    "IssuedClaimChallenge",
    "check_claim_nonce",
    "issue_claim_challenge",
]

#: How long a claim challenge is valid: long enough to boot the device on the bench.
CLAIM_CHALLENGE_TTL = dt.timedelta(minutes=5)
#: Total size of a claim nonce (fits the monitor's 8..64-byte nonce bound).
CLAIM_NONCE_BYTES = macnonce.NONCE_BYTES
#: Domain separation for the MAC input (not the attestation nonce's).
CLAIM_MAC_DOMAIN = b"bastion-claim-v1"
#: HKDF info deriving the claim key from the master key (not the attestation key's).
CLAIM_KEY_INFO = b"bastion claim challenge key v1"
_MAX_TENANT_ID_BYTES = 255


def _binding(tenant_id: str, device_id: str) -> bytes:
    """What a claim nonce is issued to: ``len(tenant) (u8) || tenant || device_id``."""
    tenant = tenant_id.encode("utf-8")[:_MAX_TENANT_ID_BYTES]
    return bytes([len(tenant)]) + tenant + device_id.encode("ascii")


class ClaimKey:
    """The HMAC key that authenticates claim nonces (derived; never stored or logged)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Wrap a derived key; use :meth:`from_master_key` rather than calling this."""
        self._key = key

    @classmethod
    def from_master_key(cls, master_key: bytes) -> ClaimKey:
        """Derive the claim key: HKDF-SHA256(master key, info=:data:`CLAIM_KEY_INFO`)."""
        return cls(macnonce.derive_key(master_key, CLAIM_KEY_INFO))

    def __repr__(self) -> str:
        """Never show the key."""
        return "ClaimKey(<secret>)"

    def mac(self, tenant_id: str, device_id: str, random: bytes, expiry: bytes) -> bytes:
        """The truncated MAC binding ``random`` and ``expiry`` to the tenant and the device."""
        return macnonce.nonce_mac(self._key, CLAIM_MAC_DOMAIN, _binding(tenant_id, device_id), random, expiry)

    def issue(self, tenant_id: str, device_id: str, *, expiry: int) -> bytes:
        """A nonce for the tenant and the device expiring at ``expiry`` (epoch seconds)."""
        return macnonce.make_nonce(self._key, CLAIM_MAC_DOMAIN, _binding(tenant_id, device_id), expiry=expiry)

    def read(self, nonce: bytes, tenant_id: str, device_id: str) -> dt.datetime | None:
        """The expiry of a nonce this key issued to the tenant for the device, else None."""
        return macnonce.read_nonce(self._key, CLAIM_MAC_DOMAIN, _binding(tenant_id, device_id), nonce)


@dataclass(frozen=True)
class IssuedClaimChallenge:
    """A claim challenge as handed to the claiming operator."""

    nonce: bytes
    tenant_id: str
    device_id: str
    expires_at: dt.datetime


def issue_claim_challenge(
    key: ClaimKey, tenant_id: str, device_id: str, *, now: dt.datetime, ttl: dt.timedelta = CLAIM_CHALLENGE_TTL
) -> IssuedClaimChallenge:
    """Issue a nonce bound to ``tenant_id`` and ``device_id``, valid until ``now + ttl`` (whole seconds, up).

    The caller has validated ``device_id``. Writes nothing.
    """
    expiry = macnonce.expiry_after(now, ttl)
    nonce = key.issue(tenant_id, device_id, expiry=expiry)
    return IssuedClaimChallenge(
        nonce=nonce, tenant_id=tenant_id, device_id=device_id, expires_at=dt.datetime.fromtimestamp(expiry, dt.UTC)
    )


def check_claim_nonce(key: ClaimKey, nonce: bytes, tenant_id: str, device_id: str, *, now: dt.datetime) -> dt.datetime:
    """Check that this service issued ``nonce`` to ``tenant_id`` for ``device_id`` and that it has not expired.

    Returns:
        The nonce's expiry (for the consumed-nonce row).

    Raises:
        ClaimRefused: ``claim_challenge_invalid`` (forged, or issued to another
            tenant or for another device) or ``claim_challenge_expired``.
    """
    invalid = ClaimRefused(
        "the evidence is not over a claim challenge issued to your tenant for this device; "
        "run 'bastion device claim --dir DEV' again (it fetches a fresh challenge)",
        code="claim_challenge_invalid",
    )
    expires_at = key.read(nonce, tenant_id, device_id)
    if expires_at is None:
        raise invalid
    if now >= expires_at:
        raise ClaimRefused(
            f"the claim challenge expired at {expires_at.isoformat()}; run 'bastion device claim --dir DEV' again",
            code="claim_challenge_expired",
        )
    return expires_at
