"""The control socket, and the update agent wired into the OS runtime (real monitor, fake service)."""

from __future__ import annotations

import base64
import datetime as dt
import socket
import stat
import threading
import time
from pathlib import Path

import cbor2
import httpx
import pytest
from test_monitor_support import serving
from test_os_attestation import CHIP, NOW, FakeService
from test_updates_support import APP_A, Service, TufRepo, app_custom, build_app

from bastion.crypto.certs import load_certificate_der
from bastion.crypto.cose import decode_sign1, verify_sign1
from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.monitor.client import MonitorClient
from bastion.os.appservices.power import PowerService
from bastion.os.appservices.storage import StorageService
from bastion.os.config import DeviceConfig
from bastion.os.exitcodes import EXIT_OK, EXIT_REBOOT
from bastion.os.paths import OsPaths
from bastion.os.runtime import run
from bastion.os.state import StateDir
from bastion.os.updates.control import MAX_REQUEST_BYTES, ControlServer, request_control
from bastion.os.updates.download_credential import CREDENTIAL_PATH
from bastion.os.updates.errors import UpdateUnavailableError
from bastion.os.updates.system import UpdateSystem


def test_control_socket_answers_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "c.sock"
    calls: list[str] = []
    server = ControlServer(path, {"update-check": lambda op: calls.append(op) or {"result": "up-to-date"}})
    server.start()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert request_control(path, {"op": "update-check"}) == {"result": "up-to-date"}
        assert calls == ["update-check"]
        assert request_control(path, {"op": "reboot"})["error"] == "unknown_op"
        assert request_control(path, {"op": "update-check", "pad": "x" * MAX_REQUEST_BYTES})["error"] == "bad_request"
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            sock.sendall(b"not json\n")
            assert b'"bad_request"' in sock.recv(1000)
    finally:
        server.close()
    assert not path.exists()
    with pytest.raises(UpdateUnavailableError):
        request_control(path, {"op": "update-check"})


