"""Development mode on the device: the capability file, and the local device API over the real control socket.

Apps are real processes (the app manager); images are real signed packages;
the capability files are signed by a tenant CA whose certificate the device
stored, as after an attestation.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_updates_support import APP_A, APP_B, build_app, build_os

from bastion.crypto.certs import certificate_pem, make_ca
from bastion.crypto.keys import PrivateKey, generate_private_key, public_key_bytes
from bastion.images.capability import CapabilityClaims, CapabilityKind, build_capability
from bastion.os.apps.manager import AppLimits, AppManager
from bastion.os.apps.store import AppStore
from bastion.os.devmode.capability import DevelopmentMode
from bastion.os.devmode.local_api import LocalApi, LocalApiLimits
from bastion.os.errors import LocalApiRefusedError
from bastion.os.state import OsState, StateDir
from bastion.os.updates.control import ControlServer, request_control, upload_control
from bastion.os.updates.events import EventQueue

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
DEVICE = "ab" * 32
TENANT = "7d9e8a43-0000-4000-8000-000000000001"
CA_KEY = generate_private_key()
CA_CERT = make_ca("Tenant CA", CA_KEY, now=NOW - dt.timedelta(days=1), organization=TENANT)
DEV_KEY = generate_private_key()  # the developer's key, listed in the capability
PROD_KEY = generate_private_key()  # the tenant's app-signing key, pinned on the device
STRANGER_KEY = generate_private_key()


def capability(
    *,
    kind: CapabilityKind = CapabilityKind.APP_DEVELOPMENT,
    signer: PrivateKey = CA_KEY,
    lifetime: dt.timedelta = dt.timedelta(days=1),
    **changes: object,
) -> bytes:
    claims = CapabilityClaims(
        capability_id=str(uuid.uuid4()),
        kind=kind,
        device_id=DEVICE,
        tenant_id=TENANT,
        developer_keys=(public_key_bytes(DEV_KEY.public_key()),) if kind is CapabilityKind.APP_DEVELOPMENT else (),
        issued_at=int(NOW.timestamp()) - 60,
        expires_at=int((NOW + lifetime).timestamp()),
    )
    return build_capability(dataclasses.replace(claims, **changes), signer)  # type: ignore[arg-type]


def attested_state(path: Path) -> StateDir:
    """A state directory as after a successful attestation: tenant and CA chain stored."""
    state_dir = StateDir(path)
    state_dir.save_credentials(b"", certificate_pem(CA_CERT))
    state_dir.save_state(OsState(device_id=DEVICE, tenant_id=TENANT))
    return state_dir


def kinds(events: EventQueue) -> list[str]:
    return [e.kind for e in events.all()]


# --- the capability file ------------------------------------------------------------------


def test_install_verifies_stores_and_records(tmp_path: Path) -> None:
    events = EventQueue(tmp_path / "events.json")
    state_dir = attested_state(tmp_path / "os-state")
    dev = DevelopmentMode(state_dir, device_id=DEVICE, events=events)
    assert dev.current(now=NOW) is None
    assert dev.evidence(now=NOW) is None
    data = capability()
    installed = dev.install(data, now=NOW)
    assert state_dir.capability_path.read_bytes() == data
    assert state_dir.capability_path.stat().st_mode & 0o077 == 0
    assert dev.current(now=NOW) == installed
    assert dev.development(now=NOW) is True
    assert dev.evidence(now=NOW) == data
    assert dev.status(now=NOW)["capability_id"] == installed.capability_id  # type: ignore[index]
    assert kinds(events) == ["development_enabled"]
    assert events.all()[0].component_id == installed.capability_id
    # Field servicing is a capability too, but not development mode.
    dev.install(capability(kind=CapabilityKind.FIELD_SERVICING), now=NOW)
    assert dev.development(now=NOW) is False
    assert dev.disable(now=NOW) is True
    assert not state_dir.capability_path.exists()
    assert dev.disable(now=NOW) is False
    assert kinds(events) == ["development_enabled", "development_enabled", "development_disabled"]


@pytest.mark.parametrize(
    ("data", "check"),
    [
        (lambda: capability(signer=generate_private_key()), "unknown_signer"),  # forged: not the tenant CA
        (lambda: capability(device_id="cd" * 32), "wrong_device"),
        (lambda: capability(tenant_id="another-tenant"), "wrong_tenant"),
        (lambda: capability(lifetime=dt.timedelta(seconds=-1)), "expired"),
        (lambda: b"\xd2not a capability", "malformed"),
    ],
)
def test_a_bad_capability_is_refused_and_nothing_is_written(
    tmp_path: Path, data: Callable[[], bytes], check: str
) -> None:
    state_dir = attested_state(tmp_path / "os-state")
    dev = DevelopmentMode(state_dir, device_id=DEVICE)
    with pytest.raises(LocalApiRefusedError) as info:
        dev.install(data(), now=NOW)
    assert info.value.reason == "capability"
    assert f"({check})" in str(info.value)
    assert not state_dir.capability_path.exists()


def test_an_expired_capability_ends_development_mode_and_is_recorded(tmp_path: Path) -> None:
    events = EventQueue(tmp_path / "events.json")
    state_dir = attested_state(tmp_path / "os-state")
    dev = DevelopmentMode(state_dir, device_id=DEVICE, events=events)
    dev.install(capability(lifetime=dt.timedelta(hours=1)), now=NOW)
    with pytest.raises(LocalApiRefusedError) as info:
        dev.install(capability(lifetime=dt.timedelta(hours=1)), now=NOW + dt.timedelta(hours=2))
    assert "(expired)" in str(info.value)
    assert dev.current(now=NOW + dt.timedelta(hours=2)) is None
    assert not state_dir.capability_path.exists()
    assert kinds(events) == ["development_enabled", "development_disabled"]
    assert "no longer verifies" in events.all()[-1].detail


def test_a_device_that_never_attested_cannot_check_a_capability(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path / "os-state")
    dev = DevelopmentMode(state_dir, device_id=DEVICE)
    with pytest.raises(LocalApiRefusedError) as info:
        dev.install(capability(), now=NOW)
    assert info.value.reason == "not_attested"
    # A file put there by hand stays, but does not unlock anything.
    state_dir.capability_path.write_bytes(capability())
    assert dev.current(now=NOW) is None
    assert state_dir.capability_path.exists()


# --- the local device API, over the control socket ---------------------------------------------


@dataclass
class Device:
    state_dir: StateDir
    store: AppStore
    apps: AppManager
    events: EventQueue
    sock: Path
    tmp: Path
    changes: list[str]

    def call(self, op: str, **args: object) -> dict[str, object]:
        return request_control(self.sock, {"op": op, **args}, timeout=30)

    def upload(self, op: str, data: bytes, **args: object) -> dict[str, object]:
        path = self.tmp / f"upload-{len(list(self.tmp.iterdir()))}.bin"
        path.write_bytes(data)
        return upload_control(self.sock, {"op": op, **args}, path, timeout=30)

    def image(self, key: PrivateKey, component_id: str = APP_A, version: str = "1.0.0") -> bytes:
        return build_app(self.tmp / f"build-{uuid.uuid4().hex[:8]}", key, component_id, version)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    state_dir = attested_state(tmp_path / "os-state")
    events = EventQueue(state_dir.events_path)
    store = AppStore(tmp_path / "flash" / "apps")
    apps = AppManager(
        store,
        log_dir=state_dir.app_log_dir,
        data_dir=state_dir.app_data_dir,
        events=events,
        limits=AppLimits(stop_grace_s=3),
    )
    changes: list[str] = []
    api = LocalApi(
        dev=DevelopmentMode(state_dir, device_id=DEVICE, events=events),
        store=store,
        apps=apps,
        events=events,
        pinned_keys=[PROD_KEY.public_key()],
        clock=lambda: NOW,
        spool_dir=state_dir.staging_dir,
        on_change=lambda: changes.append("attest"),
        limits=LocalApiLimits(max_image_bytes=256 * 1024, max_log_bytes=1024, default_log_bytes=512),
    )
    server = ControlServer(state_dir.control_socket_path, {}, requests=api.requests(), uploads=api.uploads())
    server.start()
    work = tmp_path / "work"
    work.mkdir()
    try:
        yield Device(state_dir, store, apps, events, state_dir.control_socket_path, work, changes)
    finally:
        server.close()
        apps.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def test_without_a_capability_sideload_and_app_control_are_refused_and_recorded(device: Device) -> None:
    answer = device.upload("sideload", device.image(DEV_KEY))
    assert answer["error"] == "no_capability"
    assert "enable-development" in str(answer["detail"])
    refused = device.events.all()[-1]
    assert (refused.kind, refused.component_id, refused.version) == ("sideload_refused", APP_A, "1.0.0")
    assert device.store.get(APP_A) is None
    for op in ("app-start", "app-stop", "app-logs"):
        assert device.call(op, component_id=APP_A)["error"] == "no_capability"
    assert kinds(device.events)[-3:] == ["local_op_refused"] * 3
    assert device.events.all()[-1].detail.startswith("app-logs:")
    assert device.call("development") == {"development": None}
    assert list(device.state_dir.staging_dir.iterdir()) == []  # spooled uploads are removed


def test_enable_then_sideload_start_stop_logs(device: Device) -> None:
    enabled = device.upload("enable-development", capability())
    assert enabled["development"]["kind"] == "appDevelopment"  # type: ignore[index]
    assert device.changes == ["attest"]  # the runtime attests again at once
    assert device.call("development")["development"] is not None

    sideloaded = device.upload("sideload", device.image(DEV_KEY))
    assert sideloaded["component_id"] == APP_A
    assert sideloaded["started"] is True
    wait_for(lambda: APP_A in device.apps.running())
    sideloads = [e for e in device.events.all() if e.kind == "app_sideloaded"]
    assert [(e.component_id, e.version) for e in sideloads] == [(APP_A, "1.0.0")]
    assert "under appDevelopment" in sideloads[0].detail
    log = device.state_dir.app_log_dir / f"{APP_A}.log"
    wait_for(lambda: log.exists() and b"hello from 1.0.0" in log.read_bytes())

    stopped = device.call("app-stop", component_id=APP_A)
    assert stopped == {"component_id": APP_A, "pid": None}
    assert APP_A not in device.apps.running()
    started = device.call("app-start", component_id=APP_A)
    assert isinstance(started["pid"], int)
    wait_for(lambda: log.read_bytes().count(b"hello from") >= 2)

    logs = device.call("app-logs", component_id=APP_A)
    assert "hello from 1.0.0" in str(logs["log"])
    # Stopped while the file is replaced: a running app's next heartbeat would land after "the end".
    assert device.call("app-stop", component_id=APP_A)["pid"] is None
    log.write_bytes(b"x" * 5000 + b"the end\n")
    tail = device.call("app-logs", component_id=APP_A, max_bytes=10**9)
    assert len(str(tail["log"])) == 1024  # the named bound, not the asked size
    assert str(tail["log"]).endswith("the end\n")
    assert tail["truncated"] is True
    assert isinstance(device.call("app-start", component_id=APP_A)["pid"], int)
    wait_for(lambda: APP_A in device.apps.running())

    # The developer sideloads the same version again, rebuilt: it replaces the running one.
    again = device.upload("sideload", device.image(DEV_KEY))
    assert again["version"] == "1.0.0"
    wait_for(lambda: APP_A in device.apps.running())
    # A production-signed image (a pinned key) is accepted too.
    assert device.upload("sideload", device.image(PROD_KEY, APP_B))["component_id"] == APP_B
    assert device.call("app-start", component_id=APP_B.replace("0", "1"))["error"] == "unknown_app"
    assert device.call("app-start", component_id="../../etc")["error"] == "unknown_app"


def test_an_image_not_signed_by_a_listed_developer_key_is_refused(device: Device) -> None:
    device.upload("enable-development", capability())
    answer = device.upload("sideload", device.image(STRANGER_KEY))
    assert answer["error"] == "signature"
    assert "developer key" in str(answer["detail"])
    assert device.events.all()[-1].kind == "sideload_refused"
    assert device.store.get(APP_A) is None
    # Not an app: an OS image, or garbage.
    os_image = build_os(DEV_KEY, "1.0.0", 1, b"payload")
    assert device.upload("sideload", os_image)["error"] == "format"
    assert device.upload("sideload", b"garbage")["error"] == "format"
    assert kinds(device.events)[-2:] == ["sideload_refused", "sideload_refused"]


def test_field_servicing_sideloads_production_signed_images_only(device: Device) -> None:
    device.upload("enable-development", capability(kind=CapabilityKind.FIELD_SERVICING))
    assert device.upload("sideload", device.image(DEV_KEY))["error"] == "signature"
    assert device.upload("sideload", device.image(PROD_KEY))["component_id"] == APP_A
    assert device.call("app-stop", component_id=APP_A)["pid"] is None


def test_bad_capabilities_and_oversized_uploads_are_refused(device: Device) -> None:
    answer = device.upload("enable-development", capability(device_id="cd" * 32))
    assert answer["error"] == "capability"
    assert "wrong_device" in str(answer["detail"])
    assert device.events.all()[-1].kind == "local_op_refused"
    assert device.changes == []
    assert device.upload("enable-development", b"x" * 5000)["error"] == "too_large"
    device.upload("enable-development", capability())
    assert device.upload("sideload", b"x" * (256 * 1024 + 1))["error"] == "too_large"
    assert json.loads(json.dumps(device.call("disable-development"))) == {"removed": True, "development": None}
    assert device.upload("sideload", device.image(DEV_KEY))["error"] == "no_capability"
