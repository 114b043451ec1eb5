"""The OS runtime in process: config, state directory, scheduler and one boot's attestation."""

from __future__ import annotations

import datetime as dt
import json
import logging
import stat
import threading
import time
from pathlib import Path

import httpx
import pytest
from test_monitor_support import serving
from test_os_attestation import CHIP, DEVICE_ID, NOW, FakeService

import bastion
from bastion.crypto.keys import private_key_pem
from bastion.monitor.client import MonitorClient
from bastion.os.config import AttestationPolicy, DeviceConfig, encode_config, load_config, parse_config
from bastion.os.errors import ConfigError, StateError
from bastion.os.runtime import EXIT_ATTESTATION, EXIT_OK, run
from bastion.os.scheduler import WAKE_POLL_S, Scheduler
from bastion.os.state import OsState, StateDir


def test_config_round_trip_and_policy_overrides() -> None:
    config = DeviceConfig(
        service_url="https://svc.example:8443/",
        ca_file="/etc/ca.pem",
        policy=AttestationPolicy(retry_initial_s=1.0),
    )
    again = parse_config(encode_config(parse_config(encode_config(config))))
    assert again.service_url == "https://svc.example:8443"
    assert again.ca_file == "/etc/ca.pem"
    assert again.policy == AttestationPolicy(retry_initial_s=1.0)
    assert json.loads(encode_config(DeviceConfig(service_url="http://a"))) == {
        "service_url": "http://a",
        "ca_file": None,
    }


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"[]",
        b"{}",
        b'{"service_url": "ftp://x"}',
        b'{"service_url": "http://user:pw@host"}',
        b'{"service_url": "http://host/?token=1"}',
        b'{"service_url": "http://host", "ca_file": 3}',
        b'{"service_url": "http://host", "retry_max_s": -1}',
        b'{"service_url": "http://host", "retry_max_s": true}',
        b" " * 20000,
    ],
)
def test_invalid_config_is_rejected(raw: bytes) -> None:
    with pytest.raises(ConfigError):
        parse_config(raw)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no device config"):
        load_config(tmp_path / "config.bin")


def test_device_key_is_created_once_0600_and_kept(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path / "s")
    key = state_dir.load_or_create_key()
    path = tmp_path / "s" / "device-key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o700
    again = StateDir(tmp_path / "s").load_or_create_key()
    assert private_key_pem(again) == private_key_pem(key)


def test_device_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path)
    state_dir.load_or_create_key()
    (tmp_path / "device-key.pem").chmod(0o644)
    with pytest.raises(StateError, match="0600"):
        state_dir.load_or_create_key()


def test_state_round_trip_ignores_unknown_and_corrupt(tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path)
    assert state_dir.load_state() == OsState()
    state_dir.save_state(OsState(device_id="d", consecutive_failures=2))
    assert state_dir.load_state() == OsState(device_id="d", consecutive_failures=2)
    (tmp_path / "state.json").write_text('{"device_id": "x", "from_the_future": 1}')
    assert state_dir.load_state().device_id == "x"
    (tmp_path / "state.json").write_text("{not json")
    assert state_dir.load_state() == OsState()
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp files


def test_scheduler_runs_jobs_when_due() -> None:
    t = [NOW]
    stop = threading.Event()
    runs: list[dt.datetime] = []

    def job(now: dt.datetime) -> dt.datetime:
        runs.append(now)
        return now + dt.timedelta(hours=1)

    sched = Scheduler(clock=lambda: t[0], stop=stop)
    sched.add("attestation", job, first_at=NOW)
    sched.run_due()
    sched.run_due()  # not due again yet
    assert runs == [NOW]
    t[0] = NOW + dt.timedelta(minutes=59)
    sched.run_due()
    assert len(runs) == 1
    t[0] = NOW + dt.timedelta(hours=1)
    sched.run_due()
    assert runs == [NOW, NOW + dt.timedelta(hours=1)]
    assert sched.due_times() == {"attestation": NOW + dt.timedelta(hours=2)}


