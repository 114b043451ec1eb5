"""Each crash the fuzz harnesses found (fuzz/FINDINGS.md), as a plain test of the parser's typed error.

The inputs are the saved files under ``fuzz/regressions/<harness>/`` (the replay
test in test_fuzz_harnesses.py also runs every one through its harness); here
each is pinned to the error and ``reason`` the parser now documents for it.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from bastion.boot.config import BootConfig
from bastion.boot.errors import BootConfigError
from bastion.crypto.certs import decode_tcb_info, load_certificate_der
from bastion.crypto.cose import decode_sign1
from bastion.crypto.crl import load_crl
from bastion.crypto.errors import MalformedInput
from bastion.crypto.keys import load_private_key_pem, load_public_key_pem
from bastion.images.capability import decode_capability
from bastion.images.delta import DeltaError, DeltaMethod, apply_delta
from bastion.images.errors import CapabilityError, ImageArchiveError, ImageFormatError
from bastion.images.os_payload import OS_RUNTIME, OsManifest
from bastion.images.package import inspect_image
from bastion.images.semver import semver_key
from bastion.os.updates.errors import UpdateRefusedError
from bastion.os.updates.events import EventQueue
from bastion.os.updates.pointer import parse_update_pointer
from bastion.service.attestation.errors import AttestationFailure, FailureCode
from bastion.service.attestation.verifier import verify_evidence
from bastion.service.devicestatus.report import ReportError, parse_report

ROOT = Path(__file__).resolve().parents[2]
REGRESSIONS = ROOT / "fuzz" / "regressions"


def _saved(harness: str) -> list[Path]:
    return sorted((REGRESSIONS / harness).iterdir())


def _cert_pair(data: bytes) -> tuple[bytes, bytes]:
    """The two certificates of a fuzz_x5chain input: ``[u16 len][Alias][DeviceID]``, or 0xff + a whole EAT."""
    if data[0] == 0xFF:
        alias_der, device_id_der = decode_sign1(data[1:]).x5chain
        return alias_der, device_id_der
    (alias_len,) = struct.unpack(">H", data[:2])
    return data[2 : 2 + alias_len], data[2 + alias_len :]


# --- x5chain: certificates cryptography parses lazily -------------------------------------

X5CHAIN_CASES = {
    "alias-key-unknown-curve": "unsupported key type",
    "deviceid-key-off-curve": "public key is invalid",
    "duplicate-extension": "duplicate extension",
    "invalid-x509-version": "not a DER X.509 certificate",
    "issuer-does-not-parse": "subject or issuer name does not parse",
    "subject-does-not-parse": "subject or issuer name does not parse",
}


def test_every_saved_x5chain_input_is_named() -> None:
    assert {p.name for p in _saved("x5chain")} == set(X5CHAIN_CASES)


@pytest.mark.parametrize(("name", "message"), sorted(X5CHAIN_CASES.items()))
def test_bad_x5chain_certificate_is_refused_on_load(name: str, message: str) -> None:
    alias_der, device_id_der = _cert_pair((REGRESSIONS / "x5chain" / name).read_bytes())
    errors = []
    for der in (alias_der, device_id_der):
        try:
            load_certificate_der(der)
        except MalformedInput as exc:
            errors.append(str(exc))
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize("name", sorted(X5CHAIN_CASES))
def test_bad_x5chain_is_malformed_evidence_not_a_crash(name: str) -> None:
    from bastion.crypto import certs, eat
    from bastion.crypto.keys import generate_private_key

    alias_der, device_id_der = _cert_pair((REGRESSIONS / "x5chain" / name).read_bytes())
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    vendor_key = generate_private_key()
    vendor_ca = certs.make_ca("Vendor CA", vendor_key, now=now)
    claims = eat.EatClaims(
        nonce=bytes(16),
        ueid=b"\x01" + bytes(32),
        secboot=True,
        dbgstat=eat.DebugStatus.DISABLED_PERMANENTLY,
        measurements=(eat.Measurement("os", bytes(32)),),
        swname="bastion-os",
        swversion="1.0.0",
        boot_slot="A",
        rollback_counters={"os": 1},
        key_to_certify=b"\x04" + bytes(64),
        iat=int(now.timestamp()),
    )
    token = eat.sign_eat(claims, generate_private_key(), x5chain=[alias_der, device_id_der])
    with pytest.raises(AttestationFailure) as exc:
        verify_evidence(token, trust_anchors=[vendor_ca], now=now)
    assert exc.value.code is FailureCode.MALFORMED_EVIDENCE


# --- DiceTcbInfo (inside the Alias certificate) --------------------------------------------


def test_tcb_info_with_a_length_over_an_index_is_malformed() -> None:
    # pyasn1 raised OverflowError for this nine-byte length: through the Alias cert, a 500 on POST /attestation.
    with pytest.raises(MalformedInput, match="not a DER DiceTcbInfo"):
        decode_tcb_info((REGRESSIONS / "tcb_info" / "length-over-an-index").read_bytes())


# --- PEM keys (app-signing keys, developer keys, publisher keys) ----------------------------


@pytest.mark.parametrize(
    ("name", "loader"),
    [("private-pem-unknown-key-type", load_private_key_pem), ("public-pem-unknown-curve", load_public_key_pem)],
)
def test_pem_key_of_an_unknown_type_or_curve_is_malformed(name: str, loader: Callable[[bytes], object]) -> None:
    # cryptography raises UnsupportedAlgorithm (no ValueError) for these: a 500 on POST of an app-signing key.
    with pytest.raises(MalformedInput):
        loader((REGRESSIONS / "keys" / name).read_bytes())


# --- image package headers ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["version-ends-in-newline", "version-with-an-arabic-indic-zero"])
def test_image_version_in_a_second_spelling_is_refused(name: str) -> None:
    # Both were accepted: "1.0.0\n" through re.match's "$", "1\u0660.0.0" through \d.
    with pytest.raises(ImageFormatError, match="is not a semantic version"):
        inspect_image(io.BytesIO((REGRESSIONS / "image" / name).read_bytes()))


@pytest.mark.parametrize("version", ["1.0.0-.", "1.0.0-a..b", "1.0.0-a.", "1.0.0-.a"])
def test_an_image_version_the_semver_order_cannot_rank_is_refused(version: str) -> None:
    # Found by fuzz_image in CI: the header check took "1.0.0-." (empty pre-release identifiers),
    # which semver_key then refused with a ValueError where the feeds rank versions.
    from bastion.images.package import _SEMVER

    assert _SEMVER.fullmatch(version) is None
    with pytest.raises(ValueError, match="not a semantic version"):
        semver_key(version)


@pytest.mark.parametrize("version", ["1.0.0\n", "1\u0660.0.0", "\u0661.0.0", "1.0.\u0669"])
def test_semver_key_takes_ascii_digits_only(version: str) -> None:
    with pytest.raises(ValueError, match="not a semantic version"):
        semver_key(version)


# --- the OS manifest inside OS and bootloader images --------------------------------------


def test_os_manifest_with_a_map_as_fault_is_refused() -> None:
    data = (REGRESSIONS / "os_manifest" / "fault-is-a-map").read_bytes()
    assert isinstance(json.loads(data)["fault"], dict)
    with pytest.raises(ImageArchiveError, match="fault must be"):
        OsManifest.from_json(data, OS_RUNTIME)


def test_os_manifest_with_a_text_security_version_is_refused() -> None:
    data = (REGRESSIONS / "os_manifest" / "security-version-is-text").read_bytes()
    bootloader = json.loads(data)
    with pytest.raises(ImageArchiveError, match="security_version"):
        OsManifest.from_json(json.dumps({**bootloader, "name": "bastion-os", "entry": "bastion.os"}).encode())


@pytest.mark.parametrize(
    ("field", "value"),
    [("security_version", True), ("security_version", -1), ("security_version", 2**32), ("version", 1),
     ("files", [["a", "b"]]), ("files", {"a": 1}), ("files", {"a": "00"}), ("files", {"a": "A" * 64}),
     ("files", {"a": "\u00e9" * 64}), ("format", True), ("name", None)],
)  # fmt: skip
def test_os_manifest_field_of_the_wrong_type_is_refused(field: str, value: object) -> None:
    good = json.loads(OsManifest(version="1.0.0", security_version=1, files={"a": "0" * 64}).to_json())
    OsManifest.from_json(json.dumps(good).encode())  # the baseline itself is accepted
    with pytest.raises(ImageArchiveError):
        OsManifest.from_json(json.dumps({**good, field: value}).encode())


def test_os_manifest_with_a_non_ascii_file_hash_is_refused() -> None:
    # read_payload_file compared it with hmac.compare_digest, which raised TypeError (harness archive).
    data = (REGRESSIONS / "archive" / "file-hash-not-ascii").read_bytes()[1:]  # after the selector byte
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        member = archive.extractfile("bastion-os.json")
        assert member is not None
        manifest = member.read()
    with pytest.raises(ImageArchiveError, match="SHA-256 hex"):
        OsManifest.from_json(manifest)


# --- delta OS update patches ------------------------------------------------------------


def test_hdiffpatch_patch_that_exits_its_process_is_a_delta_error(tmp_path: Path) -> None:
    # detools' C library called exit() on this patch: in-process it ended the update agent.
    # Kept out of fuzz/regressions/delta/: the harness leaves hdiffpatch to its child process.
    data = (Path(__file__).parent / "data" / "hdiffpatch-exits-the-process").read_bytes()
    (tmp_path / "old").write_bytes(bytes(8192))
    (tmp_path / "patch").write_bytes(data)
    with pytest.raises(DeltaError, match="hdiffpatch patch is malformed"):
        apply_delta(
            tmp_path / "old",
            tmp_path / "patch",
            tmp_path / "out",
            method=DeltaMethod.DETOOLS_HDIFFPATCH,
            expected_sha256="0" * 64,
        )
    assert not (tmp_path / "out").exists()


# --- the updates pointer in the attestation answer (device side) ---------------------------


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("group-id-ends-in-newline", "group_id"),
        ("tuf-base-ends-in-newline", "tuf_base"),
        ("window-start-in-arabic-indic-digits", "maintenance_window.start"),
    ],
)
def test_updates_pointer_with_a_trailing_newline_or_non_ascii_digits_is_refused(name: str, field: str) -> None:
    value = json.loads((REGRESSIONS / "update_pointer" / name).read_bytes())
    with pytest.raises(UpdateRefusedError, match=field.replace(".", r"\.")):
        parse_update_pointer(value)


# --- the bootloader's boot-config.json ------------------------------------------------------


def test_boot_config_key_with_a_lone_surrogate_is_a_boot_config_error() -> None:
    data = (REGRESSIONS / "boot_config" / "key-with-a-lone-surrogate").read_bytes()[1:]  # after the selector byte
    with pytest.raises(BootConfigError, match="not a P-256 public key"):
        BootConfig.from_json(data)


# --- capability files ----------------------------------------------------------------------


def test_capability_expiring_after_year_9999_is_malformed() -> None:
    # It used to decode, and then raise OverflowError wherever its expiry was shown.
    with pytest.raises(CapabilityError, match="exp is not an unsigned integer") as exc:
        decode_capability((REGRESSIONS / "capability" / "exp-after-year-9999").read_bytes())
    assert exc.value.reason == "malformed"


# --- status reports, service side ----------------------------------------------------------


@pytest.mark.parametrize("name", ["event-kind-is-an-array", "event-kind-is-a-map"])
def test_status_report_with_an_unhashable_event_kind_is_a_report_error(name: str) -> None:
    with pytest.raises(ReportError, match=r"events\[0\]\.kind is not one of"):
        parse_report(
            (REGRESSIONS / "status_report" / name).read_bytes(), max_events=64, max_installed=64, max_detail_chars=500
        )


# --- status reports, device side: the event queue file -------------------------------------


@pytest.mark.parametrize(
    "name",
    ["kind-is-a-list", "nested-too-deeply", "time-before-the-epoch", "time-beyond-the-service-bound", "time-is-true"],
)
def test_event_queue_drops_what_the_service_would_refuse(name: str, tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_bytes((REGRESSIONS / "event_queue" / name).read_bytes())
    queue = EventQueue(path)
    assert queue.all() == []
    assert queue.dropped == 0


def test_event_queue_truncates_texts_to_the_bounds_record_applies(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_bytes((REGRESSIONS / "event_queue" / "component-id-over-its-bound").read_bytes())
    (event,) = EventQueue(path).all()
    assert (event.at, event.kind, event.component_id, event.version) == (5, "app_failed", "c" * 64, "v" * 64)


# --- tenant CA CRLs ------------------------------------------------------------------------


def test_crl_that_repeats_an_extension_is_malformed_input() -> None:
    # cryptography's DuplicateExtension is not a ValueError; it escaped load_crl (harness crl).
    data = (REGRESSIONS / "crl" / "duplicate-extension").read_bytes()
    with pytest.raises(MalformedInput, match="repeats an extension"):
        load_crl(data)
