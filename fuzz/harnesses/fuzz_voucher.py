"""atheris harness: ownership vouchers (:func:`bastion.crypto.voucher.decode_voucher` and ``verify_voucher``).

The decoder must answer any bytes with ``MalformedInput`` and the verifier with
``MalformedInput`` or ``InvalidSignature``; anything else is a finding.
"""

from __future__ import annotations

import datetime as dt

from bastion.crypto import certs, keys
from bastion.crypto.errors import InvalidSignature, MalformedInput
from bastion.crypto.voucher import decode_voucher, sign_voucher, verify_voucher

_NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
_KEY = keys.generate_private_key()
_CA = certs.make_ca("Fuzz Vendor CA", _KEY, now=_NOW)
_DEVICE = "ab" * 32


def test_one_input(data: bytes) -> None:
    """Decode and verify ``data`` as a voucher."""
    try:
        decode_voucher(data)
    except MalformedInput:
        return
    try:
        verify_voucher(data, trusted=[_CA])
    except (MalformedInput, InvalidSignature):
        return


SEEDS: list[bytes] = [
    sign_voucher(_KEY, _CA, tenant_id="0" * 36, device_ids=[_DEVICE], now=_NOW),
    sign_voucher(_KEY, _CA, tenant_id="t", device_ids=[_DEVICE, "cd" * 32], now=_NOW),
    b"",
    b"\xd2\x84\x40\xa0\x40\x40",
]
