"""The device and the service agree on the status-report wire contract (docs/updates.md).

The service may not import device-side packages, so each side keeps its own list
of event kinds and bounds; this test keeps them from drifting apart.
"""

from __future__ import annotations

from bastion.os.updates import events as device_events
from bastion.service.devicestatus import report as service_report


def test_event_kinds_agree() -> None:
    assert device_events.EVENT_KINDS == service_report.EVENT_KINDS
