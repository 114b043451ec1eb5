"""The service's appraisal (ADR 0014) accepts what a real emulated boot chain attests, through an A/B update.

A trial boot of a new OS attests with the old anti-rollback counter (the fuse is
raised only at confirm), so appraisal must accept a counter below the image's
security version; after confirm the counter equals it. A chip whose debug port
was never locked is refused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _ab_world import NOW, AbDevice, AbWorld, make_ab_world

from bastion.boot.factory import flash_os, manufacture_device
from bastion.crypto.keys import generate_private_key, public_key_bytes
from bastion.service.attestation.appraisal import Rule, appraise, verdict
from bastion.service.attestation.errors import FailureCode
from bastion.service.attestation.verifier import VerifiedEvidence, verify_evidence


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> AbWorld:
    return make_ab_world(tmp_path_factory.mktemp("appraisal"))


def evidence(world: AbWorld, device: AbDevice) -> VerifiedEvidence:
    """Ask the device's monitor for an EAT and verify it as the service does."""
    token = device.ok(
        "sign_attestation",
        {
            "nonce": os.urandom(16),
            "key_to_certify": public_key_bytes(generate_private_key().public_key()),
            "installed_apps": [],
            "iat": int(NOW.timestamp()),
        },
    )["eat"]
    assert isinstance(token, bytes)
    return verify_evidence(token, trust_anchors=[world.vendor.ca_cert], now=NOW)


def test_a_trial_boot_and_its_confirmation_pass_appraisal(world: AbWorld, tmp_path: Path) -> None:
    device = world.device("updated")
    device.boot()
    first = evidence(world, device)
    assert (first.claims.rollback_counters["os"], first.tcb_info.svn) == (1, 1)
    assert appraise(first, os_security_version=1, development=False) == ()

    device.ok("install_os", {"path": str(device.stage(world.v110))})
    trial = device.boot()
    assert trial.trial
    during = evidence(world, device)
    assert (during.claims.rollback_counters["os"], during.tcb_info.svn, during.os_version) == (1, 2, "1.1.0")
    assert appraise(during, os_security_version=2, development=False) == ()  # the fuse lags until confirm

    device.ok("confirm_boot")
    after = evidence(world, device)
    assert after.claims.rollback_counters["os"] == 2
    assert appraise(after, os_security_version=2, development=False) == ()
    device.boot()
    assert appraise(evidence(world, device), os_security_version=2, development=False) == ()


def test_a_chip_whose_debug_port_was_never_locked_is_refused(world: AbWorld, tmp_path: Path) -> None:
    dev = tmp_path / "unlocked"
    manufacture_device(dev, world.vendor, now=NOW)
    # As a chip that left the factory unlocked: clear the fuse file's debug bit (the emulator never clears it).
    fuses_path = dev / "chip" / "fuses.json"
    state = json.loads(fuses_path.read_text())
    assert state["debug_locked"] is True
    fuses_path.write_text(json.dumps({**state, "debug_locked": False}))
    flash_os(dev, world.v100)
    device = AbDevice(dev)
    device.boot()
    findings = appraise(evidence(world, device), os_security_version=1, development=False)
    assert [f.rule for f in findings] == [Rule.DEBUG]
    refusal = verdict(findings, relaxed=frozenset(), device_id="x")
    assert refusal is not None
    assert refusal.code is FailureCode.DEBUG_UNLOCKED
    assert appraise(evidence(world, device), os_security_version=1, development=True) == ()
