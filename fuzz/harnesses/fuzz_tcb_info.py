"""Fuzz the DiceTcbInfo DER decoder (:mod:`bastion.crypto._tcb_info`, via :mod:`bastion.crypto.certs`).

Documented error: :class:`MalformedInput`. Also checked: what was decoded
encodes and decodes back to itself (the fields Bastion does not expose, such as
``index`` or ``flags``, are accepted and dropped, so the bytes may differ).
"""

from __future__ import annotations

from bastion.crypto.certs import OID_SHA256, Fwid, TcbInfo, decode_tcb_info, encode_tcb_info
from bastion.crypto.errors import MalformedInput

SEEDS: list[bytes] = [
    encode_tcb_info(TcbInfo()),
    encode_tcb_info(TcbInfo(version="1.0.0", svn=1, fwids=(Fwid(OID_SHA256, bytes(32)),))),
    encode_tcb_info(
        TcbInfo(
            vendor="bastion",
            model="emulated",
            version="2.0.1",
            svn=7,
            layer=2,
            fwids=(Fwid(OID_SHA256, b"\x01" * 32), Fwid("2.16.840.1.101.3.4.2.3", b"\x02" * 64)),
        )
    ),
]


def test_one_input(data: bytes) -> None:
    """Decode ``data`` as a DiceTcbInfo."""
    try:
        info = decode_tcb_info(data)
    except MalformedInput:
        return
    if decode_tcb_info(encode_tcb_info(info)) != info:
        raise RuntimeError("a decoded DiceTcbInfo does not survive encode_tcb_info and decode_tcb_info")
