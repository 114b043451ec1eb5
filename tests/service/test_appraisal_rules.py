"""The pure appraisal rules (bastion.service.attestation.appraisal), with property tests over the boot claims."""

from __future__ import annotations

import dataclasses
import datetime as dt

from attest_sim import SimDevice, SimVendor
from hypothesis import given
from hypothesis import strategies as st

from bastion.crypto import eat
from bastion.service.attestation.appraisal import (
    LOCKED_DEBUG_STATES,
    RELAXABLE_RULES,
    Rule,
    appraise,
    parse_rules,
    verdict,
)
from bastion.service.attestation.errors import FailureCode
from bastion.service.attestation.verifier import VerifiedEvidence, verify_evidence

NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
VENDOR = SimVendor.create(now=NOW)
CHIP = SimDevice.manufacture(VENDOR, now=NOW)
EVIDENCE = verify_evidence(CHIP.eat(bytes(16)), trust_anchors=[VENDOR.cert], now=NOW)


def evidence_with(**changes: object) -> VerifiedEvidence:
    return dataclasses.replace(EVIDENCE, claims=dataclasses.replace(EVIDENCE.claims, **changes))


def test_an_honest_boot_passes_every_rule() -> None:
    assert appraise(EVIDENCE, os_security_version=1, development=False) == ()
    assert verdict((), relaxed=frozenset(), device_id=EVIDENCE.device_id) is None


@given(
    secboot=st.booleans(),
    dbgstat=st.sampled_from(list(eat.DebugStatus)),
    counter=st.integers(min_value=0, max_value=5),
    swversion=st.sampled_from(["1.0.0", "1.0.1"]),
    insecure=st.booleans(),
    development=st.booleans(),
    relaxed=st.frozensets(st.sampled_from(list(Rule))),
)
def test_the_verdict_refuses_exactly_the_unrelaxed_broken_rules(  # noqa: PLR0917 - one argument per claim
    secboot: bool,
    dbgstat: eat.DebugStatus,
    counter: int,
    swversion: str,
    insecure: bool,
    development: bool,
    relaxed: frozenset[Rule],
) -> None:
    evidence = evidence_with(
        secboot=secboot,
        dbgstat=dbgstat,
        rollback_counters={"os": counter},
        swversion=swversion,
        insecure_no_sandbox=insecure,
    )
    broken = {
        Rule.SECBOOT: not secboot,
        Rule.DEBUG: dbgstat not in LOCKED_DEBUG_STATES and not development,
        Rule.ROLLBACK: counter > 1,
        Rule.SWVERSION: swversion != "1.0.0",
        Rule.SANDBOX: insecure,
    }
    findings = appraise(evidence, os_security_version=1, development=development)
    assert [f.rule for f in findings] == [rule for rule in Rule if broken[rule]]
    refusal = verdict(findings, relaxed=relaxed, device_id=evidence.device_id)
    still = [r for r in Rule if broken[r] and not (r in relaxed and r in RELAXABLE_RULES)]
    if not still:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.authenticated
    assert refusal.code == findings[[f.rule for f in findings].index(still[0])].code
    for rule in still:
        assert f"{rule.value}:" in refusal.detail


def test_swversion_is_never_relaxed() -> None:
    findings = appraise(evidence_with(swversion="6.6.6"), os_security_version=1, development=False)
    refusal = verdict(findings, relaxed=frozenset(Rule), device_id=EVIDENCE.device_id)
    assert refusal is not None
    assert refusal.code is FailureCode.SWVERSION_MISMATCH
    assert "cannot be relaxed" in refusal.detail


def test_stored_rule_names_that_are_unknown_are_ignored() -> None:
    assert parse_rules(["debug", "retired-rule", "sandbox"]) == {Rule.DEBUG, Rule.SANDBOX}
