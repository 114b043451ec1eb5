"""Fuzz EAT decoding (:mod:`bastion.crypto.eat`): the claims set and the whole token.

Documented error: :class:`MalformedInput`. Also checked, because the module
promises it: an accepted claims set is byte for byte what ``encode_claims``
writes for the decoded claims (one encoding per token).
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto import eat
from bastion.crypto.errors import MalformedInput
from bastion.crypto.keys import public_key_bytes

_KEY = ec.derive_private_key(0xB457_1002, ec.SECP256R1())
_CLAIMS = eat.EatClaims(
    nonce=bytes(range(16)),
    ueid=b"\x01" + bytes(32),
    secboot=True,
    dbgstat=eat.DebugStatus.DISABLED_PERMANENTLY,
    measurements=(eat.Measurement("bootloader", b"\x11" * 32), eat.Measurement("os", b"\x22" * 32)),
    swname="bastion-os",
    swversion="1.2.3",
    boot_slot="A",
    rollback_counters={"os": 3, "bootloader": 1},
    key_to_certify=public_key_bytes(_KEY.public_key()),
    iat=1_767_225_600,
    installed_apps=(eat.InstalledApp("0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10", "1.0.0"),),
)
_DEV = eat.EatClaims(**{**vars(_CLAIMS), "insecure_no_sandbox": True, "capability": b"\xd2\x84" + bytes(40)})

SEEDS: list[bytes] = [
    eat.encode_claims(_CLAIMS),
    eat.encode_claims(_DEV),
    eat.sign_eat(_CLAIMS, _KEY, x5chain=[b"alias-cert", b"device-id-cert"]),
    eat.sign_eat(_DEV, _KEY, x5chain=[b"alias-cert"]),
]


def test_one_input(data: bytes) -> None:
    """Decode ``data`` as a claims set and as a whole EAT."""
    try:
        claims = eat.decode_claims(data)
    except MalformedInput:
        pass
    else:
        if eat.encode_claims(claims) != data:
            raise RuntimeError("decode_claims accepted a claims set that encode_claims writes differently")
    try:
        eat.decode_eat(data, verify_key_point=False)
    except MalformedInput:
        return
