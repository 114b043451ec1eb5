"""The device's processes for real: monitor and OS spawned by ``bastion device run``'s supervisor.

The boot stage is replaced by a hand-made :class:`BootResult` whose
``os_runtime_dir`` is a copy of the device-side ``bastion`` tree (standing in for
an unpacked OS image), and the service by a small HTTP server on loopback that
verifies the EAT and issues a certificate.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from test_os_attestation import CHIP, FakeService

import bastion
from bastion.boot.result import BootResult
from bastion.cli.device_run_cmds import EXIT_MONITOR_DIED, DeviceProcesses, _config_for, child_env
from bastion.hw.chip import Chip
from bastion.hw.flash import Partition
from bastion.os.config import DeviceConfig, encode_config
from bastion.os.errors import ConfigError

#: The packages an OS image carries (see bastion.boot, docs/design.md "The OS image is real code").
IMAGE_PACKAGES = ("os", "monitor", "crypto", "images", "hw", "applibs", "jsonlog")  # as OS_PACKAGES


@pytest.fixture(scope="module")
def runtime_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stand-in for an unpacked OS image: the device-side packages only."""
    root = tmp_path_factory.mktemp("image")
    root.chmod(0o755)  # as boot unpacks an image: the sandboxed OS's uid reads it
    src = Path(bastion.__file__).parent
    (root / "bastion").mkdir()
    shutil.copy2(src / "__init__.py", root / "bastion" / "__init__.py")
    for name in IMAGE_PACKAGES:
        shutil.copytree(src / name, root / "bastion" / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.fixture(scope="module")
def bootloader_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bootloader image, unpacked as the ROM does: the monitor runs from it."""
    import io

    from bastion.boot.bootloader_image import build_bootloader_image, install_bootloader_runtime
    from bastion.boot.config import BootConfig
    from bastion.crypto.keys import generate_private_key

    key = generate_private_key()
    image = io.BytesIO()
    header = build_bootloader_image(image, BootConfig((key.public_key(),)), key, version="1.0.0", security_version=1)
    root = tmp_path_factory.mktemp("bl") / "bl"
    install_bootloader_runtime(image.getvalue(), header, root)
    return root


@contextmanager
def fake_http(fake: FakeService, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """Serve ``fake`` over HTTP (or HTTPS with ``tls``) on a random loopback port."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = httpx.Request("POST", f"http://x{self.path}", headers=dict(self.headers), content=body)
            response = fake(request)
            self.send_response(response.status_code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def service() -> Iterator[tuple[str, FakeService]]:
    fake = FakeService()
    fake.now = dt.datetime.now(dt.UTC)
    with fake_http(fake) as url:
        yield url, fake


def make_device(tmp_path: Path, runtime_dir: Path, url: str, bootloader_dir: Path) -> tuple[Path, BootResult, Chip]:
    dev = tmp_path / "dev"
    chip = Chip.manufacture(dev)
    chip.flash.write(Partition.CONFIG, encode_config(DeviceConfig(service_url=url)))
    ident = CHIP.identity
    result = BootResult(
        alias_key=ident.alias_key,
        cert_chain=ident.cert_chain,
        device_id=ident.device_id,
        measurements=ident.measurements,
        boot_slot="A",
        os_version="1.0.0",
        os_security_version=1,
        rollback_counters={"os": 1},
        secboot=True,
        dbgstat=ident.dbgstat,
        os_runtime_dir=runtime_dir,
        bootloader_runtime_dir=bootloader_dir,
    )
    return dev, result, chip


def read_state(dev: Path) -> dict:
    path = dev / "os-state" / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_once_attests_from_the_image_and_both_processes_end(
    tmp_path: Path, runtime_dir: Path, bootloader_dir: Path, service: tuple[str, FakeService]
) -> None:
    url, fake = service
    dev, result, chip = make_device(tmp_path, runtime_dir, url, bootloader_dir)
    processes = DeviceProcesses(dev_dir=dev, config_path=chip.flash.path(Partition.CONFIG), once=True)
    processes.start(result)
    assert processes.wait() == 0
    assert processes.monitor is not None
    assert processes.monitor.returncode == 0
    state = read_state(dev)
    assert state["last_result"] == "ok", state
    assert state["device_id"] == CHIP.identity.device_id
    # The OS ran the code of the image, not the installed tree.
    assert Path(state["runtime_path"]).resolve() == (runtime_dir / "bastion" / "__init__.py").resolve()
    assert not list(runtime_dir.rglob("__pycache__"))  # the image tree was not modified
    assert (dev / "os-state" / "device-cert.pem").exists()
    assert len(fake.nonces) == 1
    log = (dev / "os-state" / "os.log").read_text()
    assert "attested" in log
    assert "PRIVATE KEY" not in log
    # One JSON object per line, the service's format (bastion.jsonlog, ADR 0019).
    records = [json.loads(line) for line in log.splitlines() if line]
    assert {r["process"] for r in records} == {"os"}
    assert any(r["msg"].startswith("attested") for r in records)


def test_the_os_sees_no_uds_and_stops_on_sigterm(tmp_path: Path, runtime_dir: Path, bootloader_dir: Path) -> None:
    # No service listens: the OS keeps retrying, so we can inspect the live process.
    dev, result, chip = make_device(tmp_path, runtime_dir, "http://127.0.0.1:9", bootloader_dir)
    processes = DeviceProcesses(dev_dir=dev, config_path=chip.flash.path(Partition.CONFIG))
    processes.start(result)
    try:
        wait_for(lambda: read_state(dev).get("last_result") == "error")
        pid = processes.pid("os")
        assert pid is not None
        # The OS records its pid in its own pid namespace; the host's /proc names both.
        status = Path(f"/proc/{pid}/status").read_text()
        nspid = next(line for line in status.splitlines() if line.startswith("NSpid:")).split()[1:]
        assert int(nspid[0]) == pid
        assert int(nspid[-1]) == read_state(dev)["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        uds = chip.read_uds()
        for blob in (cmdline, environ):
            assert uds not in blob
            assert uds.hex().encode() not in blob
            assert uds.hex().upper().encode() not in blob
            assert b"chip/uds" not in blob
            assert str(chip.chip_dir).encode() not in blob
            assert b"PRIVATE KEY" not in blob
        assert f"PYTHONPATH={runtime_dir}".encode() in environ.split(b"\0")
        # The monitor's argv carries file descriptor numbers only.
        monitor_cmdline = Path(f"/proc/{processes.pid('monitor')}/cmdline").read_bytes().split(b"\0")
        assert monitor_cmdline[-5:-1] == [b"--sock-fd", monitor_cmdline[-4], b"--handoff-fd", monitor_cmdline[-2]]
        # The monitor runs the measured code of the bootloader image, not the host's package.
        monitor_environ = Path(f"/proc/{processes.pid('monitor')}/environ").read_bytes().split(b"\0")
        assert f"PYTHONPATH={bootloader_dir}".encode() in monitor_environ
        assert not list(bootloader_dir.rglob("__pycache__"))
        processes.signal_os(signal.SIGTERM)
        assert processes.wait() == 0  # graceful stop
    finally:
        processes.stop()
    assert processes.monitor is not None
    assert processes.monitor.returncode == 0  # exited when the OS closed its socket


def test_monitor_death_stops_the_os(tmp_path: Path, runtime_dir: Path, bootloader_dir: Path) -> None:
    dev, result, chip = make_device(tmp_path, runtime_dir, "http://127.0.0.1:9", bootloader_dir)
    processes = DeviceProcesses(dev_dir=dev, config_path=chip.flash.path(Partition.CONFIG))
    processes.start(result)
    try:
        wait_for(lambda: read_state(dev).get("pid") is not None)
        monitor_pid = processes.pid("monitor")
        assert monitor_pid is not None
        os.kill(monitor_pid, signal.SIGKILL)
        assert processes.wait() == EXIT_MONITOR_DIED
        assert processes.os_process is not None
        assert processes.os_process.returncode is not None
    finally:
        processes.stop()


def test_child_env_is_an_allowlist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BASTION_SECRET_THING", "x")
    monkeypatch.setenv("PATH", "/usr/bin")
    env = child_env(tmp_path)
    assert env["PYTHONPATH"] == str(tmp_path)
    assert env["PATH"] == "/usr/bin"
    assert "BASTION_SECRET_THING" not in env


def test_service_url_is_remembered_in_the_config_partition(tmp_path: Path) -> None:
    chip = Chip.manufacture(tmp_path / "dev")
    with pytest.raises(ConfigError):
        _config_for(chip, None)
    assert _config_for(chip, "http://127.0.0.1:8000").service_url == "http://127.0.0.1:8000"
    assert _config_for(Chip.open(tmp_path / "dev"), None).service_url == "http://127.0.0.1:8000"
    assert json.loads(chip.flash.read(Partition.CONFIG))["service_url"] == "http://127.0.0.1:8000"
    with pytest.raises(ConfigError):
        _config_for(chip, "file:///etc/passwd")


def flashed_device(tmp_path: Path, *, flash: bool = True) -> tuple[Path, str]:
    """A real manufactured chip, flashed with a real OS image built from this tree."""
    from bastion.boot.factory import flash_os, manufacture_device
    from bastion.boot.vendor import init_vendor, load_vendor
    from bastion.crypto.keys import load_private_key_pem
    from bastion.images.os_build import build_os_image

    now = dt.datetime.now(dt.UTC)
    paths = init_vendor(tmp_path / "vendor", now=now)
    dev = tmp_path / "dev"
    device_id = manufacture_device(dev, load_vendor(tmp_path / "vendor"), now=now)
    if flash:
        image = tmp_path / "os.img"
        build_os_image(image, "1.2.3", 1, load_private_key_pem(paths.os_key.read_bytes()))
        flash_os(dev, image)
    return dev, device_id


def test_real_boot_then_monitor_and_os_from_the_flashed_image(tmp_path: Path, service: tuple[str, FakeService]) -> None:
    from bastion.boot import boot_device

    url, fake = service
    dev, fake.device_id = flashed_device(tmp_path)
    chip = Chip.open(dev)
    assert _config_for(chip, url).service_url == url
    result = boot_device(dev, now=dt.datetime.now(dt.UTC))
    processes = DeviceProcesses(dev_dir=dev, config_path=chip.flash.path(Partition.CONFIG), once=True)
    processes.start(result)
    del result
    assert processes.wait() == 0
    state = read_state(dev)
    assert (state["last_result"], state["os_version"], state["device_id"]) == ("ok", "1.2.3", fake.device_id)
    runtime = Path(state["runtime_path"]).resolve()
    assert runtime.is_relative_to(dev.resolve())  # imported from the unpacked image in DEV, not src/
    assert not runtime.is_relative_to(Path(bastion.__file__).parent.parent.resolve())


def bastion_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli.main", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "300", **(env or {})},
    )


#: A PATH without bubblewrap (nor setpriv).
NO_BWRAP = {"PATH": "/nonexistent"}


def test_cli_device_run_without_bubblewrap_stops_at_once_and_names_the_fix(tmp_path: Path) -> None:
    dev, _ = flashed_device(tmp_path)
    done = bastion_cli(
        "device", "run", "--dir", str(dev), "--service", "http://127.0.0.1:9", cwd=tmp_path, env=NO_BWRAP
    )
    assert done.returncode == 1
    assert "the sandbox needs bubblewrap (bwrap), which is missing" in done.stderr
    assert "apt-get install bubblewrap" in done.stderr
    assert "--insecure-no-sandbox" in done.stderr
    assert "booting" not in done.stderr  # nothing started
    assert not (dev / "os-state").exists()


def test_cli_device_run_insecure_no_sandbox_is_the_way_round_and_is_attested(
    tmp_path: Path, service: tuple[str, FakeService]
) -> None:
    from bastion.crypto.eat import decode_eat

    url, fake = service
    dev, fake.device_id = flashed_device(tmp_path)
    args = ("device", "run", "--dir", str(dev), "--service", url, "--once")
    done = bastion_cli(*args, "--insecure-no-sandbox", cwd=tmp_path, env=NO_BWRAP)
    assert done.returncode == 0, done.stderr
    assert "WARNING: this device runs with --insecure-no-sandbox" in done.stderr
    assert "(NOT sandboxed)" in done.stderr
    _, claims = decode_eat(fake.requests[-1].content)
    assert claims.insecure_no_sandbox is True  # the monitor says so in the evidence
    # Remembered in the config partition: the next run is insecure too, and says so.
    again = bastion_cli(*args, cwd=tmp_path, env=NO_BWRAP)
    assert again.returncode == 0, again.stderr
    assert "WARNING" in again.stderr
    # Undone by provision --sandbox: the sandbox is required again, and used.
    undo = bastion_cli("device", "provision", "--dir", str(dev), "--sandbox", cwd=tmp_path)
    assert undo.returncode == 0, undo.stderr
    assert bastion_cli(*args, cwd=tmp_path, env=NO_BWRAP).returncode == 1
    sandboxed = bastion_cli(*args, cwd=tmp_path)
    assert sandboxed.returncode == 0, sandboxed.stderr
    assert "(sandboxed)" in sandboxed.stderr
    _, claims = decode_eat(fake.requests[-1].content)
    assert claims.insecure_no_sandbox is False


def test_cli_device_run_once_json_and_remembered_service(tmp_path: Path, service: tuple[str, FakeService]) -> None:
    url, fake = service
    dev, fake.device_id = flashed_device(tmp_path)
    first = bastion_cli("device", "run", "--dir", "dev", "--service", url, "--once", "--json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    state = json.loads(first.stdout)
    assert (state["last_result"], state["exit_code"], state["device_id"]) == ("ok", 0, fake.device_id)
    assert "booted slot A: OS 1.2.3" in first.stderr
    # The supervisor reaps both children with wait4 and reports their peak RSS.
    rss = state["peak_rss_kib"]
    assert set(rss) == {"monitor", "os"}
    assert all(1024 < kib < 1024 * 1024 for kib in rss.values())
    # The URL was remembered in the config partition: no --service needed now.
    second = bastion_cli("device", "run", "--dir", str(dev), "--once", "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["last_result"] == "ok"
    assert len(fake.nonces) == 2


def test_cli_device_run_reports_refusal_with_the_services_code(tmp_path: Path) -> None:
    dev, _ = flashed_device(tmp_path)
    done = bastion_cli("device", "run", "--dir", str(dev), "--service", "http://127.0.0.1:9", "--once", cwd=tmp_path)
    assert done.returncode == 2
    assert "service_unreachable" in done.stderr


def test_cli_device_run_reports_a_failed_boot(tmp_path: Path) -> None:
    dev, _ = flashed_device(tmp_path, flash=False)
    done = bastion_cli("device", "run", "--dir", str(dev), "--service", "http://127.0.0.1:9", "--once", cwd=tmp_path)
    assert done.returncode == 2
    assert "boot failed; the chip is in recovery" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (dev / "os-state").exists()  # no OS ran


def test_cli_device_run_needs_a_service_url(tmp_path: Path) -> None:
    dev, _ = flashed_device(tmp_path)
    done = bastion_cli("device", "run", "--dir", str(dev), "--once", cwd=tmp_path)
    assert done.returncode == 1
    assert "--service" in done.stderr


def _server_tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A server certificate for 127.0.0.1 from a throwaway CA; returns the context and the CA file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    from bastion.crypto.certs import certificate_pem, make_ca
    from bastion.crypto.keys import generate_private_key, private_key_pem

    now = dt.datetime.now(dt.UTC)
    ca_key, server_key = generate_private_key(), generate_private_key()
    ca = make_ca("Service TLS CA", ca_key, now=now)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "server.pem").write_bytes(certificate_pem(cert) + private_key_pem(server_key))
    (tmp_path / "service-ca.pem").write_bytes(certificate_pem(ca))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.pem")
    return context, tmp_path / "service-ca.pem"


def test_cli_device_run_over_https_with_the_service_ca(tmp_path: Path) -> None:
    fake = FakeService()
    fake.now = dt.datetime.now(dt.UTC)
    dev, fake.device_id = flashed_device(tmp_path)
    context, ca_file = _server_tls(tmp_path)
    with fake_http(fake, context) as url:
        # Without the CA the device refuses the service's certificate.
        untrusted = bastion_cli("device", "run", "--dir", str(dev), "--service", url, "--once", cwd=tmp_path)
        assert untrusted.returncode == 2
        assert "service_unreachable" in untrusted.stderr
        done = bastion_cli(
            "device", "run", "--dir", str(dev), "--service-ca", str(ca_file), "--once", "--json", cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["last_result"] == "ok"
    assert json.loads(Chip.open(dev).flash.read(Partition.CONFIG))["ca_file"] == str(ca_file)
