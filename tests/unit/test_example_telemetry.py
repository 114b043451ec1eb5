"""The telemetry example: its MQTT 3.1.1 encoder against the standard's vectors, and its packaging."""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import struct
import sys
from pathlib import Path
from types import ModuleType

import pytest
from _cli_support import run

from _tls_pki import new_ca
from bastion.images.manifest import validate_manifest

TELEMETRY = Path(__file__).resolve().parents[2] / "examples" / "apps" / "telemetry"


@pytest.fixture(scope="module")
def app() -> ModuleType:
    spec = importlib.util.spec_from_file_location("telemetry_example", TELEMETRY / "main.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("telemetry_example", module)
    keep, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in the example
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = keep
    return module


# MQTT 3.1.1 section 2.2.3, table 2.4: the edges of each remaining-length size.
@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_remaining_length(app: ModuleType, value: int, encoded: str) -> None:
    assert app.remaining_length(value).hex() == encoded


def test_remaining_length_bound(app: ModuleType) -> None:
    with pytest.raises(ValueError, match="too large"):
        app.remaining_length(268_435_456)


def test_packets(app: ModuleType) -> None:
    # CONNECT: "MQTT", level 4, clean session, keepalive 60, client id "a" (section 3.1).
    assert app.connect_packet("a").hex() == "100d00044d5154540402003c000161"
    # PUBLISH QoS 1 to "t/1", packet id 7, payload "hi" (section 3.3).
    assert app.publish_packet("t/1", b"hi", 7) == bytes([0x32, 9]) + b"\x00\x03t/1" + b"\x00\x07hi"
    assert app.disconnect_packet() == b"\xe0\x00"


def test_read_packet(app: ModuleType) -> None:
    a, b = socket.socketpair()
    with a, b:
        a.sendall(b"\x20\x02\x00\x00" + b"\x40\x02\x00\x01")
        assert app.read_packet(b) == (2, b"\x00\x00")
        assert app.read_packet(b) == (4, struct.pack("!H", 1))
        a.sendall(b"\x30\xff\xff\xff\xff")  # a fifth length byte
        with pytest.raises(app.BrokerError, match="malformed"):
            app.read_packet(b)
    c, d = socket.socketpair()
    with c, d:
        c.sendall(b"\x30" + app.remaining_length(app.MAX_PACKET_BYTES + 1))
        with pytest.raises(app.BrokerError, match="over the bound"):
            app.read_packet(d)
        c.shutdown(socket.SHUT_WR)
        with pytest.raises(app.BrokerError, match="closed"):
            app.read_packet(d)


def test_manifest_asks_for_device_authentication(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    manifest = validate_manifest((TELEMETRY / "app_manifest.json").read_bytes())
    assert manifest.capabilities.device_authentication is not None
    assert manifest.capabilities.allowed_connections == ("localhost",)
    code, out, err = run(monkeypatch, capsys, "app", "validate", str(TELEMETRY), "--json")
    assert code == 0, err
    assert json.loads(out)["valid"] is True


def test_without_a_ca_file_it_says_what_to_do(app: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert app.main(["--host", "localhost", "--ca", "no-such-ca.pem"]) == 2
    assert "put the broker's CA certificate there" in capsys.readouterr().err


def test_it_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    app_dir = tmp_path / "telemetry"
    shutil.copytree(TELEMETRY, app_dir)
    (app_dir / "broker-ca.pem").write_bytes(new_ca("broker").pem)
    keys = tmp_path / "keys"
    assert run(monkeypatch, capsys, "keys", "create", "-o", str(keys))[0] == 0
    code, out, err = run(
        monkeypatch, capsys, "app", "package", str(app_dir), "--key", str(keys / "app-signing.key"),
        "-o", str(tmp_path / "telemetry.img"), "--json",
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)
    assert (result["name"], result["version"], result["files"]) == ("telemetry", "1.0.0", 3)
