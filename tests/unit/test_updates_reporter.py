"""Status reports: iat strictly increases, across reboots and after a replay refusal."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import cbor2
import httpx

from bastion.crypto.cose import decode_sign1
from bastion.crypto.keys import generate_private_key
from bastion.os.updates.events import EventQueue
from bastion.os.updates.reporter import MAX_REPORT_BYTES, DeviceStatus, StatusReporter

NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
STATUS = DeviceStatus(device_id="ab" * 32, os_version="1.0.0", boot_slot="A", group_id=None)


class Service:
    """Accepts a report only if its iat is later than the last accepted one (as the real service)."""

    def __init__(self) -> None:
        self.last_iat = 0
        self.seen: list[int] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        iat = int(cbor2.loads(decode_sign1(request.content).payload)["iat"])
        self.seen.append(iat)
        if iat <= self.last_iat:
            return httpx.Response(409, json={"error": "replayed_report", "detail": "replay"})
        self.last_iat = iat
        return httpx.Response(200, json={"ok": True})


def reporter(tmp_path: Path, service: Service) -> StatusReporter:
    key = generate_private_key()
    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(service))
    queue = EventQueue(tmp_path / "events.json")
    return StatusReporter(http, queue, credentials=lambda: (key, b"cert"), iat_path=tmp_path / "report-iat")


def test_a_reboot_in_the_same_second_does_not_replay(tmp_path: Path) -> None:
    service = Service()
    assert reporter(tmp_path, service).send(STATUS, now=NOW)
    # The OS restarts (a new reporter) and reports again within the same second.
    again = reporter(tmp_path, service)
    assert again.send(STATUS, now=NOW)
    assert service.seen == [int(NOW.timestamp()), int(NOW.timestamp()) + 1]


def test_a_replay_refusal_is_retried_at_once_with_a_later_iat(tmp_path: Path) -> None:
    service = Service()
    service.last_iat = int(NOW.timestamp()) + 1  # the service accepted a later report we forgot
    sender = reporter(tmp_path, service)
    assert sender.send(STATUS, now=NOW)
    assert service.seen == [int(NOW.timestamp()), int(NOW.timestamp()) + 1, int(NOW.timestamp()) + 2]


def test_replay_retries_are_bounded(tmp_path: Path) -> None:
    service = Service()
    service.last_iat = int(NOW.timestamp()) + 100
    sender = reporter(tmp_path, service)
    assert not sender.send(STATUS, now=NOW)
    assert len(service.seen) == 4  # one try and three retries, then it waits for the next check
    assert sender.last_result == "refused"


def test_sandbox_lines_are_dropped_before_a_report_goes_over_its_bound(tmp_path: Path) -> None:
    installed = [(f"{i:08d}-0000-4000-8000-000000000000", "1.0.0") for i in range(100)]
    line = "bwrap uid=10001 ns=user,pid,ipc,uts,cgroup,net seccomp landlock=7+net+scoped cgroup " + "x" * 70
    small = DeviceStatus("ab" * 32, "1.0.0", "A", None, installed[:2], sandbox={c: line for c, _ in installed})
    big = DeviceStatus("ab" * 32, "1.0.0", "A", None, installed, sandbox={c: line for c, _ in installed})
    seen: list[dict[str, object]] = []

    def service(request: httpx.Request) -> httpx.Response:
        assert len(request.content) <= MAX_REPORT_BYTES
        seen.append(cbor2.loads(decode_sign1(request.content).payload))
        return httpx.Response(200, json={"ok": True})

    key = generate_private_key()
    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(service))
    sender = StatusReporter(http, EventQueue(tmp_path / "events.json"), credentials=lambda: (key, b"cert"))
    assert sender.send(small, now=NOW)
    assert sender.send(big, now=NOW + dt.timedelta(seconds=1))
    http.close()
    assert [item["sandbox"] for item in seen[0]["installed"]] == [line, line]  # type: ignore[index]
    assert len(seen[1]["installed"]) == 100  # type: ignore[arg-type]
    assert not any("sandbox" in item for item in seen[1]["installed"])  # type: ignore[attr-defined]