def test_an_idle_scheduler_does_not_log_a_line_a_second(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 9 §7: the app supervisor's one-second poll is not an INFO line; an hourly job still is."""
    t = [NOW]
    sched = Scheduler(clock=lambda: t[0], stop=threading.Event())
    sched.add("apps", lambda now: now + dt.timedelta(seconds=1), first_at=NOW)
    sched.add("updates", lambda now: now + dt.timedelta(hours=1), first_at=NOW)
    idle_s = 300
    with caplog.at_level(logging.DEBUG, logger="bastion.os.scheduler"):
        for second in range(idle_s):
            t[0] = NOW + dt.timedelta(seconds=second)
            sched.run_due()
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert info == [f"updates: next run at {(NOW + dt.timedelta(hours=1)).isoformat(timespec='seconds')}"]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == idle_s  # still there when asked for


def test_scheduler_stops_when_asked() -> None:
    stop = threading.Event()
    calls = []

    def job(now: dt.datetime) -> dt.datetime:
        calls.append(now)
        stop.set()
        return now + dt.timedelta(days=1)

    sched = Scheduler(clock=lambda: NOW, stop=stop)
    sched.add("attestation", job, first_at=NOW)
    sched.run()  # returns promptly instead of sleeping for a day
    assert calls == [NOW]


def _run_once(tmp_path: Path, transport: httpx.BaseTransport) -> int:
    with serving(CHIP.identity) as sock:
        return run(
            monitor=MonitorClient(sock),
            state_dir=StateDir(tmp_path / "os-state"),
            config=DeviceConfig(service_url="http://service.test"),
            once=True,
            stop=threading.Event(),
            clock=lambda: NOW,
            transport=transport,
        )


def test_run_once_attests_and_records_identity(tmp_path: Path) -> None:
    assert _run_once(tmp_path, httpx.MockTransport(FakeService())) == EXIT_OK
    state = json.loads((tmp_path / "os-state" / "state.json").read_text())
    assert state["device_id"] == DEVICE_ID
    assert state["os_version"] == "1.0.0"
    assert state["boot_slot"] == "A"
    assert state["runtime_path"] == bastion.__file__
    assert state["last_result"] == "ok"
    assert (tmp_path / "os-state" / "device-cert.pem").exists()
    assert (tmp_path / "os-state" / "ca-chain.pem").exists()


def test_run_once_keeps_the_tls_key_across_boots(tmp_path: Path) -> None:
    service = FakeService()
    _run_once(tmp_path, httpx.MockTransport(service))
    key_before = (tmp_path / "os-state" / "device-key.pem").read_bytes()
    _run_once(tmp_path, httpx.MockTransport(service))
    assert (tmp_path / "os-state" / "device-key.pem").read_bytes() == key_before


def test_run_once_fails_with_the_services_reason(tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(403, json={"error": "device_revoked", "detail": "revoked by operator"})

    assert _run_once(tmp_path, httpx.MockTransport(refuse)) == EXIT_ATTESTATION
    state = json.loads((tmp_path / "os-state" / "state.json").read_text())
    assert (state["last_result"], state["last_reason"]) == ("refused", "device_revoked")


def test_a_reschedule_while_the_job_runs_is_kept_and_wakes_the_scheduler() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    stop = threading.Event()
    sched = Scheduler(clock=lambda: now, stop=stop)
    runs: list[float] = []

    def job(at: dt.datetime) -> dt.datetime:
        runs.append(time.monotonic())
        if len(runs) == 1:
            sched.reschedule("job", at)  # e.g. the control socket, while the job runs
        if len(runs) == 3:
            stop.set()
        return at + dt.timedelta(hours=1)

    sched.add("job", job, first_at=now)
    thread = threading.Thread(target=sched.run)
    thread.start()
    deadline = time.monotonic() + 10
    while len(runs) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runs) == 2  # the reschedule during run 1 was not overwritten by its answer
    assert sched.due_times()["job"] == now + dt.timedelta(hours=1)
    woken = time.monotonic()
    sched.reschedule("job", now)
    sched.wake()
    thread.join(10)
    assert len(runs) == 3
    assert runs[2] - woken < WAKE_POLL_S + 0.5
