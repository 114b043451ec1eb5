"""Fuzz the attestation verifier's x5chain path (:func:`bastion.service.attestation.verifier.verify_evidence`).

The input is split into two DER certificates, ``[u16 length][Alias][DeviceID]``,
put in the ``x5chain`` of an otherwise valid EAT signed by the harness's Alias
key, and verified against the harness's vendor CA: every certificate parse and
chain check the service runs on evidence from an unauthenticated device. An
input whose first byte is ``0xff`` is taken as a whole token instead.

Documented error: :class:`AttestationFailure` (the service answers it with a
4xx and records it). Anything else would be a 500 on ``POST /attestation``.
"""

from __future__ import annotations

import datetime as dt
import struct

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto import certs, eat
from bastion.crypto.keys import public_key_bytes, ueid_from_public_key
from bastion.service.attestation.errors import AttestationFailure
from bastion.service.attestation.verifier import ChainCache, verify_evidence

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_WHOLE_TOKEN = 0xFF
_VENDOR_KEY = ec.derive_private_key(0xB457_2001, ec.SECP256R1())
_DEVICE_KEY = ec.derive_private_key(0xB457_2002, ec.SECP256R1())
_ALIAS_KEY = ec.derive_private_key(0xB457_2003, ec.SECP256R1())
_VENDOR_CA = certs.make_ca("Fuzz Silicon Vendor CA", _VENDOR_KEY, now=NOW - dt.timedelta(days=1))
_DEVICE_ID_CERT = certs.issue_device_id_cert(_VENDOR_KEY, _VENDOR_CA, _DEVICE_KEY.public_key(), now=NOW)
_MEASUREMENTS = (eat.Measurement("bootloader", b"\x11" * 32), eat.Measurement("os", b"\x22" * 32))
_TCB = certs.TcbInfo(
    vendor="bastion",
    model="emulated",
    version="1.2.3",
    svn=1,
    layer=1,
    fwids=tuple(certs.Fwid(certs.OID_SHA256, m.digest) for m in _MEASUREMENTS),
)
_ALIAS_CERT = certs.issue_alias_cert(_DEVICE_KEY, _DEVICE_ID_CERT, _ALIAS_KEY.public_key(), _TCB, now=NOW)
_CLAIMS = eat.EatClaims(
    nonce=bytes(range(16)),
    ueid=ueid_from_public_key(_DEVICE_KEY.public_key()),
    secboot=True,
    dbgstat=eat.DebugStatus.DISABLED_PERMANENTLY,
    measurements=_MEASUREMENTS,
    swname="bastion-os",
    swversion="1.2.3",
    boot_slot="A",
    rollback_counters={"os": 1},
    key_to_certify=public_key_bytes(ec.derive_private_key(0xB457_2004, ec.SECP256R1()).public_key()),
    iat=int(NOW.timestamp()),
)
_CACHE = ChainCache(64)


def _pair(alias_der: bytes, device_id_der: bytes) -> bytes:
    return struct.pack(">H", len(alias_der)) + alias_der + device_id_der


def _token(alias_der: bytes, device_id_der: bytes) -> bytes:
    return eat.sign_eat(_CLAIMS, _ALIAS_KEY, x5chain=[alias_der, device_id_der])


_ALIAS_DER = certs.certificate_der(_ALIAS_CERT)
_DEVICE_ID_DER = certs.certificate_der(_DEVICE_ID_CERT)
SEEDS: list[bytes] = [
    _pair(_ALIAS_DER, _DEVICE_ID_DER),
    _pair(_DEVICE_ID_DER, _ALIAS_DER),
    _pair(_ALIAS_DER, certs.certificate_der(_VENDOR_CA)),
    bytes([_WHOLE_TOKEN]) + _token(_ALIAS_DER, _DEVICE_ID_DER),
]
MAX_LEN = 8 * 1024


def test_one_input(data: bytes) -> None:
    """Verify an EAT whose x5chain (or whole token) comes from ``data``."""
    if data[:1] == bytes([_WHOLE_TOKEN]):
        token = data[1:]
    else:
        if len(data) < 2:
            return
        (alias_len,) = struct.unpack(">H", data[:2])
        alias_der, device_id_der = data[2 : 2 + alias_len], data[2 + alias_len :]
        if not alias_der or not device_id_der:
            return
        token = _token(alias_der, device_id_der)
    try:
        verify_evidence(token, trust_anchors=[_VENDOR_CA], now=NOW, cache=_CACHE)
    except AttestationFailure:
        return
