"""The monitor protocol, in process: a real MonitorServer in a thread over a socketpair."""

from __future__ import annotations

import logging
import socket
import struct

import cbor2
import pytest
from test_monitor_support import NOW, make_identity, serving

from bastion.crypto.certs import load_certificate_der, tcb_info_from_cert, verify_chain
from bastion.crypto.cose import verify_sign1
from bastion.crypto.eat import DebugStatus, decode_eat
from bastion.crypto.errors import InvalidSignature
from bastion.crypto.keys import generate_private_key, public_key_bytes
from bastion.monitor.client import MonitorClient
from bastion.monitor.errors import MonitorProtocolError, MonitorRefusedError, MonitorUnavailableError
from bastion.monitor.protocol import MAX_FRAME_BYTES, decode_message, encode_message, read_frame

CHIP = make_identity()
NONCE = bytes(range(32))


def raw_call(sock, payload: bytes) -> dict:
    sock.sendall(struct.pack(">I", len(payload)) + payload)
    answer = read_frame(sock)
    assert answer is not None
    return decode_message(answer)


def test_sign_attestation_round_trip_verifies_with_alias_key() -> None:
    tls_key = public_key_bytes(generate_private_key().public_key())
    with serving(CHIP.identity) as sock:
        client = MonitorClient(sock)
        token = client.sign_attestation(
            nonce=NONCE, key_to_certify=tls_key, installed_apps=[("app-1", "2.0")], iat=1_772_366_400
        )
    message, claims = decode_eat(token)
    alias = load_certificate_der(message.x5chain[0])
    verify_sign1(message, alias.public_key())  # raises if not signed by the Alias key
    chain = [load_certificate_der(der) for der in message.x5chain]
    assert message.x5chain == list(CHIP.identity.cert_chain)
    verify_chain(chain, [CHIP.vendor_ca], now=NOW)
    # The monitor filled every device-describing claim from the boot hand-off.
    assert claims.nonce == NONCE
    assert claims.key_to_certify == tls_key
    assert claims.ueid == CHIP.identity.ueid
    assert claims.measurements == CHIP.identity.measurements
    assert claims.swname == "bastion-os"
    assert claims.swversion == "1.0.0"
    assert claims.boot_slot == "A"
    assert claims.rollback_counters == {"os": 1}
    assert claims.secboot is True
    assert claims.dbgstat is DebugStatus.DISABLED_PERMANENTLY
    assert claims.iat == 1_772_366_400
    assert [(a.component_id, a.version) for a in claims.installed_apps] == [("app-1", "2.0")]
    assert tcb_info_from_cert(alias).fwids[1].digest == claims.measurements[1].digest


def test_the_capability_the_os_runs_under_is_carried_in_the_eat() -> None:
    tls_key = public_key_bytes(generate_private_key().public_key())
    with serving(CHIP.identity) as sock:
        client = MonitorClient(sock)
        plain = client.sign_attestation(nonce=NONCE, key_to_certify=tls_key, iat=1)
        carried = client.sign_attestation(nonce=NONCE, key_to_certify=tls_key, iat=1, capability=b"cap-file")
    assert decode_eat(plain)[1].capability is None
    message, claims = decode_eat(carried)
    verify_sign1(message, load_certificate_der(message.x5chain[0]).public_key())
    assert claims.capability == b"cap-file"


def test_signature_does_not_verify_under_another_key() -> None:
    tls_key = public_key_bytes(generate_private_key().public_key())
    with serving(CHIP.identity) as sock:
        token = MonitorClient(sock).sign_attestation(nonce=NONCE, key_to_certify=tls_key, iat=1)
    message, _ = decode_eat(token)
    with pytest.raises(InvalidSignature):
        verify_sign1(message, generate_private_key().public_key())


def test_get_cert_chain_and_read_counters() -> None:
    with serving(CHIP.identity) as sock:
        client = MonitorClient(sock)
        assert client.get_cert_chain() == CHIP.identity.cert_chain
        state = client.read_counters()
    assert state.rollback_counters == {"os": 1}
    assert state.boot_slot == "A"
    assert state.os_version == "1.0.0"
    assert state.os_security_version == 1


def test_unknown_op_is_refused_and_the_loop_continues() -> None:
    with serving(CHIP.identity) as sock:
        client = MonitorClient(sock)
        with pytest.raises(MonitorRefusedError) as info:
            client.request("read_uds", {})
        assert info.value.code == "unknown_op"
        with pytest.raises(MonitorRefusedError):
            client.request("burn_fuse", {"name": "os", "value": 9})
        assert client.get_cert_chain() == CHIP.identity.cert_chain


