"""Ownership vouchers (bastion.crypto.voucher): round trip, strict decoding, bounds, forgery.

The service-level attacks (forged voucher, voucher for another tenant, replay
after unclaim) are in tests/service/test_ownership_api.py.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import sys
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto import certs, cose, keys
from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.voucher import (
    VOUCHER_CONTENT_TYPE,
    VoucherLimits,
    ca_fingerprint,
    decode_voucher,
    sign_voucher,
    verify_voucher,
)

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
KEY = keys.generate_private_key()
CA = certs.make_ca("Voucher Test CA", KEY, now=NOW)
TENANT = "7d0c6f0e-0000-4000-8000-000000000001"
D1, D2 = "ab" * 32, "cd" * 32


def _resign(payload: object, *, content_type: str = VOUCHER_CONTENT_TYPE, kid: bytes | None = None) -> bytes:
    kid = bytes.fromhex(ca_fingerprint(CA)) if kid is None else kid
    return cose.sign1(cbor2.dumps(payload), KEY, content_type=content_type, kid=kid)


def _payload(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "v": 1,
        "id": b"\x01" * 16,
        "tenant": TENANT,
        "devices": [D1],
        "iat": int(NOW.timestamp()),
        "exp": int(NOW.timestamp()) + 60,
    }
    return base | changes


def test_round_trip() -> None:
    blob = sign_voucher(KEY, CA, tenant_id=TENANT, device_ids=[D1, D2], now=NOW, lifetime=dt.timedelta(days=2))
    voucher = verify_voucher(blob, trusted=[CA])
    assert voucher.tenant_id == TENANT
    assert voucher.device_ids == (D1, D2)
    assert voucher.issued_at == NOW
    assert voucher.expires_at == NOW + dt.timedelta(days=2)
    assert voucher.signer_fingerprint == ca_fingerprint(CA)
    assert len(voucher.voucher_id) == 32
    other = sign_voucher(KEY, CA, tenant_id=TENANT, device_ids=[D1], now=NOW)
    assert decode_voucher(other)[1].voucher_id != voucher.voucher_id  # random IDs


def test_untrusted_or_forged_vouchers_do_not_verify() -> None:
    blob = sign_voucher(KEY, CA, tenant_id=TENANT, device_ids=[D1], now=NOW)
    stranger_key = keys.generate_private_key()
    stranger = certs.make_ca("Stranger CA", stranger_key, now=NOW)
    with pytest.raises(InvalidSignature, match="does not trust"):
        verify_voucher(blob, trusted=[stranger])
    # The stranger's key, claiming the trusted CA's kid.
    forged = sign_voucher(stranger_key, CA, tenant_id=TENANT, device_ids=[D1], now=NOW)
    with pytest.raises(InvalidSignature):
        verify_voucher(forged, trusted=[CA])
    # A payload edited after signing.
    message = cose.decode_sign1(blob)
    edited_payload = cbor2.dumps(cbor2.loads(message.payload) | {"tenant": "another"})
    edited = cbor2.dumps(cbor2.CBORTag(18, [message.protected_bytes, {}, edited_payload, message.signature]))
    with pytest.raises(InvalidSignature):
        verify_voucher(edited, trusted=[CA])


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (_payload(v=2), "version"),
        (_payload(v=True), "version"),
        (_payload(id=b"short"), "id"),
        (_payload(tenant=""), "tenant"),
        (_payload(tenant=7), "tenant"),
        (_payload(devices=[]), r"1\.\.500"),
        (_payload(devices=[D1, D1]), "twice"),
        (_payload(devices=[D1.upper()]), "64 lowercase hex"),
        (_payload(devices=[{"id": D1}]), "64 lowercase hex"),  # a map where a string belongs
        (_payload(devices=D1), r"1\.\.500"),
        (_payload(iat=-1), "iat"),
        (_payload(exp=int(NOW.timestamp())), "expires before"),
        (_payload(exp=2**64), "exp"),
        (_payload(extra=1), "exactly the keys"),
        ([1, 2], "exactly the keys"),
    ],
)
def test_strict_payload(payload: object, match: str) -> None:
    with pytest.raises(MalformedInput, match=match):
        decode_voucher(_resign(payload))


def test_header_checks() -> None:
    with pytest.raises(MalformedInput, match="content type"):
        decode_voucher(_resign(_payload(), content_type="application/eat+cwt"))
    with pytest.raises(MalformedInput, match="kid"):
        decode_voucher(_resign(_payload(), kid=b"\x00" * 4))
    eat_like = cose.sign1(b"\xa0", KEY)
    with pytest.raises(MalformedInput):
        decode_voucher(eat_like)


def test_bounds() -> None:
    limits = VoucherLimits(max_bytes=1024, max_devices=3)
    with pytest.raises(MalformedInput, match="at most 1024 bytes"):
        decode_voucher(b"\x00" * 1025, limits=limits)
    with pytest.raises(MalformedInput, match=r"1\.\.3"):
        sign_voucher(KEY, CA, tenant_id=TENANT, device_ids=[f"{i:064x}" for i in range(4)], now=NOW, limits=limits)
    with pytest.raises(MalformedInput, match="split"):
        sign_voucher(
            KEY, CA, tenant_id=TENANT, device_ids=[f"{i:064x}" for i in range(20)], now=NOW,
            limits=VoucherLimits(max_bytes=1024),
        )  # fmt: skip
    # The default bound fits the service's 64 KiB JSON body once base64-encoded.
    full = sign_voucher(KEY, CA, tenant_id=TENANT, device_ids=[f"{i:064x}" for i in range(500)], now=NOW)
    assert len(full) <= VoucherLimits().max_bytes
    assert len(full) * 4 / 3 < 60 * 1024


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_get_a_typed_error(data: bytes) -> None:
    with pytest.raises((MalformedInput, InvalidSignature)):
        verify_voucher(data, trusted=[CA])


def test_fuzz_harness_replays_its_seeds() -> None:
    path = Path(__file__).parents[2] / "fuzz" / "harnesses" / "fuzz_voucher.py"
    spec = importlib.util.spec_from_file_location("fuzz_voucher", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_voucher"] = module
    spec.loader.exec_module(module)
    for seed in module.SEEDS:
        module.test_one_input(seed)
        for cut in (1, len(seed) // 2):
            module.test_one_input(seed[:-cut])
