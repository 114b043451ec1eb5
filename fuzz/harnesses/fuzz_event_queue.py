"""Fuzz the device side of status reports: the persistent event queue file and the report it feeds.

The input is ``DEV/os-state/events.json`` as the OS finds it at boot (a power cut
or a full disk may leave anything there). :class:`EventQueue` must load it
without raising (a bad file means an empty queue), and every event it keeps
must make a report the service accepts: a queued event the service refuses
would block every later report from the device, because events leave the
queue only once a report carrying them is accepted.

Documented behaviour: no exception at all from loading.
"""

from __future__ import annotations

import json

from _scratch import scratch_dir

from bastion.os.updates.events import EventQueue
from bastion.os.updates.reporter import MAX_EVENTS_PER_REPORT, DeviceStatus, build_payload
from bastion.service.devicestatus.report import ReportError, parse_report
from bastion.service.fleet.limits import DEFAULT_FLEET_LIMITS

_FILE = scratch_dir("bastion-fuzz-events-") / "events.json"
_STATUS = DeviceStatus(device_id="ab" * 32, os_version="1.0.0", boot_slot="A", group_id=None)
SEEDS: list[bytes] = [
    json.dumps(
        {
            "events": [
                {"at": 1_767_225_000, "kind": "app_started", "component_id": "app", "version": "1.0", "detail": ""},
                {"at": 1_767_225_001, "kind": "os_confirmed"},
            ],
            "dropped": 3,
        }
    ).encode(),
    b'{"events": [], "dropped": 0}\n',
]


def test_one_input(data: bytes) -> None:
    """Load ``data`` as the queue file, then build and parse the report that would carry its events."""
    _FILE.write_bytes(data)
    queue = EventQueue(_FILE)
    events = queue.peek(MAX_EVENTS_PER_REPORT)
    payload = build_payload(_STATUS, events, iat=1_767_225_600)
    try:
        parse_report(
            payload,
            max_events=DEFAULT_FLEET_LIMITS.max_status_events,
            max_installed=DEFAULT_FLEET_LIMITS.max_status_installed,
            max_detail_chars=DEFAULT_FLEET_LIMITS.max_event_detail_chars,
        )
    except ReportError as exc:
        raise RuntimeError(f"the queue kept an event the service refuses: {exc}") from exc
