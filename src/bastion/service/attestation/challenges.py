"""Stateless attestation challenges: MAC-authenticated nonces, consumed once in the database.

Issuing a challenge writes nothing. A nonce is 32 bytes::

    random (16) || expiry (u32 big-endian, epoch seconds) || MAC (12)
    MAC = first 12 bytes of HMAC-SHA256(challenge_key,
              b"bastion-challenge-v1" || device_id (ASCII) || random || expiry)

The challenge key is ``HKDF-SHA256(master key, info=b"bastion attestation
challenge key v1")``, so every worker process (and every replica sharing the
master key) derives the same key and accepts the others' nonces.

At attestation, :func:`check_nonce` verifies the MAC for the device the evidence
names (a nonce issued to another device, or forged, fails the same way:
``unknown_nonce``; without stored state the two cannot be told apart) and the
expiry (``nonce_expired``). Single use is enforced by the caller, which inserts
the nonce into the ``challenges`` table inside the attestation's write
transaction: that table now holds *consumed* nonces, and a primary-key conflict
is a replay (``nonce_replayed``). Consumed rows are pruned once they expired
more than :data:`CONSUMED_NONCE_RETENTION` ago; by then the expiry check refuses
the nonce before the database is consulted, and the margin covers clock skew
between workers.

The nonce code is :mod:`bastion.service.macnonce`, shared with claim challenges
(``ownership/challenge.py``), which use their own key and domain.

Example:
    >>> key = ChallengeKey.from_master_key(bytes(32))
    >>> issued = issue_challenge(key, "ab" * 32, now=NOW)  # doctest: +SKIP
    >>> check_nonce(key, issued.nonce, "ab" * 32, now=NOW)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from bastion.service import macnonce
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.devices.service import validate_device_id

__all__ = [
    "CHALLENGE_KEY_INFO",
    "CHALLENGE_MAC_DOMAIN",
    "CHALLENGE_TTL",
    "CONSUMED_NONCE_RETENTION",
    "NONCE_BYTES",
    "NONCE_MAC_BYTES",
    "NONCE_RANDOM_BYTES",
    "ChallengeKey",
    "IssuedChallenge",
    "check_nonce",
    "issue_challenge",
]

#: How long a challenge nonce is valid (issue 2: 60 s). The expiry is carried in
#: whole seconds, rounded up, so a nonce is valid for at least this long.
CHALLENGE_TTL = dt.timedelta(seconds=60)
#: Random bytes at the start of a nonce (:mod:`bastion.service.macnonce`).
NONCE_RANDOM_BYTES = macnonce.NONCE_RANDOM_BYTES
#: Bytes of the truncated HMAC-SHA256 tag.
NONCE_MAC_BYTES = macnonce.NONCE_MAC_BYTES
#: Total size of a nonce.
NONCE_BYTES = macnonce.NONCE_BYTES
#: Domain separation for the MAC input.
CHALLENGE_MAC_DOMAIN = b"bastion-challenge-v1"
#: HKDF info deriving the challenge key from the master key (not the claim key's: ownership/challenge.py).
CHALLENGE_KEY_INFO = b"bastion attestation challenge key v1"
#: A consumed nonce row is kept until its nonce expired this long ago (clock skew margin).
CONSUMED_NONCE_RETENTION = dt.timedelta(minutes=10)


class ChallengeKey:
    """The HMAC key that authenticates nonces (derived; never stored or logged)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Wrap a derived key; use :meth:`from_master_key` rather than calling this."""
        self._key = key

    @classmethod
    def from_master_key(cls, master_key: bytes) -> ChallengeKey:
        """Derive the challenge key: HKDF-SHA256(master key, info=:data:`CHALLENGE_KEY_INFO`)."""
        return cls(macnonce.derive_key(master_key, CHALLENGE_KEY_INFO))

    def __repr__(self) -> str:
        """Never show the key."""
        return "ChallengeKey(<secret>)"

    def mac(self, device_id: str, random: bytes, expiry: bytes) -> bytes:
        """The truncated MAC binding ``random`` and ``expiry`` to ``device_id``."""
        return macnonce.nonce_mac(self._key, CHALLENGE_MAC_DOMAIN, device_id.encode("ascii"), random, expiry)

    def issue(self, device_id: str, *, expiry: int) -> bytes:
        """A nonce for ``device_id`` expiring at ``expiry`` (epoch seconds)."""
        return macnonce.make_nonce(self._key, CHALLENGE_MAC_DOMAIN, device_id.encode("ascii"), expiry=expiry)

    def read(self, nonce: bytes, device_id: str) -> dt.datetime | None:
        """The expiry of a nonce this key issued to ``device_id``, else None."""
        return macnonce.read_nonce(self._key, CHALLENGE_MAC_DOMAIN, device_id.encode("ascii"), nonce)


@dataclass(frozen=True)
class IssuedChallenge:
    """A challenge as handed to the device."""

    nonce: bytes
    device_id: str
    expires_at: dt.datetime


def issue_challenge(
    key: ChallengeKey, device_id: str, *, now: dt.datetime, ttl: dt.timedelta = CHALLENGE_TTL
) -> IssuedChallenge:
    """Issue a nonce bound to ``device_id``, valid until ``now + ttl`` (rounded up to a second).

    Writes nothing: the nonce authenticates itself (see the module docstring).

    Raises:
        InvalidDeviceId: ``device_id`` is not 64 lowercase hex characters.
    """
    validate_device_id(device_id)
    expiry = macnonce.expiry_after(now, ttl)
    nonce = key.issue(device_id, expiry=expiry)
    return IssuedChallenge(nonce=nonce, device_id=device_id, expires_at=dt.datetime.fromtimestamp(expiry, dt.UTC))


def check_nonce(key: ChallengeKey, nonce: bytes, device_id: str, *, now: dt.datetime) -> dt.datetime:
    """Check that this service issued ``nonce`` to ``device_id`` and that it has not expired.

    This does not check single use: the caller consumes the nonce in the database.

    Returns:
        The nonce's expiry (for the consumed-nonce row).

    Raises:
        AttestationFailure: ``unknown_nonce`` (wrong size, forged, or issued to
            another device) or ``nonce_expired``. Both carry ``authenticated=True``:
            the caller checks the nonce only after the evidence verified.
    """
    expires_at = key.read(nonce, device_id)
    if expires_at is None:
        raise AttestationFailure(
            FailureCode.UNKNOWN_NONCE,
            "the nonce was not issued by this service for this device; fetch a new challenge",
            device_id=device_id,
            authenticated=True,
        )
    if now >= expires_at:
        raise AttestationFailure(
            FailureCode.NONCE_EXPIRED,
            "the nonce has expired; fetch a new challenge",
            device_id=device_id,
            authenticated=True,
        )
    return expires_at
