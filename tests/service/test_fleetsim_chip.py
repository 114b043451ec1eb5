"""The fleet simulator's chips give evidence the service's own verifier and appraisal accept (and its crash model).

The simulator must not import the service; its tests may, to check it against
the real verifier rather than against itself.
"""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pytest

from bastion.boot.vendor import Vendor, init_vendor, load_vendor
from bastion.crypto import keys
from bastion.crypto.keys import load_private_key_pem
from bastion.images.package import ImageType, build_image
from bastion.service.attestation.appraisal import appraise, verdict
from bastion.service.attestation.verifier import verify_evidence
from bastion.sim import CrashModel, OsImageFacts, SimChip, SimSetupError, parse_crash_rates

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Vendor, OsImageFacts]:
    root = tmp_path_factory.mktemp("simchip")
    init_vendor(root / "vendor", now=NOW - dt.timedelta(days=1))
    vendor = load_vendor(root / "vendor")
    image = root / "os.img"
    with image.open("wb") as out:
        build_image(
            out,
            io.BytesIO(b"runtime" * 100),
            image_type=ImageType.OS,
            component_id="00000000-0000-0000-0000-0000000000f5",
            version="1.2.0",
            security_version=3,
            key=load_private_key_pem((root / "vendor" / "os-signing.key").read_bytes()),
        )
    return vendor, OsImageFacts.read(image)


def test_evidence_verifies_and_passes_appraisal(setup: tuple[Vendor, OsImageFacts]) -> None:
    vendor, facts = setup
    chip = SimChip.manufacture(vendor, facts, seed=5, index=0, now=NOW)
    token = chip.sign_attestation(
        nonce=b"n" * 16, key_to_certify=keys.public_key_bytes(chip.tls_key.public_key()), iat=int(NOW.timestamp())
    )
    evidence = verify_evidence(token, trust_anchors=[vendor.ca_cert], now=NOW)
    assert evidence.device_id == chip.device_id
    assert evidence.os_measurement == facts.measurement.hex()
    findings = appraise(evidence, os_security_version=3, development=False)
    assert verdict(findings, relaxed=frozenset(), device_id=chip.device_id) is None


def test_seed_fixes_identity(setup: tuple[Vendor, OsImageFacts]) -> None:
    vendor, facts = setup
    ids = [
        SimChip.manufacture(vendor, facts, seed=s, index=i, now=NOW).device_id
        for s, i in ((1, 0), (1, 0), (1, 1), (2, 0))
    ]
    assert ids[0] == ids[1]
    assert len(set(ids)) == 3


def test_crash_model_draws_per_device_and_release() -> None:
    model = CrashModel({"2.0.0": 0.5, "c1@3.0.0": 1.0}, seed=3)
    devices = [f"{i:064x}" for i in range(400)]
    crashing = sum(model.crashes(d, "c0", "2.0.0") for d in devices)
    assert 150 < crashing < 250
    assert all(model.crashes(d, "c1", "3.0.0") for d in devices[:20])
    assert not any(model.crashes(d, "c0", "1.0.0") for d in devices)
    assert [model.crashes(d, "c0", "2.0.0") for d in devices] == [
        CrashModel({"2.0.0": 0.5}, seed=3).crashes(d, "c0", "2.0.0") for d in devices
    ]


@pytest.mark.parametrize("bad", ["2.0.0", "2.0.0=1.5", "=0.5", "2.0.0=x"])
def test_bad_crash_rate_is_refused(bad: str) -> None:
    with pytest.raises(SimSetupError):
        parse_crash_rates([bad])


def test_not_an_os_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x.img").write_bytes(b"not an image")
    with pytest.raises(SimSetupError):
        OsImageFacts.read(tmp_path / "x.img")


def test_crash_record_is_a_valid_batch_record() -> None:
    """The simulator's AppCrash record goes through the devreport codec both ways."""
    from bastion.crypto.error_report import ErrorBatch, decode_batch, encode_batch
    from bastion.sim.device import crash_record

    record = crash_record("c0", "2.0.0", at=100, uptime_s=5)
    batch = ErrorBatch(
        device_id="ab" * 32, batch_id="cd" * 16, iat=100, os_version="1.0.0", boot_slot="a", group_id=None,
        installed=(("c0", "2.0.0"),), records=(record,),
    )  # fmt: skip
    assert decode_batch(encode_batch(batch)) == batch
