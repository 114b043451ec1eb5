"""Development mode in the running OS (real monitor, fake service): the EAT carries the capability,
no cloud app updates while it is on, the local API over the control socket, and a refused
capability ends development mode."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from test_monitor_support import serving
from test_os_attestation import CHIP, DEVICE_ID, NOW, TENANT
from test_updates_control import GroupService
from test_updates_support import APP_A, APP_B, TufRepo, app_custom, build_app

from bastion.crypto.certs import certificate_pem
from bastion.crypto.eat import decode_eat
from bastion.crypto.keys import PrivateKey, generate_private_key, public_key_bytes, public_key_pem
from bastion.images.capability import CapabilityClaims, CapabilityKind, build_capability
from bastion.monitor.client import MonitorClient
from bastion.os.config import DeviceConfig
from bastion.os.exitcodes import EXIT_OK
from bastion.os.paths import OsPaths
from bastion.os.runtime import run
from bastion.os.state import OsState, StateDir
from bastion.os.updates.control import request_control, upload_control
from bastion.os.updates.events import EventQueue

DEV_KEY = generate_private_key()


class DevService(GroupService):
    """The fake service, also keeping the capability each EAT carried, and able to refuse it."""

    def __init__(self, repo: TufRepo) -> None:
        super().__init__(repo)
        self.carried: list[bytes | None] = []
        self.refuse_with: str | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/attestation":
            capability = decode_eat(request.content)[1].capability
            self.carried.append(capability)
            if capability is not None and self.refuse_with is not None:
                return httpx.Response(403, json={"error": self.refuse_with, "detail": "refused by the test"})
        return super().__call__(request)

    def capability(self) -> bytes:
        claims = CapabilityClaims(
            capability_id=str(uuid.uuid4()),
            kind=CapabilityKind.APP_DEVELOPMENT,
            device_id=DEVICE_ID,
            tenant_id=TENANT,
            developer_keys=(public_key_bytes(DEV_KEY.public_key()),),
            issued_at=int(NOW.timestamp()) - 60,
            expires_at=int(NOW.timestamp()) + 86400,
        )
        return build_capability(claims, self.ca_key)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


@dataclass
class Running:
    state_dir: StateDir
    apps: Path
    service: DevService
    work: Path

    @property
    def sock(self) -> Path:
        return self.state_dir.control_socket_path

    def upload(self, op: str, data: bytes) -> dict[str, object]:
        path = self.work / f"{uuid.uuid4().hex}.bin"
        path.write_bytes(data)
        return upload_control(self.sock, {"op": op}, path, timeout=30)

    def call(self, op: str, **args: object) -> dict[str, object]:
        return request_control(self.sock, {"op": op, **args}, timeout=30)

    def events(self) -> list[tuple[str, str]]:
        """(kind, detail) of every event: those reported to the service, then those still queued."""
        reported = [(e["kind"], e["detail"]) for r in self.service.repo_service.status.reports for e in r["events"]]
        return reported + [(e.kind, e.detail) for e in EventQueue(self.state_dir.events_path).all()]

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events()]


@contextmanager
def running_os(tmp_path: Path, app_key: PrivateKey, *, capability: bool) -> Iterator[Running]:
    repo = TufRepo()
    repo.add_target(
        f"apps/{APP_A}/1.0.0.img", build_app(tmp_path / "b", app_key, APP_A, "1.0.0"), app_custom(APP_A, "1.0.0")
    )
    repo.publish()
    service = DevService(repo)
    state_dir = StateDir(tmp_path / "os-state")
    if capability:
        # As after an earlier boot: the tenant and its CA chain are known, a capability is installed.
        state_dir.save_credentials(b"", certificate_pem(service.ca))
        state_dir.save_state(OsState(device_id=DEVICE_ID, tenant_id=TENANT))
        state_dir.capability_path.write_bytes(service.capability())
    apps = tmp_path / "apps"
    config = DeviceConfig(
        service_url="http://service.test", app_signing_keys=(public_key_pem(app_key.public_key()).decode(),)
    )
    stop = threading.Event()
    result: list[int] = []
    work = tmp_path / "work"
    work.mkdir()
    with serving(CHIP.identity) as sock:
        thread = threading.Thread(
            target=lambda: result.append(
                run(
                    monitor=MonitorClient(sock),
                    state_dir=state_dir,
                    config=config,
                    once=False,
                    stop=stop,
                    clock=lambda: NOW,
                    transport=httpx.MockTransport(service),
                    paths=OsPaths(app_store=apps),
                )
            )
        )
        thread.start()
        try:
            wait_for(lambda: state_dir.control_socket_path.exists() and bool(service.carried))
            wait_for(lambda: request_control(state_dir.control_socket_path, {"op": "status"})["attested"] is True)
            yield Running(state_dir, apps, service, work)
        finally:
            stop.set()
            thread.join(30)
    assert result == [EXIT_OK]


def test_in_development_mode_the_eat_carries_the_capability_and_cloud_apps_stay_out(tmp_path: Path) -> None:
    app_key = generate_private_key()
    with running_os(tmp_path, app_key, capability=True) as device:
        installed = device.state_dir.capability_path.read_bytes()
        assert device.service.carried[0] == installed
        status = device.call("status")
        assert status["development"]["kind"] == "appDevelopment"  # type: ignore[index]
        check = device.call("update-check")
        assert check["result"] == "up-to-date"
        assert "development mode: 1 cloud app target(s) not taken" in str(check["detail"])
        assert not (device.apps / APP_A).exists()
        # The developer sideloads their own build, signed by their key.
        sideloaded = device.upload("sideload", build_app(tmp_path / "dev", DEV_KEY, APP_B, "0.1.0"))
        assert sideloaded["component_id"] == APP_B
        wait_for(lambda: any(a["pid"] for a in device.call("status")["apps"]))  # type: ignore[union-attr, index]
        assert "app_sideloaded" in device.kinds()
        # Development mode off: the OS attests at once without the capability, and cloud apps come back.
        attested = len(device.service.carried)
        assert device.call("disable-development") == {"removed": True, "development": None}
        wait_for(lambda: len(device.service.carried) > attested)
        assert device.service.carried[-1] is None
        assert device.call("update-check")["result"] == "installed"
        assert (device.apps / APP_A / "current").is_symlink()
        assert device.upload("sideload", build_app(tmp_path / "dev2", DEV_KEY, APP_B, "0.2.0"))["error"] == (
            "no_capability"
        )
    assert device.kinds().count("development_disabled") == 1


def test_enable_attests_at_once_and_a_refused_capability_ends_development_mode(tmp_path: Path) -> None:
    with running_os(tmp_path, generate_private_key(), capability=False) as device:
        assert device.service.carried == [None]
        wait_for(lambda: device.state_dir.load_state().tenant_id == TENANT)
        capability = device.service.capability()
        assert device.upload("enable-development", capability)["development"] is not None
        wait_for(lambda: len(device.service.carried) >= 2)
        assert device.service.carried[1] == capability
        # The operator revokes it: the service refuses, the device leaves development mode and attests again.
        device.service.refuse_with = "capability_revoked"
        assert device.upload("enable-development", device.service.capability())["development"] is not None
        wait_for(lambda: device.service.carried[-1] is None and len(device.service.carried) >= 4)
        # The attempt after the refusal (no capability) succeeds; its answer is stored just after it is sent.
        wait_for(lambda: device.state_dir.load_state().last_result == "ok")
        assert not device.state_dir.capability_path.exists()
        assert device.call("development") == {"development": None}
    kinds = device.kinds()
    assert kinds.count("development_enabled") == 2
    assert kinds.count("development_disabled") == 1
    assert any("capability_revoked" in detail for kind, detail in device.events() if kind == "development_disabled")
