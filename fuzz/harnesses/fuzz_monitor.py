"""Fuzz the security monitor's request handler (:meth:`bastion.monitor.server.MonitorServer.handle`).

The OS process is less trusted than the monitor (the monitor is the small TCB
that holds the Alias key), so every request frame is hostile input. ``handle``
documents that it never raises and answers every bad request with an error
response; here an ``internal_error`` answer is a finding too (it means an
exception nobody expected), as is a response that cannot be encoded. And every
EAT the monitor signs must decode under the service's strict EAT profile: the
OS chooses the nonce, key, apps, iat and capability, and must not be able to
make the monitor sign evidence the verifier cannot even read.

Documented behaviour: a response map, never an exception.
"""

from __future__ import annotations

import datetime as dt
import logging

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto import certs, eat
from bastion.crypto.errors import MalformedInput
from bastion.crypto.keys import device_id_from_public_key, public_key_bytes
from bastion.monitor import protocol as wire
from bastion.monitor.errors import MonitorError
from bastion.monitor.identity import MonitorIdentity
from bastion.monitor.server import MonitorServer

_NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
_VENDOR = ec.derive_private_key(0xB457_6001, ec.SECP256R1())
_DEVICE = ec.derive_private_key(0xB457_6002, ec.SECP256R1())
_ALIAS = ec.derive_private_key(0xB457_6003, ec.SECP256R1())
_MEASUREMENTS = (eat.Measurement("bootloader", b"\x11" * 32), eat.Measurement("os", b"\x22" * 32))
_CA = certs.make_ca("Fuzz Vendor CA", _VENDOR, now=_NOW)
_DEVICE_ID_CERT = certs.issue_device_id_cert(_VENDOR, _CA, _DEVICE.public_key(), now=_NOW)
_TCB = certs.TcbInfo(version="1.0.0", svn=1, fwids=tuple(certs.Fwid(certs.OID_SHA256, m.digest) for m in _MEASUREMENTS))
_ALIAS_CERT = certs.issue_alias_cert(_DEVICE, _DEVICE_ID_CERT, _ALIAS.public_key(), _TCB, now=_NOW)
_SERVER = MonitorServer(
    MonitorIdentity(
        alias_key=_ALIAS,
        cert_chain=(certs.certificate_der(_ALIAS_CERT), certs.certificate_der(_DEVICE_ID_CERT)),
        device_id=device_id_from_public_key(_DEVICE.public_key()),
        measurements=_MEASUREMENTS,
        boot_slot="A",
        os_version="1.0.0",
        os_security_version=1,
        rollback_counters={"os": 1},
        secboot=True,
        dbgstat=eat.DebugStatus.DISABLED_PERMANENTLY,
    )
)
_LOG = logging.getLogger("bastion.monitor")
_KEY_POINT = public_key_bytes(ec.derive_private_key(0xB457_6004, ec.SECP256R1()).public_key())


def _request(op: str, args: dict[str, object]) -> bytes:
    return cbor2.dumps({"op": op, "args": args}, canonical=True)


SEEDS: list[bytes] = [
    _request(
        wire.OP_SIGN_ATTESTATION,
        {
            "nonce": bytes(range(32)),
            "key_to_certify": _KEY_POINT,
            "installed_apps": [{"id": "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10", "version": "1.0.0"}],
            "iat": int(_NOW.timestamp()),
            "capability": b"\xd2" * 40,
        },
    ),
    _request(wire.OP_GET_CERT_CHAIN, {}),
    _request(wire.OP_READ_COUNTERS, {}),
    _request(wire.OP_INSTALL_OS, {"path": "staging/os.img"}),
    _request(wire.OP_CONFIRM_BOOT, {}),
]


def test_one_input(data: bytes) -> None:
    """Answer ``data`` as one request frame's payload."""
    was_disabled, _LOG.disabled = _LOG.disabled, True  # one warning per refused request is noise here
    try:
        response = _SERVER.handle(data)
    finally:
        _LOG.disabled = was_disabled
    if response.get("error") == wire.ERR_INTERNAL:
        raise RuntimeError("the monitor answered internal_error: an exception nobody expected")
    try:
        wire.encode_message(response)
    except MonitorError as exc:
        raise RuntimeError("the monitor's response cannot be encoded") from exc
    token = response.get("result", {}).get("eat")
    if token is not None:
        try:
            eat.decode_eat(token)
        except MalformedInput as exc:
            raise RuntimeError(f"the monitor signed an EAT the service cannot decode: {exc}") from exc
