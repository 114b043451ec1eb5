"""The real monitor process (``python -m bastion.monitor``) and its hand-off."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import cbor2
import pytest
from test_monitor_support import make_identity

from bastion.crypto.certs import load_certificate_der
from bastion.crypto.cose import verify_sign1
from bastion.crypto.eat import decode_eat
from bastion.crypto.keys import generate_private_key, private_key_pem, public_key_bytes
from bastion.monitor.client import MonitorClient
from bastion.monitor.errors import HandoffError, MonitorRefusedError
from bastion.monitor.identity import MAX_HANDOFF_BYTES, decode_handoff, encode_handoff

CHIP = make_identity()


def test_handoff_round_trip() -> None:
    decoded = decode_handoff(encode_handoff(CHIP.identity))
    assert private_key_pem(decoded.alias_key) == private_key_pem(CHIP.identity.alias_key)
    assert dataclasses.replace(decoded, alias_key=CHIP.identity.alias_key) == CHIP.identity


def test_handoff_with_a_foreign_alias_key_is_refused() -> None:
    wrong = dataclasses.replace(CHIP.identity, alias_key=generate_private_key())
    with pytest.raises(HandoffError, match="Alias key"):
        decode_handoff(encode_handoff(wrong))


def test_handoff_with_a_wrong_device_id_is_refused() -> None:
    wrong = dataclasses.replace(CHIP.identity, device_id="00" * 32)
    with pytest.raises(HandoffError, match="device ID"):
        decode_handoff(encode_handoff(wrong))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        cbor2.dumps([1]),
        cbor2.dumps({"v": 2}),
        bytes(MAX_HANDOFF_BYTES + 1),
    ],
)
def test_malformed_handoff_is_refused(data: bytes) -> None:
    with pytest.raises(HandoffError):
        decode_handoff(data)


def test_handoff_carries_the_insecure_no_sandbox_option() -> None:
    insecure = dataclasses.replace(CHIP.identity, insecure_no_sandbox=True)
    assert decode_handoff(encode_handoff(insecure)).insecure_no_sandbox is True
    # A supervisor that predates the option sends no field: the device is sandboxed.
    message = cbor2.loads(bytes(encode_handoff(insecure)))
    del message["insecure_no_sandbox"]
    assert decode_handoff(cbor2.dumps(message)).insecure_no_sandbox is False


def test_handoff_field_of_the_wrong_type_is_refused() -> None:
    message = cbor2.loads(bytes(encode_handoff(CHIP.identity)))
    bad_fields = [("secboot", 1), ("counters", {"os": "1"}), ("chain", [b"x"]), ("dbgstat", 99)]
    for name, bad in [*bad_fields, ("insecure_no_sandbox", 1)]:
        with pytest.raises(HandoffError):
            decode_handoff(cbor2.dumps({**message, name: bad}))


@contextmanager
def monitor_process(handoff: bytes) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket]]:
    os_end, monitor_end = socket.socketpair()
    read_fd, write_fd = os.pipe()
    process = subprocess.Popen(
        [sys.executable, "-m", "bastion.monitor", "--sock-fd", str(monitor_end.fileno()), "--handoff-fd", str(read_fd)],
        pass_fds=(monitor_end.fileno(), read_fd),
        stderr=subprocess.PIPE,
    )
    os.close(read_fd)
    monitor_end.close()
    os.write(write_fd, handoff)
    os.close(write_fd)
    try:
        yield process, os_end
    finally:
        os_end.close()
        process.wait(timeout=10)
        if process.stderr is not None:
            process.stderr.close()


def test_real_monitor_process_signs_and_exits_when_the_os_is_gone() -> None:
    handoff = bytes(encode_handoff(CHIP.identity))
    with monitor_process(handoff) as (process, sock):
        client = MonitorClient(sock)
        assert client.get_cert_chain() == CHIP.identity.cert_chain
        tls = public_key_bytes(generate_private_key().public_key())
        token = client.sign_attestation(nonce=bytes(16), key_to_certify=tls, iat=1_772_366_400)
        with pytest.raises(MonitorRefusedError):
            client.request("export_key", {})
        assert process.poll() is None
    assert process.returncode == 0
    message, claims = decode_eat(token)
    verify_sign1(message, load_certificate_der(message.x5chain[0]).public_key())
    assert claims.key_to_certify == tls
    assert process.stderr is not None
    cmdline = " ".join(process.args)  # type: ignore[arg-type]
    assert "PRIVATE KEY" not in cmdline
    assert claims.insecure_no_sandbox is False


def test_real_monitor_claims_insecure_no_sandbox_from_the_handoff() -> None:
    handoff = bytes(encode_handoff(dataclasses.replace(CHIP.identity, insecure_no_sandbox=True)))
    with monitor_process(handoff) as (_process, sock):
        tls = public_key_bytes(generate_private_key().public_key())
        token = MonitorClient(sock).sign_attestation(nonce=bytes(16), key_to_certify=tls, iat=1_772_366_400)
    _, claims = decode_eat(token)
    assert claims.insecure_no_sandbox is True


def test_real_monitor_logs_ops_without_secrets() -> None:
    identity = CHIP.identity
    with monitor_process(bytes(encode_handoff(identity))) as (process, sock):
        MonitorClient(sock).read_counters()
        sock.close()
        assert process.stderr is not None
        log = process.stderr.read().decode()
    assert "ok op='read_counters'" in log
    assert identity.device_id in log
    assert "PRIVATE KEY" not in log
    assert format(identity.alias_key.private_numbers().private_value, "x") not in log
    # One JSON object per line, the service's format (bastion.jsonlog, ADR 0019).
    lines = [json.loads(line) for line in log.splitlines() if line]
    assert lines
    assert {line["process"] for line in lines} == {"monitor"}
    assert any(line["msg"].startswith("ok op='read_counters'") for line in lines)


def test_real_monitor_refuses_to_start_on_a_bad_handoff() -> None:
    with monitor_process(b"not a handoff") as (process, _sock):
        assert process.wait(timeout=10) == 2
