"""App-to-app messages: both manifests must list each other; bounded; a waiting receive blocks nothing else."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from _applibs_rig import CID, OTHER, AppRig, manifest

from bastion.applibs import _client, application
from bastion.applibs.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError, QuotaExceededError
from bastion.images.manifest import AppManifest
from bastion.os.appservices.application import MessageLimits, MessageService
from bastion.os.appservices.channel import ChannelService
from bastion.os.appservices.services import AppServices

THIRD = "3b9f7c1e-2d4a-4f6b-9e8d-7c6b5a4f3e2d"


class Fleet:
    """Installed apps and one shared set of OS services."""

    def __init__(self, tmp_path: Path, limits: MessageLimits | None = None) -> None:
        self.tmp_path = tmp_path
        self.manifests: dict[str, AppManifest] = {}
        self.services = AppServices()
        self.messages = MessageService(self.manifests.get, limits)
        self.channels = ChannelService(max_per_app=2)
        self.services.add(self.messages)
        self.services.add(self.channels)
        self.rigs: list[AppRig] = []

    def app(self, component_id: str, lists: list[str], app_type: str = "Default") -> AppRig:
        caps: dict[str, object] = {"AllowedApplicationConnections": lists} if lists else {}
        self.manifests[component_id] = manifest(caps, component_id=component_id, app_type=app_type)
        rig = AppRig(
            self.tmp_path / component_id, caps, services=self.services, component_id=component_id, app_type=app_type
        )
        self.rigs.append(rig)
        return rig

    def close(self) -> None:
        for rig in self.rigs:
            rig.close()
        self.channels.close_all()


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    f = Fleet(tmp_path)
    yield f  # type: ignore[misc]
    f.close()


def _send(rig: AppRig, to: str, data: bytes) -> None:
    rig.call("application.send", {"component_id": to, "data_b64": base64.b64encode(data).decode()})


def _receive(rig: AppRig, timeout_ms: int = 0) -> dict[str, str] | None:
    return rig.call("application.receive", {"timeout_ms": timeout_ms})["message"]


def test_two_apps_that_list_each_other_exchange_messages(fleet: Fleet) -> None:
    a, b = fleet.app(CID, [OTHER]), fleet.app(OTHER, [CID.upper()])  # IDs compare case-insensitively
    _send(a, OTHER, b"ping")
    assert _receive(b) == {"from": CID, "data_b64": base64.b64encode(b"ping").decode()}
    _send(b, CID, b"pong")
    assert _receive(a) == {"from": OTHER, "data_b64": base64.b64encode(b"pong").decode()}
    assert _receive(a) is None
    assert a.records == b.records == []


def test_one_way_listing_is_refused_both_ways(fleet: Fleet) -> None:
    a, b = fleet.app(CID, [OTHER]), fleet.app(OTHER, [THIRD])
    with pytest.raises(PermissionDeniedError, match="does not list this app") as info:
        _send(a, OTHER, b"x")
    assert info.value.capability == "AllowedApplicationConnections"
    assert a.denied() == [
        f"AllowedApplicationConnections: application.send: app {OTHER} does not list this app in its "
        "AllowedApplicationConnections"
    ]
    with pytest.raises(PermissionDeniedError, match=f"does not list {CID}"):
        _send(b, CID, b"x")
    assert len(b.denied()) == 1
    assert fleet.messages.waiting(OTHER) == fleet.messages.waiting(CID) == 0


def test_without_the_capability_both_ops_are_denied(fleet: Fleet) -> None:
    fleet.app(OTHER, [CID])
    lonely = fleet.app(CID, [])
    for op in ("application.send", "application.receive"):
        with pytest.raises(PermissionDeniedError) as info:
            lonely.call(op, {"component_id": OTHER, "data_b64": ""})
        assert info.value.capability == "AllowedApplicationConnections"
    assert len(lonely.denied()) == 2


def test_unknown_partner_size_and_id_bounds(fleet: Fleet) -> None:
    a = fleet.app(CID, [OTHER, THIRD])
    fleet.app(OTHER, [CID])
    with pytest.raises(NotFoundError):
        _send(a, THIRD, b"x")
    with pytest.raises(InvalidArgumentError, match="4096"):
        _send(a, OTHER, b"x" * 4097)
    with pytest.raises(InvalidArgumentError, match="UUID"):
        _send(a, "../etc", b"x")
    with pytest.raises(InvalidArgumentError):
        a.call("application.receive", {"timeout_ms": 10_001})


def test_a_full_inbox_refuses_and_keeps_what_it_has(tmp_path: Path) -> None:
    fleet = Fleet(tmp_path, MessageLimits(max_inbox=2))
    try:
        a, b = fleet.app(CID, [OTHER]), fleet.app(OTHER, [CID])
        _send(a, OTHER, b"1")
        _send(a, OTHER, b"2")
        with pytest.raises(QuotaExceededError, match="2 messages waiting"):
            _send(a, OTHER, b"3")
        got = [_receive(b), _receive(b), _receive(b)]
        assert [base64.b64decode(m["data_b64"]) if m else None for m in got] == [b"1", b"2", None]
    finally:
        fleet.close()


def test_a_waiting_receive_does_not_delay_other_calls(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = fleet.app(CID, [OTHER]), fleet.app(OTHER, [CID])
    b.install(monkeypatch)
    got: list[application.Message | None] = []
    waiter = threading.Thread(target=lambda: got.append(application.receive_message(timeout=5.0)))
    waiter.start()
    time.sleep(0.2)  # the receive is waiting on its channel
    started = time.monotonic()
    assert _client.connection().call("app.ping", {"echo": "free"}) == {"echo": "free"}
    # Well under the receive's 5 s: the call did not queue behind it (slack for a loaded, parallel run).
    assert time.monotonic() - started < 2.5
    _send(a, OTHER, b"wake")
    waiter.join(5)
    assert got == [application.Message(CID, b"wake")]
    assert fleet.channels.count(OTHER) == 1
    assert application.receive_message(timeout=0.05) is None  # same channel again
    assert fleet.channels.count(OTHER) == 1


def test_channels_are_bounded_and_freed_when_closed(fleet: Fleet) -> None:
    a = fleet.app(CID, [])
    first, fds1 = a.connection.call_fds("applibs.channel")
    _, fds2 = a.connection.call_fds("applibs.channel")
    assert first["max_wait_s"] == 10.0
    with pytest.raises(QuotaExceededError, match="channels"):
        a.connection.call_fds("applibs.channel")
    channel = _client.Connection(socket.socket(fileno=fds1[0]))
    assert channel.call("app.ping", {"echo": "on channel"}) == {"echo": "on channel"}
    with pytest.raises(PermissionDeniedError):  # the same choke point serves the channel
        channel.call("storage.write", {"name": "x", "data_b64": ""})
    channel.close()
    deadline = time.monotonic() + 5
    while fleet.channels.count(CID) > 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fleet.channels.count(CID) == 1
    _, fds3 = a.connection.call_fds("applibs.channel")
    for fd in (*fds2, *fds3):
        os.close(fd)


def test_a_real_time_partner_may_message(fleet: Fleet) -> None:
    hl = fleet.app(CID, [OTHER])
    rt = fleet.app(OTHER, [CID], app_type="RealTimeCapable")
    _send(rt, CID, b"from the M4")
    assert _receive(hl) == {"from": OTHER, "data_b64": base64.b64encode(b"from the M4").decode()}
    _send(hl, OTHER, b"to the M4")
    assert _receive(rt) is not None
    _, fds = rt.connection.call_fds("applibs.channel")
    os.close(fds[0])


def test_only_messaging_and_channels_of_this_area_are_open_to_real_time_apps() -> None:
    from bastion.os.appservices.table import OPERATIONS

    mine = ("storage.", "application.", "applibs.", "sysevent.", "power.", "rtc.", "certstore.", "watchdog.")
    realtime = sorted(name for name, op in OPERATIONS.items() if op.realtime and name.startswith(mine))
    assert realtime == sorted(["application.receive", "application.send", "applibs.channel"])


def test_a_real_time_app_is_refused_storage(fleet: Fleet) -> None:
    rt = fleet.app(OTHER, [CID], app_type="RealTimeCapable")
    with pytest.raises(PermissionDeniedError, match="real-time"):
        rt.call("storage.usage")
    assert len(rt.denied()) == 1
