"""Update eligibility: short-lived, device-bound download credentials (docs/adr/0013-update-eligibility.md).

A device in good standing (claimed, not revoked, its last attestation passed, in a
device group) gets a credential from ``POST /api/v1/device/download-credential``
(:mod:`~bastion.service.eligibility.service`); the TUF static server
(:mod:`bastion.service.tuf.endpoints`) serves a *target* only to a request that
presents one for that target's group, checked with one HMAC
(:mod:`~bastion.service.eligibility.credential`). TUF metadata stays public.
"""

from __future__ import annotations

from bastion.service.eligibility.credential import (
    CREDENTIAL_SCHEME,
    CREDENTIAL_TTL,
    CredentialError,
    DownloadGrant,
    DownloadKey,
    mint_credential,
    verify_credential,
)

__all__ = [
    "CREDENTIAL_SCHEME",
    "CREDENTIAL_TTL",
    "CredentialError",
    "DownloadGrant",
    "DownloadKey",
    "mint_credential",
    "verify_credential",
]
