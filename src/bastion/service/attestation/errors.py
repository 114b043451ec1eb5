"""Exceptions raised by :mod:`bastion.service.attestation`.

The tree::

    AttestationError
    └── AttestationFailure    the device's evidence was refused; carries a stable
                              ``code`` (a :class:`FailureCode`), a ``detail`` that
                              says what to do next, and the device ID the
                              evidence claimed (if it could be read)

Only "the device sent something bad" is modelled here. Infrastructure faults
(the database, a missing tenant CA) are not the device's fault and propagate as
their own errors, which the web layer turns into a 5xx.
"""

from __future__ import annotations

import enum

__all__ = ["AttestationError", "AttestationFailure", "FailureCode"]


class FailureCode(enum.StrEnum):
    """Why an attestation was refused, in the order the checks run (docs/api.md)."""

    EVIDENCE_TOO_LARGE = "evidence_too_large"
    MALFORMED_EVIDENCE = "malformed_evidence"
    UNTRUSTED_CHAIN = "untrusted_chain"
    UEID_MISMATCH = "ueid_mismatch"
    BAD_SIGNATURE = "bad_signature"
    MEASUREMENT_MISMATCH = "measurement_mismatch"
    UNKNOWN_NONCE = "unknown_nonce"
    NONCE_EXPIRED = "nonce_expired"
    NONCE_REPLAYED = "nonce_replayed"
    DEVICE_UNCLAIMED = "device_unclaimed"
    DEVICE_REVOKED = "device_revoked"
    UNKNOWN_OS = "unknown_os"
    OS_REVOKED = "os_revoked"
    # The device capability the evidence carries (docs/compartments.md, "Development mode").
    CAPABILITY_MALFORMED = "capability_malformed"
    CAPABILITY_UNTRUSTED = "capability_untrusted"
    CAPABILITY_BAD_SIGNATURE = "capability_bad_signature"
    CAPABILITY_WRONG_DEVICE = "capability_wrong_device"
    CAPABILITY_WRONG_TENANT = "capability_wrong_tenant"
    CAPABILITY_EXPIRED = "capability_expired"
    CAPABILITY_REVOKED = "capability_revoked"
    # Appraisal of what the evidence says about the boot (docs/api.md, "Appraisal"; ADR 0014).
    SECBOOT_OFF = "secboot_off"
    DEBUG_UNLOCKED = "debug_unlocked"
    ROLLBACK_INCONSISTENT = "rollback_inconsistent"
    SWVERSION_MISMATCH = "swversion_mismatch"
    SANDBOX_DISABLED = "sandbox_disabled"


class AttestationError(Exception):
    """Root of all errors raised by :mod:`bastion.service.attestation`."""


class AttestationFailure(AttestationError):  # noqa: N818 - a verdict, named as in the API docs
    """The evidence was refused.

    Attributes:
        code: the stable failure code, safe to show to the device.
        detail: a human-readable explanation; never contains secrets or internals.
        device_id: the device ID the evidence claimed, or ``None`` when the
            evidence could not be read far enough to know it.
        authenticated: True once the chain and the signature verified, so the
            named device really sent this evidence; before that ``device_id``
            is only a claim.
    """

    def __init__(
        self, code: FailureCode, detail: str, *, device_id: str | None = None, authenticated: bool = False
    ) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail
        self.device_id = device_id
        self.authenticated = authenticated

    @property
    def malformed(self) -> bool:
        """True when the evidence could not be parsed (HTTP 400/413, not 403)."""
        return self.code in (FailureCode.MALFORMED_EVIDENCE, FailureCode.EVIDENCE_TOO_LARGE)