class GroupService(FakeService):
    """The attestation service, answering with an update pointer, plus the group's TUF repo and status sink.

    Like the real one, it serves targets only with a download credential, which it
    issues to a request signed by the key in the request's (device) certificate.
    """

    def __init__(self, repo: TufRepo) -> None:
        super().__init__()
        self.repo_service = Service(repo)
        self.credential_requests: list[dict[str, object]] = []
        self.refused_targets = 0
        self.pointer = {
            "group_id": repo.group,
            "tuf_base": f"/tuf/{repo.group}",
            "root": base64.b64encode(repo.root_bytes).decode(),
            "maintenance_window": None,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == CREDENTIAL_PATH:
            message = decode_sign1(request.content)
            verify_sign1(message, load_certificate_der(message.x5chain[0]).public_key())
            self.credential_requests.append(cbor2.loads(message.payload))
            return httpx.Response(
                200, json={"credential": f"v1.fake{len(self.credential_requests)}", "expires_in_s": 60}
            )
        if "/targets/" in request.url.path and not request.headers.get("authorization", "").startswith(
            "Bastion-Download v1.fake"
        ):
            self.refused_targets += 1
            return httpx.Response(401, json={"error": "download_credential_required", "detail": "no credential"})
        if not request.url.path.startswith("/api/v1/attestation"):
            return self.repo_service(request)
        response = super().__call__(request)
        if request.url.path == "/api/v1/attestation":
            body = response.json()
            body["updates"] = self.pointer
            return httpx.Response(200, json=body)
        return response


def test_runtime_learns_the_group_installs_an_app_and_answers_update_check(tmp_path: Path) -> None:
    repo = TufRepo()
    app_key = generate_private_key()
    data = build_app(tmp_path / "build", app_key, APP_A, "1.0.0")
    repo.add_target(f"apps/{APP_A}/1.0.0.img", data, app_custom(APP_A, "1.0.0"))
    repo.publish()
    service = GroupService(repo)
    state_dir = StateDir(tmp_path / "os-state")
    apps = tmp_path / "apps"
    config = DeviceConfig(
        service_url="http://service.test", app_signing_keys=(public_key_pem(app_key.public_key()).decode(),)
    )
    stop = threading.Event()
    result: list[int] = []
    clock_now = [NOW]

    with serving(CHIP.identity) as sock:
        thread = threading.Thread(
            target=lambda: result.append(
                run(
                    monitor=MonitorClient(sock),
                    state_dir=state_dir,
                    config=config,
                    once=False,
                    stop=stop,
                    clock=lambda: clock_now[0],
                    transport=httpx.MockTransport(service),
                    paths=OsPaths(app_store=apps),
                )
            )
        )
        thread.start()
        try:
            current = apps / APP_A / "current"
            deadline = time.monotonic() + 20
            while not current.is_symlink() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert current.is_symlink(), "the first check after attestation installs the app"
            # The first root of the group is stored as its trust anchor.
            assert (state_dir.tuf_dir / repo.group / "root_history" / "1.root.json").read_bytes() == repo.root_bytes
            clock_now[0] = NOW + dt.timedelta(minutes=5)
            answer = request_control(state_dir.control_socket_path, {"op": "update-check"}, timeout=30)
            assert answer["result"] == "up-to-date"
            assert answer["group_id"] == repo.group
            status = request_control(state_dir.control_socket_path, {"op": "status"}, timeout=30)
            assert [a["component_id"] for a in status["apps"]] == [APP_A]
            assert status["apps"][0]["pid"] is not None
            assert status["apps"][0]["sandbox"]["sandbox"] == "bubblewrap"  # the runtime runs apps sandboxed
        finally:
            stop.set()
            thread.join(30)
    assert result == [EXIT_OK]
    assert not state_dir.control_socket_path.exists()
    reports = service.repo_service.status.reports
    kinds = [e["kind"] for r in reports for e in r["events"]]
    assert "app_installed" in kinds
    assert "app_started" in kinds
    assert [(i["component_id"], i["version"]) for i in reports[-1]["installed"]] == [(APP_A, "1.0.0")]
    assert reports[-1]["installed"][0]["sandbox"].startswith("bwrap uid=")
    # The target came with a download credential, asked for with a signed request.
    assert service.credential_requests
    assert service.credential_requests[0]["purpose"] == "download-credential"
    assert service.refused_targets == 0


@pytest.mark.parametrize(("power_down", "expected"), [(False, EXIT_REBOOT), (True, EXIT_OK)])
def test_an_app_forced_reboot_or_power_down_ends_the_os(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, power_down: bool, expected: int
) -> None:
    built: list[UpdateSystem] = []
    original = UpdateSystem.build.__func__  # type: ignore[attr-defined]

    def capture(cls: type[UpdateSystem], **kwargs: object) -> UpdateSystem:
        system = original(cls, **kwargs)
        built.append(system)
        return system

    monkeypatch.setattr(UpdateSystem, "build", classmethod(capture))
    repo = TufRepo()
    repo.publish()
    state_dir = StateDir(tmp_path / "os-state")
    stop = threading.Event()
    result: list[int] = []
    with serving(CHIP.identity) as sock:
        thread = threading.Thread(
            target=lambda: result.append(
                run(
                    monitor=MonitorClient(sock),
                    state_dir=state_dir,
                    config=DeviceConfig(service_url="http://service.test"),
                    once=False,
                    stop=stop,
                    clock=lambda: NOW,
                    transport=httpx.MockTransport(GroupService(repo)),
                    paths=OsPaths(app_store=tmp_path / "apps"),
                )
            )
        )
        thread.start()
        deadline = time.monotonic() + 20
        while not built and time.monotonic() < deadline:
            time.sleep(0.05)
        power = built[0].power
        assert built[0].services.mapping[PowerService] is power
        # Regression: the manager copied the (then empty) registry, so no app reached any capability service.
        assert built[0].agent.apps.launcher.services is built[0].services.mapping
        assert StorageService in built[0].agent.apps.launcher.services
        if power_down:
            power.force_power_down(APP_A)
        else:
            power.force_reboot(APP_A)
        thread.join(30)
        stop.set()
    assert result == [expected]
