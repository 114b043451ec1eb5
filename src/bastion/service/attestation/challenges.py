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

Example:
    >>> key = ChallengeKey.from_master_key(bytes(32))
    >>> issued = issue_challenge(key, "ab" * 32, now=NOW)  # doctest: +SKIP
    >>> check_nonce(key, issued.nonce, "ab" * 32, now=NOW)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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
#: Random bytes at the start of a nonce (unpredictable, so it cannot be precomputed).
NONCE_RANDOM_BYTES = 16
#: Bytes of the expiry field (u32 big-endian epoch seconds).
_EXPIRY = struct.Struct(">I")
#: Bytes of the truncated HMAC-SHA256 tag (96 bits: a forgery succeeds with p = 2**-96).
NONCE_MAC_BYTES = 12
#: Total size of a nonce.
NONCE_BYTES = NONCE_RANDOM_BYTES + _EXPIRY.size + NONCE_MAC_BYTES
#: Domain separation for the MAC input.
CHALLENGE_MAC_DOMAIN = b"bastion-challenge-v1"
#: HKDF info deriving the challenge key from the master key.
CHALLENGE_KEY_INFO = b"bastion attestation challenge key v1"
#: Length of the derived challenge key.
CHALLENGE_KEY_BYTES = 32
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
        hkdf = HKDF(algorithm=hashes.SHA256(), length=CHALLENGE_KEY_BYTES, salt=None, info=CHALLENGE_KEY_INFO)
        return cls(hkdf.derive(master_key))

    def __repr__(self) -> str:
        """Never show the key."""
        return "ChallengeKey(<secret>)"

    def mac(self, device_id: str, random: bytes, expiry: bytes) -> bytes:
        """The truncated MAC binding ``random`` and ``expiry`` to ``device_id``."""
        message = CHALLENGE_MAC_DOMAIN + device_id.encode("ascii") + random + expiry
        return hmac.new(self._key, message, hashlib.sha256).digest()[:NONCE_MAC_BYTES]


@dataclass(frozen=True)
class IssuedChallenge:
    """A challenge as handed to the device."""

    nonce: bytes
    device_id: str
    expires_at: dt.datetime


def _epoch_seconds_ceil(moment: dt.datetime) -> int:
    seconds = int(moment.timestamp())
    return seconds if seconds >= moment.timestamp() else seconds + 1


def issue_challenge(
    key: ChallengeKey, device_id: str, *, now: dt.datetime, ttl: dt.timedelta = CHALLENGE_TTL
) -> IssuedChallenge:
    """Issue a nonce bound to ``device_id``, valid until ``now + ttl`` (rounded up to a second).

    Writes nothing: the nonce authenticates itself (see the module docstring).

    Raises:
        InvalidDeviceId: ``device_id`` is not 64 lowercase hex characters.
    """
    validate_device_id(device_id)
    expiry = _epoch_seconds_ceil(now + ttl)
    random = secrets.token_bytes(NONCE_RANDOM_BYTES)
    expiry_bytes = _EXPIRY.pack(expiry)
    nonce = random + expiry_bytes + key.mac(device_id, random, expiry_bytes)
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
    if len(nonce) != NONCE_BYTES:
        raise AttestationFailure(
            FailureCode.UNKNOWN_NONCE,
            "the nonce was not issued by this service for this device; fetch a new challenge",
            device_id=device_id,
            authenticated=True,
        )
    random = nonce[:NONCE_RANDOM_BYTES]
    expiry_bytes = nonce[NONCE_RANDOM_BYTES : NONCE_RANDOM_BYTES + _EXPIRY.size]
    tag = nonce[NONCE_RANDOM_BYTES + _EXPIRY.size :]
    if not hmac.compare_digest(tag, key.mac(device_id, random, expiry_bytes)):
        raise AttestationFailure(
            FailureCode.UNKNOWN_NONCE,
            "the nonce was not issued by this service for this device; fetch a new challenge",
            device_id=device_id,
            authenticated=True,
        )
    expires_at = dt.datetime.fromtimestamp(_EXPIRY.unpack(expiry_bytes)[0], dt.UTC)
    if now >= expires_at:
        raise AttestationFailure(
            FailureCode.NONCE_EXPIRED,
            "the nonce has expired; fetch a new challenge",
            device_id=device_id,
            authenticated=True,
        )
    return expires_at
