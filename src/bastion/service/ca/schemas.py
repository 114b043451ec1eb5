"""Response and request bodies of the CA endpoints."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict, Field

from bastion.service.ca.rotation import DEFAULT_OVERLAP, MAX_OVERLAP

__all__ = ["AuthorityOut", "CertificateOut", "RotateRequest", "RotationOut"]


class AuthorityOut(BaseModel):
    """One tenant CA and where it is in its life."""

    id: int
    state: str  # signing | retiring | retired
    fingerprint: str  # hex SHA-256 of the certificate's DER
    subject: str
    not_after: dt.datetime
    created_at: dt.datetime
    retire_at: dt.datetime | None
    crl_number: int
    crl_next_update: dt.datetime | None


class RotateRequest(BaseModel):
    """How long the superseded CA stays trusted beside its successor."""

    overlap_hours: int = Field(
        strict=True, default=int(DEFAULT_OVERLAP.total_seconds() // 3600), ge=0, le=MAX_OVERLAP.days * 24
    )


class RotationOut(BaseModel):
    """The result of a rotation: the new signing CA and the one that retires at ``retiring.retire_at``."""

    successor: AuthorityOut
    retiring: AuthorityOut


class CertificateOut(BaseModel):
    """A device certificate a tenant CA issued."""

    model_config = ConfigDict(from_attributes=True)

    serial: str
    device_id: str
    ca_id: int
    issued_at: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None
    revocation_reason: str | None
