"""Download credentials: what the TUF static server checks, with one HMAC, before it serves a target.

A credential is an ASCII token, sent as ``Authorization: Bastion-Download <token>``
(a header, never the URL: URLs end up in logs and caches)::

    token   = "v1." || device_id || "." || group_id || "." || tenant_id || "." || expires || "." || mac
    mac     = base64url(HMAC-SHA256(download_key, "bastion-download-v1" || 0x00 || fields))  (unpadded)
    fields  = device_id || 0x00 || group_id || 0x00 || tenant_id || 0x00 || expires (decimal epoch seconds)

The download key is ``HKDF-SHA256(master key, info=b"bastion download credential key v1")``:
every worker and replica that shares the master key derives it, so no state is
shared and nothing is written per download. A CDN edge that holds the derived key
can run the same check (docs/adr/0013-update-eligibility.md).

The credential names the device (standing is checked when it is issued, in
:mod:`~bastion.service.eligibility.service`), the one group whose targets it opens,
and the tenant (so a refused use can be recorded in that tenant's audit). It is
valid for at most :data:`CREDENTIAL_TTL`: a device that loses its standing gets no
further target within that time.

Example:
    >>> key = DownloadKey.from_master_key(bytes(32))
    >>> token = mint_credential(key, "ab" * 32, "g1", "t1", expires=1_000)
    >>> verify_credential(key, token, group_id="g1", now=999).device_id == "ab" * 32
    True
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "CREDENTIAL_KEY_INFO",
    "CREDENTIAL_SCHEME",
    "CREDENTIAL_TTL",
    "MAX_CREDENTIAL_CHARS",
    "CredentialError",
    "DownloadGrant",
    "DownloadKey",
    "credential_from_header",
    "mint_credential",
    "verify_credential",
]

#: How long a credential opens targets: the bound on "no more images after a revocation".
CREDENTIAL_TTL = dt.timedelta(seconds=60)
#: The ``Authorization`` scheme that carries a credential.
CREDENTIAL_SCHEME = "Bastion-Download"
#: Bound on the header value we parse (a real one is about 230 characters).
MAX_CREDENTIAL_CHARS = 512
#: HKDF info deriving the download key from the master key.
CREDENTIAL_KEY_INFO = b"bastion download credential key v1"
_MAC_DOMAIN = b"bastion-download-v1\x00"
_KEY_BYTES = 32
_VERSION = "v1"
#: Characters of each field: IDs are hex or UUIDs, never a dot.
_FIELD = re.compile(r"[A-Za-z0-9_-]{1,64}")
_EXPIRES = re.compile(r"[0-9]{1,12}")
_PREFIX = CREDENTIAL_SCHEME.lower().encode("ascii") + b" "


class CredentialError(ValueError):
    """A presented credential does not open this target.

    Attributes:
        reason: ``missing``, ``malformed``, ``bad_mac``, ``expired`` or ``wrong_group``.
        grant: the credential's (authentic) fields, when its MAC verified.
    """

    def __init__(self, reason: str, detail: str, grant: DownloadGrant | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.grant = grant


@dataclass(frozen=True)
class DownloadGrant:
    """The authenticated fields of a credential."""

    device_id: str
    group_id: str
    tenant_id: str
    expires: int  # epoch seconds


class DownloadKey:
    """The HMAC key of download credentials (derived; never stored or logged)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        """Wrap a derived key; use :meth:`from_master_key` rather than calling this."""
        self._key = key

    @classmethod
    def from_master_key(cls, master_key: bytes) -> DownloadKey:
        """Derive the key: HKDF-SHA256(master key, info=:data:`CREDENTIAL_KEY_INFO`)."""
        hkdf = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=None, info=CREDENTIAL_KEY_INFO)
        return cls(hkdf.derive(master_key))

    def __repr__(self) -> str:
        """Never show the key."""
        return "DownloadKey(<secret>)"

    def mac(self, device_id: str, group_id: str, tenant_id: str, expires: str) -> str:
        """The unpadded base64url MAC over the fields."""
        message = _MAC_DOMAIN + "\x00".join((device_id, group_id, tenant_id, expires)).encode("ascii")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def mint_credential(key: DownloadKey, device_id: str, group_id: str, tenant_id: str, *, expires: int) -> str:
    """A credential for ``device_id`` opening ``group_id``'s targets until ``expires`` (epoch seconds).

    Raises:
        ValueError: a field holds a character outside ``[A-Za-z0-9_-]`` or is too long.
    """
    for value in (device_id, group_id, tenant_id):
        if not _FIELD.fullmatch(value):
            raise ValueError("credential fields are IDs of at most 64 characters [A-Za-z0-9_-]")
    stamp = str(int(expires))
    return ".".join((_VERSION, device_id, group_id, tenant_id, stamp, key.mac(device_id, group_id, tenant_id, stamp)))


def credential_from_header(value: bytes | None) -> str:
    """The token of an ``Authorization: Bastion-Download <token>`` header value.

    Raises:
        CredentialError: (``missing``) no such header or another scheme; (``malformed``) too long.
    """
    if value is None or value[: len(_PREFIX)].lower() != _PREFIX:
        raise CredentialError(
            "missing", f"a target needs a download credential: send Authorization: {CREDENTIAL_SCHEME} <credential>"
        )
    if len(value) > MAX_CREDENTIAL_CHARS:
        raise CredentialError("malformed", f"the credential is longer than {MAX_CREDENTIAL_CHARS} characters")
    try:
        return value[len(_PREFIX) :].strip().decode("ascii")
    except UnicodeDecodeError as exc:
        raise CredentialError("malformed", "the credential is not ASCII") from exc


def verify_credential(key: DownloadKey, token: str, *, group_id: str, now: float) -> DownloadGrant:
    """Check a credential for a target of ``group_id`` at ``now`` (epoch seconds).

    The MAC is checked first and in constant time; only then are the fields trusted.

    Raises:
        CredentialError: ``malformed``, ``bad_mac``, ``expired`` or ``wrong_group``.
    """
    parts = token.split(".")
    if len(parts) != 6 or parts[0] != _VERSION or len(token) > MAX_CREDENTIAL_CHARS:
        raise CredentialError("malformed", "the download credential is not one this service issues")
    _, device_id, group, tenant_id, stamp, mac = parts
    if not (_FIELD.fullmatch(device_id) and _FIELD.fullmatch(group) and _FIELD.fullmatch(tenant_id)) or not (
        _EXPIRES.fullmatch(stamp)
    ):
        raise CredentialError("malformed", "the download credential is not one this service issues")
    if not hmac.compare_digest(key.mac(device_id, group, tenant_id, stamp).encode("ascii"), mac.encode("ascii")):
        raise CredentialError("bad_mac", "the download credential was not issued by this service (or was altered)")
    grant = DownloadGrant(device_id, group, tenant_id, int(stamp))
    if now >= grant.expires:
        raise CredentialError(
            "expired", "the download credential has expired; the device fetches a fresh one and retries", grant
        )
    if group != group_id:
        raise CredentialError("wrong_group", "the download credential is for another device group", grant)
    return grant
