"""The update agent against a real TUF repository (python-tuf Metadata API) over httpx.MockTransport."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from test_updates_support import (
    APP_A,
    APP_B,
    GROUP,
    FakeMonitor,
    Service,
    TufRepo,
    app_custom,
    build_app,
    build_os,
    os_custom,
    started_version,
)

from bastion.crypto.certs import certificate_der, issue_device_cert, make_ca
from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.hw.flash import BootEvent
from bastion.images.delta import DeltaMethod, make_delta
from bastion.os.apps.manager import AppLimits, AppManager
from bastion.os.apps.store import AppStore
from bastion.os.appservices.sysevent import SysEventService
from bastion.os.updates.agent import AgentSettings, UpdateAgent
from bastion.os.updates.agent_state import load_agent_state
from bastion.os.updates.events import EventQueue
from bastion.os.updates.fetcher import CachingFetcher
from bastion.os.updates.os_update import RunningOs
from bastion.os.updates.pointer import GroupStore, MaintenanceWindow, UpdatePointer

NOW = dt.datetime(2026, 3, 2, 3, 0, tzinfo=dt.UTC)
DEVICE_ID = "ab" * 32


@dataclass
class Rig:
    root: Path
    repo: TufRepo
    service: Service
    agent: UpdateAgent
    monitor: FakeMonitor
    store: AppStore
    apps: AppManager
    events: EventQueue
    app_key: PrivateKey
    os_key: PrivateKey
    reboots: list[int]
    sysevents: SysEventService

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events.all()] + [
            e["kind"] for report in self.service.status.reports for e in report["events"]
        ]

    def target_requests(self, fragment: str) -> int:
        return sum(1 for r in self.repo.requests if "/targets/" in r.url.path and fragment in r.url.path)

    def publish_app(self, component_id: str, version: str, *, key: PrivateKey | None = None, **kw: bool) -> str:
        data = build_app(self.root / "build", key or self.app_key, component_id, version, **kw)
        path = f"apps/{component_id}/{version}.img"
        self.repo.add_target(path, data, app_custom(component_id, version))
        self.repo.publish()
        return path


def make_rig(
    root: Path,
    *,
    window: MaintenanceWindow | None = None,
    monitor: FakeMonitor | None = None,
    running_image: bytes | None = None,
    pin_app_key: bool = True,
) -> Rig:
    state, flash = root / "s", root / "flash"
    state.mkdir(parents=True)
    flash.mkdir(parents=True)
    repo = TufRepo()
    service = Service(repo)
    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(service))
    groups = GroupStore(state / "tuf")
    groups.remember(UpdatePointer(GROUP, f"/tuf/{GROUP}", repo.root_bytes, window))
    events = EventQueue(state / "events.json")
    store = AppStore(flash / "apps")
    apps = AppManager(
        store, log_dir=state / "apps", data_dir=state / "app-data", events=events, limits=AppLimits(stop_grace_s=3)
    )
    device_key = generate_private_key()
    ca_key = generate_private_key()
    ca = make_ca("Tenant CA", ca_key, now=NOW - dt.timedelta(days=1))
    cert = issue_device_cert(ca_key, ca, device_key.public_key(), tenant_id="t1", device_id=DEVICE_ID, now=NOW)
    from bastion.os.updates.reporter import StatusReporter

    reporter = StatusReporter(http, events, credentials=lambda: (device_key, certificate_der(cert)))
    app_key, os_key = generate_private_key(), generate_private_key()
    measurement = image = None
    if running_image is not None:
        image = flash / "os_a.bin"
        image.write_bytes(running_image)
        measurement = hashlib.sha256(running_image).hexdigest()
    monitor = monitor or FakeMonitor()
    reboots: list[int] = []
    sysevents = SysEventService(state / "sysevents.json")
    agent = UpdateAgent(
        state_dir=state,
        groups=groups,
        service_url="http://svc",
        fetcher=CachingFetcher(http),
        monitor=monitor,
        store=store,
        apps=apps,
        events=events,
        reporter=reporter,
        app_keys=[app_key.public_key()] if pin_app_key else [],
        os_keys=lambda: [os_key.public_key()],
        running=RunningOs("1.0.0", 1, "A", measurement, image),
        device_id=DEVICE_ID,
        settings=AgentSettings(),
        on_reboot=lambda: reboots.append(1),
        sysevents=sysevents,
    )
    return Rig(root, repo, service, agent, monitor, store, apps, events, app_key, os_key, reboots, sysevents)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = make_rig(tmp_path)
    made.agent.on_attested(NOW)
    yield made
    made.apps.stop_all()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def started(rig: Rig, component_id: str) -> str | None:
    return started_version(rig.apps.log_path(component_id))


def test_app_v1_is_installed_started_and_reported(rig: Rig) -> None:
    rig.publish_app(APP_A, "1.0.0")
    summary = rig.agent.check(NOW)
    assert summary.result == "installed"
    assert summary.installed == [{"component_id": APP_A, "version": "1.0.0"}]
    assert [(a.component_id, a.version) for a in rig.store.installed()] == [(APP_A, "1.0.0")]
    wait_for(lambda: started(rig, APP_A) is not None)
    assert started(rig, APP_A) == "1.0.0"
    assert APP_A in rig.apps.running()
    # The signed report carries the install and the app start, then the queue is empty.
    assert summary.report == "accepted"
    report = rig.service.status.reports[-1]
    assert report["device_id"] == DEVICE_ID
    assert [(i["component_id"], i["version"]) for i in report["installed"]] == [(APP_A, "1.0.0")]
    assert report["installed"][0]["sandbox"].startswith("bwrap uid=")  # the layers the app runs under
    assert " seccomp " in report["installed"][0]["sandbox"]
    assert [e["kind"] for e in report["events"]] == ["app_installed", "app_started"]
    assert len(rig.events) == 0


def test_v2_replaces_v1_atomically_and_only_that_app_restarts(rig: Rig) -> None:
    rig.publish_app(APP_A, "1.0.0")
    rig.publish_app(APP_B, "1.0.0")
    assert rig.agent.check(NOW).result == "installed"
    wait_for(lambda: started(rig, APP_A) is not None and started(rig, APP_B) is not None)
    pid_a, pid_b = rig.apps.running()[APP_A], rig.apps.running()[APP_B]
    rig.publish_app(APP_A, "1.1.0")
    summary = rig.agent.check(NOW + dt.timedelta(minutes=1))
    assert summary.installed == [{"component_id": APP_A, "version": "1.1.0"}]
    wait_for(lambda: started(rig, APP_A) == "1.1.0")
    running = rig.apps.running()
    assert running[APP_A] != pid_a
    assert running[APP_B] == pid_b  # the other app was not touched
    link = rig.store.root / APP_A / "current"
    assert link.is_symlink()
    assert str(link.readlink()) == "1.1.0"  # a relative link, switched by rename
    assert (rig.store.root / APP_A / "1.0.0" / "main.py").is_file()  # the previous version stays beside it


def test_nothing_new_costs_a_root_probe_and_a_conditional_timestamp(rig: Rig) -> None:
    rig.agent.check(NOW)
    before = len(rig.repo.requests)
    assert rig.agent.check(NOW + dt.timedelta(hours=20)).result == "up-to-date"
    paths = [r.url.path for r in rig.repo.requests[before:]]
    assert paths == [f"/tuf/{GROUP}/metadata/2.root.json", f"/tuf/{GROUP}/metadata/timestamp.json"]
    assert rig.repo.requests[-1].headers["if-none-match"]
    assert rig.repo.not_modified == 1


def test_tampered_target_is_refused_and_not_retried(rig: Rig) -> None:
    path = rig.publish_app(APP_A, "1.0.0")
    key = rig.repo.target_file_key(path)
    data = bytearray(rig.repo.files[key])
    data[-10] ^= 0xFF
    rig.repo.files[key] = bytes(data)
    summary = rig.agent.check(NOW)
    assert summary.result == "refused"
    assert summary.refused == [{"target": path, "reason": "hash"}]
    assert rig.store.installed() == []
    assert "update_refused" in rig.kinds()
    downloads = rig.target_requests(APP_A)
    rig.agent.check(NOW + dt.timedelta(hours=1))
    assert rig.target_requests(APP_A) == downloads  # remembered: not downloaded again


def test_stolen_tuf_keys_cannot_push_an_app_the_tenant_did_not_sign(rig: Rig) -> None:
    # The repository (online TUF keys) signs the target, but the image is signed by another key.
    path = rig.publish_app(APP_A, "1.0.0", key=generate_private_key())
    summary = rig.agent.check(NOW)
    assert summary.refused == [{"target": path, "reason": "signature"}]
    assert rig.store.installed() == []
    assert not any((rig.store.root / APP_A).glob("1.0.0"))
    assert load_agent_state(rig.root / "s").refused


def test_endless_data_target_is_refused(rig: Rig) -> None:
    path = rig.publish_app(APP_A, "1.0.0")
    key = rig.repo.target_file_key(path)
    rig.repo.files[key] += b"\0" * 100_000
    summary = rig.agent.check(NOW)
    assert summary.refused == [{"target": path, "reason": "length"}]


def test_freeze_attack_expired_timestamp_is_refused(rig: Rig) -> None:
    rig.agent.check(NOW)
    rig.repo.publish(timestamp_expires=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    summary = rig.agent.check(NOW)
    assert summary.result == "refused"
    assert summary.refused == [{"target": "metadata", "reason": "freeze"}]
    assert "update_refused" in rig.kinds()


def test_rollback_attack_older_timestamp_is_refused(rig: Rig) -> None:
    old = rig.repo.files["metadata/timestamp.json"]
    rig.repo.publish()
    rig.agent.check(NOW)
    rig.repo.files["metadata/timestamp.json"] = old  # validly signed, but older than what the device saw
    summary = rig.agent.check(NOW)
    assert summary.refused == [{"target": "metadata", "reason": "rollback"}]


def test_mix_and_match_metadata_is_refused(rig: Rig) -> None:
    rig.repo.publish()
    version = rig.repo.targets.signed.version
    # The snapshot names targets v3, but the file served as 3.targets.json is the (validly signed) v2.
    rig.repo.publish()
    rig.repo.files[f"metadata/{version + 1}.targets.json"] = rig.repo.files[f"metadata/{version}.targets.json"]
    summary = rig.agent.check(NOW)
    assert summary.refused == [{"target": "metadata", "reason": "mix-and-match"}]


def test_maintenance_window_is_respected(tmp_path: Path) -> None:
    window = MaintenanceWindow(start_minute=22 * 60, duration_minutes=120)  # 22:00-24:00 UTC
    rig = make_rig(tmp_path, window=window)
    rig.agent.on_attested(NOW)
    rig.publish_app(APP_A, "1.0.0")
    summary = rig.agent.check(NOW)  # 03:00: closed
    assert summary.result == "maintenance_window"
    assert summary.next_check_at == "2026-03-02T22:00:00+00:00"
    assert rig.target_requests(APP_A) == 0  # nothing downloaded outside the window
    assert rig.agent.job(NOW) == dt.datetime(2026, 3, 2, 22, 0, tzinfo=dt.UTC)
    assert rig.agent.check(dt.datetime(2026, 3, 2, 23, 30, tzinfo=dt.UTC)).result == "installed"
    rig.apps.stop_all()


def test_deferral_is_honoured_and_capped_at_24_hours(rig: Rig) -> None:
    rig.publish_app(APP_A, "1.0.0", deferral=True, notifications=True)
    rig.publish_app(APP_B, "1.0.0")
    assert rig.agent.check(NOW).result == "installed"  # no app could defer yet: no notice
    rig.publish_app(APP_B, "1.1.0")
    t0 = NOW + dt.timedelta(hours=1)
    first = rig.agent.check(t0)  # app A hears events and may defer: it is told and gets the notice period
    assert first.result == "pending"
    assert first.next_check_at == (t0 + AgentSettings().update_notice).isoformat()
    events, _ = rig.sysevents.wait(None, 0)
    assert [(e.kind, e.update, e.max_deferral_minutes) for e in events] == [("update_pending", "app", 24 * 60)]
    assert rig.target_requests(f"{APP_B}/1.1.0") == 0  # nothing downloaded while the apps are asked
    # App B (no SoftwareUpdateDeferral) asks too: ignored. App A asks for 24 h, then again 20 h later.
    rig.sysevents.defer(APP_B, 24 * 60, t0)
    rig.sysevents.defer(APP_A, 24 * 60, t0)
    t1 = t0 + dt.timedelta(seconds=30)
    second = rig.agent.check(t1)
    assert second.result == "deferred"
    assert second.next_check_at == (t0 + dt.timedelta(hours=24)).isoformat()
    rig.sysevents.defer(APP_A, 24 * 60, t0 + dt.timedelta(hours=20))  # would reach t0 + 44 h
    third = rig.agent.check(t0 + dt.timedelta(hours=20))
    assert third.result == "deferred"
    assert third.next_check_at == (t1 + dt.timedelta(hours=24)).isoformat()  # the cumulative cap
    kinds = rig.kinds()
    assert kinds.count("update_deferred") == 1  # recorded once per deferral
    assert rig.store.get(APP_B).version == "1.0.0"  # type: ignore[union-attr]
    assert rig.agent.check(t1 + dt.timedelta(hours=24)).result == "installed"  # the cap is reached
    assert rig.store.get(APP_B).version == "1.1.0"  # type: ignore[union-attr]
    events, _ = rig.sysevents.wait(events[-1].seq, 0)
    assert [e.kind for e in events] == ["update_deferred", "update_ready"]
    assert events[1].max_deferral_minutes == 0
    assert rig.sysevents.wait(None, 0)[0] == []  # settled: a fresh app hears nothing old


def test_expired_deferral_does_not_hold_updates(rig: Rig) -> None:
    rig.publish_app(APP_A, "1.0.0", deferral=True, notifications=True)
    rig.agent.check(NOW)
    rig.sysevents.defer(APP_A, 1, NOW - dt.timedelta(minutes=2))
    rig.publish_app(APP_A, "1.1.0", deferral=True, notifications=True)
    assert rig.agent.check(NOW).result == "pending"
    assert rig.agent.check(NOW + dt.timedelta(seconds=30)).result == "installed"


def test_resumed_deferral_and_requests_survive_an_os_restart(rig: Rig) -> None:
    # An app that may defer but hears no events gets no notice; its standing request still holds.
    rig.publish_app(APP_A, "1.0.0", deferral=True)
    rig.agent.check(NOW)
    rig.sysevents.defer(APP_A, 60, NOW)
    restarted = SysEventService(rig.root / "s" / "sysevents.json")
    assert restarted.requests() == {APP_A: NOW + dt.timedelta(minutes=60)}
    rig.publish_app(APP_A, "1.1.0", deferral=True)
    assert rig.agent.check(NOW).result == "deferred"
    rig.sysevents.resume(APP_A)
    assert rig.agent.check(NOW + dt.timedelta(minutes=2)).result == "installed"


def test_an_app_without_deferral_hears_events_but_gets_no_notice(rig: Rig) -> None:
    rig.publish_app(APP_A, "1.0.0", notifications=True)
    rig.agent.check(NOW)
    rig.publish_app(APP_A, "1.1.0", notifications=True)
    assert rig.agent.check(NOW).result == "installed"
    assert [e.kind for e in rig.sysevents.wait(0, 0)[0]][-2:] == ["update_pending", "update_ready"]


def test_an_os_update_is_announced_with_its_kind(rig: Rig) -> None:
    image = build_os(rig.os_key, "1.1.0", 2, b"new os " * 100)
    rig.repo.add_target("os/x/1.1.0.img", image, os_custom("1.1.0", 2))
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "reboot"  # no app may defer: straight on
    events, _ = rig.sysevents.wait(0, 0)
    assert [(e.kind, e.update) for e in events] == [("update_pending", "os"), ("update_ready", "os")]


def test_os_update_is_staged_installed_and_asks_for_a_reboot(rig: Rig) -> None:
    image = build_os(rig.os_key, "1.1.0", 2, b"new os " * 1000)
    rig.repo.add_target("os/x/1.1.0.img", image, os_custom("1.1.0", 2))
    rig.repo.publish()
    summary = rig.agent.check(NOW)
    assert summary.result == "reboot"
    assert rig.monitor.installed_bytes == [image]
    staged = Path(rig.monitor.installed[0])
    assert staged.parent == rig.root / "s" / "staging"
    assert rig.reboots == [1]
    assert rig.agent.reboot_requested
    pending = load_agent_state(rig.root / "s").pending_os
    assert pending == {"version": "1.1.0", "sha256": hashlib.sha256(image).hexdigest(), "from_version": "1.0.0"}
    report = rig.service.status.reports[-1]
    assert [e["kind"] for e in report["events"]] == ["os_staged", "os_installed"]
    assert rig.agent.check(NOW).result == "reboot"  # no second install while the reboot is pending


def test_os_signed_by_an_unknown_key_is_refused(rig: Rig) -> None:
    image = build_os(generate_private_key(), "1.1.0", 2, b"evil")
    rig.repo.add_target("os/x/1.1.0.img", image, os_custom("1.1.0", 2))
    rig.repo.publish()
    summary = rig.agent.check(NOW)
    assert summary.refused == [{"target": "os/x/1.1.0.img", "reason": "signature"}]
    assert rig.monitor.installed == []


def _delta_rig(tmp_path: Path, *, broken: bool) -> tuple[Rig, bytes]:
    os_key = generate_private_key()
    old = build_os(os_key, "1.0.0", 1, b"the running os " * 4000)
    rig = make_rig(tmp_path, running_image=old)
    rig.os_key = os_key
    rig.agent._os_keys = lambda: [os_key.public_key()]  # the same publisher as the running image
    rig.agent.on_attested(NOW)
    new = build_os(os_key, "1.1.0", 2, b"the running os " * 3990 + b"and a fix " * 20)
    (tmp_path / "old.img").write_bytes(old)
    (tmp_path / "new.img").write_bytes(new)
    make_delta(tmp_path / "old.img", tmp_path / "new.img", tmp_path / "p.patch", method=DeltaMethod.ZSTD)
    patch = (tmp_path / "p.patch").read_bytes()
    if broken:
        patch = patch[: len(patch) // 2] + bytes(16) + patch[len(patch) // 2 :]
    full = "os/x/1.1.0.img"
    rig.repo.add_target(full, new, os_custom("1.1.0", 2))
    delta_custom = {
        **os_custom("1.1.0", 2),
        "delta": {"method": "zstd", "from": hashlib.sha256(old).hexdigest(), "to": full},
    }
    rig.repo.add_target(f"os-delta/{hashlib.sha256(old).hexdigest()}/1.1.0.patch", patch, delta_custom)
    rig.repo.publish()
    return rig, new


def test_delta_is_used_when_it_matches_the_running_image(tmp_path: Path) -> None:
    rig, new = _delta_rig(tmp_path, broken=False)
    assert rig.agent.check(NOW).result == "reboot"
    assert rig.monitor.installed_bytes == [new]
    assert rig.target_requests("os/x/") == 0  # the full image was never fetched
    assert rig.target_requests("os-delta/") == 1
    staged = [e for e in rig.service.status.reports[-1]["events"] if e["kind"] == "os_staged"]
    assert staged[0]["detail"] == "delta"


def test_broken_delta_falls_back_to_the_full_image(tmp_path: Path) -> None:
    rig, new = _delta_rig(tmp_path, broken=True)
    assert rig.agent.check(NOW).result == "reboot"
    assert rig.monitor.installed_bytes == [new]
    assert rig.target_requests("os/x/") == 1
    staged = [e for e in rig.service.status.reports[-1]["events"] if e["kind"] == "os_staged"]
    assert staged[0]["detail"].startswith("full image (delta failed")


def test_rollback_is_reported_once_and_the_bad_image_is_not_retried(tmp_path: Path) -> None:
    event = BootEvent("rollback", "1.1.0", "1.0.0", int(NOW.timestamp()))
    monitor = FakeMonitor(last_event=event)
    rig = make_rig(tmp_path, monitor=monitor)
    image = build_os(rig.os_key, "1.1.0", 2, b"broken os")
    sha = hashlib.sha256(image).hexdigest()
    rig.agent.state.pending_os = {"version": "1.1.0", "sha256": sha, "from_version": "1.0.0"}
    rig.agent.boot(NOW)
    assert monitor.acked == 1
    # A power cut before the ack: the monitor still holds the event; the next boot does not report it again.
    monitor.last_event = event
    rig.agent.state = load_agent_state(tmp_path / "s")  # what the next boot reads back
    rig.agent.boot(NOW + dt.timedelta(minutes=1))
    assert monitor.acked == 2
    assert [e.kind for e in rig.events.all()].count("os_rolled_back") == 1
    rolled = next(e for e in rig.events.all() if e.kind == "os_rolled_back")
    assert rolled.version == "1.1.0"
    assert "1.0.0" in rolled.detail
    # The same image is offered again: it is not retried.
    rig.agent.on_attested(NOW)
    rig.repo.add_target("os/x/1.1.0.img", image, os_custom("1.1.0", 2))
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "up-to-date"
    assert monitor.installed == []
    report = rig.service.status.reports[-1]
    assert [e["kind"] for e in report["events"]] == ["os_rolled_back"]


def test_trial_boot_is_confirmed_after_the_first_attestation(tmp_path: Path) -> None:
    monitor = FakeMonitor(trial=True)
    rig = make_rig(tmp_path, monitor=monitor)
    rig.agent.state.pending_os = {"version": "1.0.0", "sha256": "00", "from_version": "0.9.0"}
    rig.agent.boot(NOW)
    assert rig.agent.on_attested(NOW) is True
    assert monitor.confirmed == 1
    assert rig.agent.on_attested(NOW) is False  # later attestations do nothing more
    assert monitor.confirmed == 1
    assert [e.kind for e in rig.events.all()] == ["os_confirmed"]
    assert load_agent_state(tmp_path / "s").pending_os is None


def test_monitor_refusal_is_remembered(rig: Rig) -> None:
    rig.monitor.refuse_install = True
    image = build_os(rig.os_key, "1.1.0", 2, b"os")
    rig.repo.add_target("os/x/1.1.0.img", image, os_custom("1.1.0", 2))
    rig.repo.publish()
    summary = rig.agent.check(NOW)
    assert summary.refused == [{"target": "os/x/1.1.0.img", "reason": "monitor:image_refused"}]
    assert rig.reboots == []
    downloads = rig.target_requests("os/x/")
    rig.agent.check(NOW)
    assert rig.target_requests("os/x/") == downloads


def test_app_updates_can_be_turned_off_and_no_key_means_no_install(tmp_path: Path) -> None:
    rig = make_rig(tmp_path, pin_app_key=False)
    rig.agent.on_attested(NOW)
    rig.publish_app(APP_A, "1.0.0")
    summary = rig.agent.check(NOW)
    assert summary.refused[0]["reason"] == "signature"
    assert load_agent_state(tmp_path / "s").refused == {}  # not remembered: a key may be provisioned later
    rig.agent.settings = AgentSettings(app_updates=False)
    assert rig.agent.check(NOW).result == "up-to-date"


def test_check_before_attestation_and_without_group(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    assert rig.agent.check(NOW).result == "not-attested"
    rig.agent.on_attested(NOW)
    rig.agent._groups.remember(None)
    assert rig.agent.check(NOW).result == "no-group"


def test_unreachable_repository_is_transient(rig: Rig) -> None:
    rig.repo.files.clear()
    summary = rig.agent.check(NOW)
    assert summary.result == "unavailable"
    assert summary.next_check_at == (NOW + dt.timedelta(minutes=10)).isoformat()


def test_a_window_signed_into_the_group_metadata_applies_at_the_next_check(tmp_path: Path) -> None:
    """Issue 7: a group's window change reaches a running device at its next check-in, not its next attestation."""
    rig = make_rig(tmp_path)  # the attestation answer said: any time
    rig.agent.on_attested(NOW)
    rig.publish_app(APP_A, "1.0.0")
    closed = {"start": "22:00", "duration_minutes": 120}
    rig.repo.targets.signed.unrecognized_fields["custom"] = {
        "bastion": {"maintenance_window": closed, "update_policy": "UpdateAll"}
    }
    rig.repo.publish()
    summary = rig.agent.check(NOW)  # 03:00: closed by the signed window
    assert summary.result == "maintenance_window"
    assert summary.next_check_at == "2026-03-02T22:00:00+00:00"
    assert rig.target_requests(APP_A) == 0
    # The group removes its window: the next check installs, though the pointer never changed.
    rig.repo.targets.signed.unrecognized_fields["custom"] = {
        "bastion": {"maintenance_window": None, "update_policy": "UpdateAll"}
    }
    rig.repo.publish()
    assert rig.agent.check(NOW).result == "installed"
    rig.apps.stop_all()


def test_a_malformed_signed_window_is_refused(tmp_path: Path) -> None:
    rig = make_rig(tmp_path)
    rig.agent.on_attested(NOW)
    rig.publish_app(APP_A, "1.0.0")
    rig.repo.targets.signed.unrecognized_fields["custom"] = {"bastion": {"maintenance_window": {"start": "9"}}}
    rig.repo.publish()
    summary = rig.agent.check(NOW)
    assert summary.result == "refused"
    assert rig.target_requests(APP_A) == 0
