"""Maintenance window, deferral cap, update pointer, event queue, agent state and config fields."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from test_updates_support import APP_A, APP_B, make_app_dir
from tuf.api import exceptions as tuf_exceptions

from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.images.manifest import validate_manifest
from bastion.os.apps.store import InstalledApp
from bastion.os.config import DEFAULT_UPDATE_INTERVAL_S, DeviceConfig, app_public_keys, encode_config, parse_config
from bastion.os.errors import ConfigError
from bastion.os.updates.agent_state import MAX_REMEMBERED, AgentState, load_agent_state, save_agent_state
from bastion.os.updates.errors import UpdateRefusedError
from bastion.os.updates.events import EventQueue
from bastion.os.updates.pointer import GroupStore, MaintenanceWindow, parse_update_pointer
from bastion.os.updates.policy import MAX_DEFERRAL, decide, remaining_deferral, requested_deferral
from bastion.os.updates.tuf_client import translate_tuf_error

T = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def at(hour: int, minute: int = 0, day: int = 2) -> dt.datetime:
    return dt.datetime(2026, 3, day, hour, minute, tzinfo=dt.UTC)


def test_window_crossing_midnight() -> None:
    window = MaintenanceWindow.parse({"start": "23:00", "duration_minutes": 120})
    assert window is not None
    assert window.is_open(at(23, 30))
    assert window.is_open(at(0, 59, day=3))
    assert not window.is_open(at(1, 0, day=3))
    assert not window.is_open(at(22, 59))
    assert window.next_open(at(12)) == at(23)
    assert window.next_open(at(1, 30, day=3)) == at(23, day=3)
    assert window.next_open(at(23, 10)) == at(23, 10)
    assert window.to_json() == {"start": "23:00", "duration_minutes": 120}


@pytest.mark.parametrize(
    "value",
    [
        {"start": "24:00", "duration_minutes": 10},
        {"start": "1:00", "duration_minutes": 10},
        {"start": "01:00"},
        {"start": "01:00", "duration_minutes": 0},
        {"start": "01:00", "duration_minutes": 1441},
        "01:00",
    ],
)
def test_bad_windows_are_refused(value: object) -> None:
    with pytest.raises(UpdateRefusedError):
        MaintenanceWindow.parse(value)


def test_decide_window_then_deferral_capped() -> None:
    window = MaintenanceWindow(start_minute=0, duration_minutes=60)
    closed = decide(at(12), window=window, requested_until=None, deferral_started=None)
    assert (closed.allowed, closed.reason, closed.retry_at) == (False, "maintenance_window", at(0, day=3))
    assert decide(at(12), window=None, requested_until=None, deferral_started=None).allowed
    far = at(12) + dt.timedelta(days=7)
    first = decide(at(12), window=None, requested_until=far, deferral_started=None)
    assert (first.allowed, first.reason, first.retry_at, first.deferral_started) == (
        False,
        "deferred",
        at(12) + MAX_DEFERRAL,
        at(12),
    )
    later = decide(at(20), window=None, requested_until=far, deferral_started=at(12))
    assert later.retry_at == at(12) + MAX_DEFERRAL
    assert decide(at(12, day=3), window=None, requested_until=far, deferral_started=at(12)).allowed
    short = decide(at(12), window=None, requested_until=at(13), deferral_started=None)
    assert short.retry_at == at(13)


def test_requested_deferral_counts_only_entitled_apps_and_live_requests(tmp_path: Path) -> None:
    apps = []
    for cid, deferral in ((APP_A, True), (APP_B, False)):
        app_dir = make_app_dir(tmp_path, cid, deferral=deferral)
        manifest = validate_manifest((app_dir / "app_manifest.json").read_bytes())
        apps.append(InstalledApp(cid, "1.0.0", app_dir, manifest))
    week = at(12) + dt.timedelta(days=7)
    assert requested_deferral(apps, {APP_B: week}, at(12)) is None  # B lacks SoftwareUpdateDeferral
    assert requested_deferral(apps, {APP_A: at(11)}, at(12)) is None  # A's request has ended
    assert requested_deferral(apps, {APP_A: at(13), APP_B: week, "gone": week}, at(12)) == (at(13), [APP_A])
    assert remaining_deferral(at(12), None) == MAX_DEFERRAL
    assert remaining_deferral(at(20), at(12)) == dt.timedelta(hours=16)
    assert remaining_deferral(at(12, day=4), at(12)) == dt.timedelta(0)


def test_update_pointer_parsing() -> None:
    root = b'{"signed": {}}'
    value = {
        "group_id": "g-1",
        "tuf_base": "/tuf/g-1/",
        "root": base64.b64encode(root).decode(),
        "maintenance_window": {"start": "02:30", "duration_minutes": 60},
    }
    pointer = parse_update_pointer(value)
    assert pointer is not None
    assert (pointer.group_id, pointer.tuf_base, pointer.root) == ("g-1", "/tuf/g-1", root)
    assert pointer.maintenance_window == MaintenanceWindow(150, 60)
    for empty in (None, {}, []):
        assert parse_update_pointer(empty) is None
    for bad in (
        {**value, "group_id": "../x"},
        {**value, "tuf_base": "http://evil/"},
        {**value, "tuf_base": "/a/../b"},
        {**value, "root": "not base64!"},
        {**value, "root": None},
        "x",
    ):
        with pytest.raises(UpdateRefusedError):
            parse_update_pointer(bad)


def test_first_root_per_group_is_kept(tmp_path: Path) -> None:
    store = GroupStore(tmp_path / "tuf")
    first = parse_update_pointer({"group_id": "g1", "tuf_base": "/tuf/g1", "root": base64.b64encode(b"one").decode()})
    later = parse_update_pointer({"group_id": "g1", "tuf_base": "/tuf/g1", "root": base64.b64encode(b"two").decode()})
    assert store.remember(first) is True
    assert store.remember(later) is False
    assert (tmp_path / "tuf" / "g1" / "root.json").read_bytes() == b"one"  # later roots only via TUF
    current = store.current()
    assert current is not None
    assert (current.group_id, current.root) == ("g1", None)
    other = parse_update_pointer({"group_id": "g2", "tuf_base": "/tuf/g2", "root": base64.b64encode(b"r2").decode()})
    assert store.remember(other) is True
    assert store.current().group_id == "g2"  # type: ignore[union-attr]
    store.remember(None)
    assert store.current() is None


def test_event_queue_is_persistent_and_bounded(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    queue = EventQueue(path, max_events=3)
    for n in range(5):
        queue.record(at=n, kind="app_started", component_id="c", detail="x" * 1000)
    again = EventQueue(path, max_events=3)
    assert [e.at for e in again.all()] == [2, 3, 4]
    assert again.dropped == 2
    assert len(again.all()[0].detail) == 200
    head = again.peek(2)
    again.remove(head)
    assert [e.at for e in EventQueue(path).all()] == [4]
    with pytest.raises(ValueError, match="unknown event kind"):
        again.record(at=1, kind="nonsense")
    path.write_text("not json")
    assert EventQueue(path).all() == []


def test_agent_state_round_trip_and_bounds(tmp_path: Path) -> None:
    state = AgentState()
    for n in range(MAX_REMEMBERED + 5):
        state.refuse(f"{n:064x}", "hash")
    state.mark_bad_os("ab" * 32)
    save_agent_state(tmp_path, state)
    again = load_agent_state(tmp_path)
    assert len(again.refused) == MAX_REMEMBERED
    assert again.is_blocked("ab" * 32)
    assert not again.is_blocked(f"{0:064x}")  # the oldest was forgotten
    (tmp_path / "updates.json").write_text(json.dumps({"refused": [], "bad_os": {}}))
    assert load_agent_state(tmp_path) == AgentState()


def test_config_update_fields(tmp_path: Path) -> None:
    key = generate_private_key().public_key()
    pem = public_key_pem(key).decode()
    config = DeviceConfig(service_url="http://svc", app_signing_keys=(pem,), update_interval_s=60.0, app_updates=False)
    again = parse_config(encode_config(config))
    assert again == config
    assert len(app_public_keys(again)) == 1
    assert parse_config(b'{"service_url": "http://svc"}').update_interval_s == DEFAULT_UPDATE_INTERVAL_S == 72000
    for bad in (
        {"app_signing_keys": ["nope"]},
        {"app_signing_keys": "x"},
        {"update_interval_s": 0},
        {"app_updates": "yes"},
        {"app_signing_keys": [pem] * 9},
    ):
        with pytest.raises(ConfigError):
            parse_config(json.dumps({"service_url": "http://svc", **bad}).encode())


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (tuf_exceptions.ExpiredMetadataError("timestamp.json is expired"), "freeze"),
        (tuf_exceptions.BadVersionNumberError("New timestamp version 1 must be >= 2"), "rollback"),
        (tuf_exceptions.BadVersionNumberError("Expected targets version 3, got 2."), "mix-and-match"),
        (tuf_exceptions.RepositoryError("Snapshot does not contain information for 'targets'"), "mix-and-match"),
        (tuf_exceptions.LengthOrHashMismatchError("Observed hash x does not match expected hash y"), "hash"),
        (tuf_exceptions.LengthOrHashMismatchError("Length mismatch"), "length"),
        (tuf_exceptions.DownloadLengthMismatchError("too long"), "length"),
        (tuf_exceptions.UnsignedMetadataError("not signed"), "signature"),
    ],
)
def test_tuf_errors_map_to_refusal_reasons(exc: Exception, reason: str) -> None:
    mapped = translate_tuf_error(exc)
    assert isinstance(mapped, UpdateRefusedError)
    assert mapped.reason == reason
