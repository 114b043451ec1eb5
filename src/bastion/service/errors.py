"""Exceptions raised by :mod:`bastion.service` domain code.

Domain code raises these; the web layer (:mod:`bastion.service.app`) maps each
class to an HTTP status and a ``{"error": code, "detail": detail}`` body, and
the CLI turns them into one line with a hint. ``detail`` never carries
secrets or internals.

The tree::

    ServiceError
    ├── ConfigError            bad settings or an unusable master key file
    ├── InvalidRequest         the caller sent something malformed (400/422)
    │   ├── InvalidDeviceId    not 64 lowercase hex characters
    │   └── InvalidImage       not a parseable OS image package
    ├── PayloadTooLarge        body larger than its named bound (413)
    ├── Unauthenticated        missing, malformed, unknown or revoked token (401)
    ├── Forbidden              token valid but its role is too low (403)
    │   └── ClaimRefused       the proof of a claim (evidence, voucher) does not hold
    ├── NotFound               no such object for this tenant (404)
    ├── Conflict               the object already exists (409)
    │   ├── AlreadyClaimed
    │   ├── DuplicateOsImage
    │   └── TenantExists
    ├── SealedKeyError         a sealed CA key does not open under the master key
    └── CrlTooLarge            more revoked certificates than one CRL may list (503)
"""

from __future__ import annotations

__all__ = [
    "AlreadyClaimed",
    "ClaimRefused",
    "ConfigError",
    "Conflict",
    "CrlTooLarge",
    "DuplicateOsImage",
    "Forbidden",
    "InvalidDeviceId",
    "InvalidImage",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "SealedKeyError",
    "ServiceError",
    "TenantExists",
    "Unauthenticated",
]


class ServiceError(Exception):
    """Root of all service domain errors.

    Attributes:
        code: a stable, machine-readable error code (``snake_case``).
        detail: what went wrong and what to do; safe to show to the caller.
    """

    code = "service_error"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class ConfigError(ServiceError):
    """The service configuration (environment, master key file) is unusable."""

    code = "config_error"


class InvalidRequest(ServiceError):  # noqa: N818 - reads as the HTTP condition it maps to
    """The request is malformed."""

    code = "invalid_request"


class InvalidDeviceId(InvalidRequest):
    """A device ID is not 64 lowercase hex characters."""

    code = "invalid_device_id"


class InvalidImage(InvalidRequest):
    """An uploaded image is not a valid OS image package."""

    code = "invalid_image"


class PayloadTooLarge(ServiceError):  # noqa: N818 - reads as the HTTP condition it maps to
    """A request body exceeds its bound."""

    code = "payload_too_large"


class Unauthenticated(ServiceError):  # noqa: N818 - reads as the HTTP condition it maps to
    """No valid operator token was presented."""

    code = "unauthenticated"


class Forbidden(ServiceError):  # noqa: N818 - reads as the HTTP condition it maps to
    """The token's role does not allow this operation."""

    code = "forbidden"


class NotFound(ServiceError):  # noqa: N818 - reads as the HTTP condition it maps to
    """The object does not exist for the caller's tenant."""

    code = "not_found"


class Conflict(ServiceError):  # noqa: N818 - reads as the HTTP condition it maps to
    """The object already exists."""

    code = "conflict"


class AlreadyClaimed(Conflict):
    """The device has already been claimed (by this or another tenant)."""

    code = "already_claimed"


class DuplicateOsImage(Conflict):
    """An OS image with the same measurement is already known-good for the tenant."""

    code = "duplicate_os_image"


class TenantExists(Conflict):
    """A tenant with that name exists."""

    code = "tenant_exists"


class SealedKeyError(ServiceError):
    """A sealed key does not open: wrong master key, or the row was tampered with."""

    code = "sealed_key_error"


class CrlTooLarge(ServiceError):  # noqa: N818 - reads as the condition, like PayloadTooLarge
    """More revoked, unexpired certificates than one CRL may list; the previous CRL stays published."""

    code = "crl_too_large"


class ClaimRefused(Forbidden):
    """A claim's proof does not hold: bad or foreign evidence, a stale challenge, a bad voucher.

    The ``code`` names the check (``claim_challenge_invalid``, ``claim_challenge_expired``,
    ``claim_challenge_replayed``, ``claim_evidence_invalid``, ``voucher_untrusted``,
    ``voucher_wrong_tenant``, ``voucher_expired``, ``released_to_another_tenant``; docs/api.md).
    """

    code = "claim_refused"