def test_oversized_frame_is_refused_then_drained() -> None:
    with serving(CHIP.identity) as sock:
        answer = raw_call(sock, b"\xa0" * (MAX_FRAME_BYTES + 1))
        assert answer["error"] == "frame_too_large"
        # The stream is still in sync: a good request works afterwards.
        assert MonitorClient(sock).get_cert_chain() == CHIP.identity.cert_chain


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xff\xff",
        b"not cbor at all",
        cbor2.dumps([1, 2, 3]),
        cbor2.dumps({"op": "get_cert_chain"}),
        cbor2.dumps({"op": 7, "args": {}}),
        cbor2.dumps({"op": "get_cert_chain", "args": []}),
        cbor2.dumps({"op": "get_cert_chain", "args": {}, "extra": 1}),
        cbor2.dumps({"op": "get_cert_chain", "args": {}}) + b"\x00",
        cbor2.dumps({1: "get_cert_chain"}),
    ],
)
def test_garbage_is_refused(payload: bytes) -> None:
    with serving(CHIP.identity) as sock:
        answer = raw_call(sock, payload)
        assert answer["error"] == "malformed_request"
        assert isinstance(answer["detail"], str)
        assert MonitorClient(sock).read_counters().boot_slot == "A"


GOOD_ARGS = {
    "nonce": NONCE,
    "key_to_certify": public_key_bytes(generate_private_key().public_key()),
    "installed_apps": [],
    "iat": 1,
}


@pytest.mark.parametrize(
    "change",
    [
        {"nonce": "text"},
        {"nonce": b"short"},
        {"nonce": bytes(65)},
        {"key_to_certify": b"\x04" + bytes(64)},  # not a point on the curve
        {"key_to_certify": 5},
        {"iat": "now"},
        {"iat": True},
        {"iat": -1},
        {"installed_apps": {"id": "x"}},
        {"installed_apps": [{"id": "x"}]},
        {"installed_apps": [{"id": "", "version": "1"}]},
        {"installed_apps": [{"id": "a", "version": "1"}] * 65},
        {"ueid": b"\x01" * 33},  # the OS may not choose the claims the monitor vouches for
        {"measurements": []},
        {"capability": "text"},
        {"capability": b""},
        {"capability": bytes(4097)},
    ],
)
def test_wrong_argument_types_are_refused(change: dict) -> None:
    with serving(CHIP.identity) as sock:
        client = MonitorClient(sock)
        with pytest.raises(MonitorRefusedError) as info:
            client.request("sign_attestation", {**GOOD_ARGS, **change})
        assert info.value.code == "bad_args"
        client.request("sign_attestation", GOOD_ARGS)  # still serving


def test_arguments_to_argless_ops_are_refused() -> None:
    with serving(CHIP.identity) as sock, pytest.raises(MonitorRefusedError) as info:
        MonitorClient(sock).request("get_cert_chain", {"which": "uds"})
    assert info.value.code == "bad_args"


def test_logs_op_and_outcome_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bastion.monitor")
    with serving(CHIP.identity) as sock:
        client = MonitorClient(sock)
        client.request("sign_attestation", GOOD_ARGS)
        with pytest.raises(MonitorRefusedError):
            client.request("dump_key", {})
    text = caplog.text
    assert "ok op='sign_attestation'" in text
    assert "refused op='dump_key'" in text
    assert NONCE.hex() not in text
    secret = CHIP.identity.alias_key.private_numbers().private_value
    assert format(secret, "x") not in text
    assert str(secret) not in text


def test_client_reports_a_closed_monitor() -> None:
    os_end, monitor_end = socket.socketpair()
    monitor_end.close()
    with pytest.raises(MonitorUnavailableError):
        MonitorClient(os_end).get_cert_chain()
    os_end.close()


def test_client_times_out_on_a_silent_monitor() -> None:
    os_end, monitor_end = socket.socketpair()
    with pytest.raises(MonitorUnavailableError):
        MonitorClient(os_end, timeout=0.2).get_cert_chain()
    os_end.close()
    monitor_end.close()


def test_client_refuses_to_send_an_oversized_request() -> None:
    with pytest.raises(MonitorProtocolError):
        encode_message({"op": "sign_attestation", "args": {"nonce": bytes(MAX_FRAME_BYTES)}})
