"""The device and the service agree on the status-report wire contract (docs/updates.md).

The service may not import device-side packages, so each side keeps its own list
of event kinds and bounds; this test keeps them from drifting apart.
"""

from __future__ import annotations

import cbor2
import pytest

from bastion.os.sandbox.layers import MAX_SUMMARY_CHARS
from bastion.os.updates import events as device_events
from bastion.os.updates.reporter import DeviceStatus, build_payload
from bastion.service.devicestatus import report as service_report


def test_event_kinds_agree() -> None:
    assert device_events.EVENT_KINDS == service_report.EVENT_KINDS


def test_the_service_accepts_the_sandbox_line_the_device_sends_and_bounds_it() -> None:
    assert service_report.MAX_SANDBOX_CHARS >= MAX_SUMMARY_CHARS
    line = "bwrap uid=10001 ns=user,pid,ipc,uts,cgroup,net seccomp landlock=7+net+scoped cgroup nproc=32"
    status = DeviceStatus("ab" * 32, "1.0.0", "A", None, [("c1", "1.0.0"), ("c2", "2.0.0")], sandbox={"c1": line})
    parsed = service_report.parse_report(
        build_payload(status, [], iat=1), max_events=64, max_installed=64, max_detail_chars=500
    )
    assert [(i.component_id, i.sandbox) for i in parsed.installed] == [("c1", line), ("c2", "")]
    too_long = cbor2.loads(build_payload(status, [], iat=1))
    too_long["installed"][0]["sandbox"] = "x" * (service_report.MAX_SANDBOX_CHARS + 1)
    with pytest.raises(service_report.ReportError, match="sandbox"):
        service_report.parse_report(cbor2.dumps(too_long), max_events=64, max_installed=64, max_detail_chars=500)
