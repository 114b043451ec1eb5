"""Appraisal of what verified evidence says about the boot. Pure: no database, no I/O.

The verifier (:mod:`bastion.service.attestation.verifier`) establishes *who*
sent the evidence and *what* it runs; appraisal decides whether that boot is
one the service will certify (ADR 0014). The rules, in the order they are
reported:

==========  ===========================  ===========================================
rule        failure code                 holds when
==========  ===========================  ===========================================
secboot     ``secboot_off``              claim ``oemboot`` (262) is true: the boot
                                         chain verified every stage
debug       ``debug_unlocked``           claim ``dbgstat`` (263) says debug has been
                                         off for the whole boot (RFC 9711 4.2.9:
                                         2, 3 or 4), unless the device attests with
                                         an ``appDevelopment`` capability from its
                                         tenant (claim -70010)
rollback    ``rollback_inconsistent``    the Alias certificate's DiceTcbInfo ``svn``
                                         is the security version the service
                                         recorded for the image, and the ``os``
                                         rollback counter (claim -70002) is not
                                         above it
swversion   ``swversion_mismatch``       claim ``swversion`` (271) is the Alias
                                         certificate's DiceTcbInfo ``version``
sandbox     ``sandbox_disabled``         claim -70006 is absent: the device does
                                         not run ``--insecure-no-sandbox``
==========  ===========================  ===========================================

A rollback counter *below* the image's security version is consistent: the
boot chain raises the fuse only after a new OS is confirmed (docs/design.md,
Updates), so a trial boot attests with the old counter. A counter *above* it
means the device booted an image its own fuses forbid.

A tenant may relax ``secboot``, ``debug``, ``rollback`` and ``sandbox`` for a
device group (:mod:`bastion.service.appraisal`). ``swversion`` cannot be
relaxed: a mismatch means the evidence contradicts the certificate the boot
ROM's DeviceID key signed, like a measurement mismatch.

Example:
    >>> findings = appraise(evidence, os_security_version=1, development=False)  # doctest: +SKIP
    >>> refusal = verdict(findings, relaxed=frozenset(), device_id=evidence.device_id)  # doctest: +SKIP
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass

from bastion.crypto.eat import DebugStatus
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.verifier import OS_COMPONENT, VerifiedEvidence

__all__ = [
    "LOCKED_DEBUG_STATES",
    "RELAXABLE_RULES",
    "Finding",
    "Rule",
    "appraise",
    "parse_rules",
    "verdict",
]


class Rule(enum.StrEnum):
    """An appraisal rule, named as in the API and the CLI."""

    SECBOOT = "secboot"
    DEBUG = "debug"
    ROLLBACK = "rollback"
    SWVERSION = "swversion"
    SANDBOX = "sandbox"


#: The rules a tenant may relax for a device group.
RELAXABLE_RULES = frozenset({Rule.SECBOOT, Rule.DEBUG, Rule.ROLLBACK, Rule.SANDBOX})
#: RFC 9711 4.2.9: debug was off for the whole boot (disabled since boot, or permanently).
LOCKED_DEBUG_STATES = frozenset(
    {DebugStatus.DISABLED_SINCE_BOOT, DebugStatus.DISABLED_PERMANENTLY, DebugStatus.DISABLED_FULLY_AND_PERMANENTLY}
)
#: The failure code of each rule.
_CODES = {
    Rule.SECBOOT: FailureCode.SECBOOT_OFF,
    Rule.DEBUG: FailureCode.DEBUG_UNLOCKED,
    Rule.ROLLBACK: FailureCode.ROLLBACK_INCONSISTENT,
    Rule.SWVERSION: FailureCode.SWVERSION_MISMATCH,
    Rule.SANDBOX: FailureCode.SANDBOX_DISABLED,
}
#: The order rules are reported in (the enum's order).
_ORDER = tuple(Rule)
_RELAX_HINT = "or relax the '{rule}' rule for its device group: bastion device-group appraisal set GROUP --relax {rule}"


@dataclass(frozen=True)
class Finding:
    """A rule the evidence broke.

    Attributes:
        rule: the rule.
        detail: which claim failed and what it said.
    """

    rule: Rule
    detail: str

    @property
    def code(self) -> FailureCode:
        """The failure code a refusal for this rule carries."""
        return _CODES[self.rule]


def parse_rules(names: Iterable[str]) -> frozenset[Rule]:
    """The rules named, ignoring unknown names (a stored set may predate a rule's removal)."""
    known = {rule.value: rule for rule in Rule}
    return frozenset(known[name] for name in names if name in known)


def _rollback(evidence: VerifiedEvidence, os_security_version: int | None) -> Finding | None:
    svn = evidence.tcb_info.svn
    counter = evidence.claims.rollback_counters.get(OS_COMPONENT, 0)
    if svn is None:
        return Finding(Rule.ROLLBACK, "the Alias certificate's DiceTcbInfo carries no svn (security version)")
    if os_security_version is not None and svn != os_security_version:
        return Finding(
            Rule.ROLLBACK,
            f"the Alias certificate's DiceTcbInfo svn is {svn}, but the OS image's security version is "
            f"{os_security_version}",
        )
    if counter > svn:
        return Finding(
            Rule.ROLLBACK,
            f"claim rollback counters (-70002) '{OS_COMPONENT}' is {counter}, above the image's security "
            f"version {svn}: the device booted an image its anti-rollback fuse forbids",
        )
    return None


def appraise(evidence: VerifiedEvidence, *, os_security_version: int | None, development: bool) -> tuple[Finding, ...]:
    """Apply every rule to verified evidence.

    Args:
        evidence: the verified evidence.
        os_security_version: the security version the service recorded for the
            measured OS image (None if unknown: then only the certificate and
            the counter are compared).
        development: the device attests with a good ``appDevelopment``
            capability from its tenant (debug may then be unlocked).

    Returns:
        The rules broken, in report order (empty: the boot passes).
    """
    claims = evidence.claims
    findings: list[Finding] = []
    if not claims.secboot:
        findings.append(Finding(Rule.SECBOOT, "claim oemboot (262) is false: secure boot is off"))
    if claims.dbgstat not in LOCKED_DEBUG_STATES and not development:
        findings.append(
            Finding(
                Rule.DEBUG,
                f"claim dbgstat (263) is {int(claims.dbgstat)} ({claims.dbgstat.name.lower()}): debug must be "
                "locked unless the device holds a development capability from its tenant",
            )
        )
    rollback = _rollback(evidence, os_security_version)
    if rollback is not None:
        findings.append(rollback)
    version = evidence.tcb_info.version
    if version is None or claims.swversion != version:
        findings.append(
            Finding(
                Rule.SWVERSION,
                f"claim swversion (271) is {claims.swversion!r}, but the Alias certificate's DiceTcbInfo "
                f"version is {version!r}",
            )
        )
    if claims.insecure_no_sandbox:
        findings.append(
            Finding(Rule.SANDBOX, "claim insecure no sandbox (-70006) is true: the device runs --insecure-no-sandbox")
        )
    return tuple(sorted(findings, key=lambda f: _ORDER.index(f.rule)))


def verdict(findings: Iterable[Finding], *, relaxed: frozenset[Rule], device_id: str) -> AttestationFailure | None:
    """The refusal for the findings a group's relaxations do not cover, or None.

    The refusal carries the code of the first rule that still fails; its
    detail names every failing claim, and the way out.
    """
    failing = [f for f in findings if not (f.rule in relaxed and f.rule in RELAXABLE_RULES)]
    if not failing:
        return None
    first = failing[0]
    detail = "; ".join(f"{f.rule.value}: {f.detail}" for f in failing)
    if first.rule in RELAXABLE_RULES:
        detail = f"{detail}; fix the device, {_RELAX_HINT.format(rule=first.rule.value)}"
    else:
        detail = f"{detail}; the evidence contradicts the Alias certificate (this rule cannot be relaxed)"
    return AttestationFailure(
        first.code, f"appraisal refused the boot: {detail}", device_id=device_id, authenticated=True
    )
