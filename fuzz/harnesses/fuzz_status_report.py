"""Fuzz the service's status report parser (:func:`bastion.service.devicestatus.report.parse_report`).

The input is the COSE payload of ``POST /api/v1/device/status`` (the signature is
checked before this parser runs, but the signer is any device the tenant CA
certified, so the payload is device-controlled). Bounds are the service defaults.

Documented error: :class:`ReportError`.
"""

from __future__ import annotations

import cbor2

from bastion.service.devicestatus.report import ReportError, parse_report
from bastion.service.fleet.limits import DEFAULT_FLEET_LIMITS

_LIMITS = DEFAULT_FLEET_LIMITS
_REPORT = {
    "device_id": "ab" * 32,
    "iat": 1_767_225_600,
    "os_version": "1.0.0",
    "boot_slot": "A",
    "group_id": "g-1",
    "installed": [{"component_id": "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10", "version": "1.0.0", "sandbox": "bwrap"}],
    "events": [
        {"at": 1_767_225_000, "kind": "app_started", "component_id": "app", "version": "1.0.0", "detail": "ok"},
        {"at": 1_767_225_001, "kind": "os_rolled_back", "detail": "boot \x07 failed"},
    ],
}
SEEDS: list[bytes] = [
    cbor2.dumps(_REPORT, canonical=True),
    cbor2.dumps({**_REPORT, "group_id": None, "installed": [], "events": [], "future": 1}, canonical=True),
]


def test_one_input(data: bytes) -> None:
    """Parse ``data`` as a status report payload."""
    try:
        parse_report(
            data,
            max_events=_LIMITS.max_status_events,
            max_installed=_LIMITS.max_status_installed,
            max_detail_chars=_LIMITS.max_event_detail_chars,
        )
    except ReportError:
        return
