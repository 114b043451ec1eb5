"""A real sandboxed Python app that crashes, through the app manager: one coalesced record, normalised frames."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

from _sandbox_support import NOW, install_app, make_device

from bastion.os.reporting.capture import FailureReporter
from bastion.os.reporting.queue import ReportQueue

APP_ID = "c0ffee00-0000-4000-8000-00000000c4a5"
CRASHER = """\
def divide(x):
    return x / 0


divide(1)
"""


def test_the_crasher_app_gives_one_record_with_the_right_count(tmp_path: Path) -> None:
    device = make_device(tmp_path)
    reporter = FailureReporter(ReportQueue(tmp_path / "os-state" / "error-reports.json"))
    device.events.listener = reporter.on_event
    device.manager.on_exit = reporter.app_exited
    install_app(tmp_path / "build", device.store, APP_ID, CRASHER, files={"lib/__init__.py": ""})
    device.manager.start_all(NOW)
    for crash in range(3):
        device.wait_exit(APP_ID)
        if crash < 2:
            record = device.manager._apps[APP_ID]
            record.restart_at = NOW
            device.manager.poll(NOW + dt.timedelta(seconds=crash + 1))
    records = [r for r in reporter.queue.open_records() if r.category == "AppCrash"]
    assert len(records) == 1, records
    (record,) = records
    assert (record.event_type, record.exception, record.count) == ("python_exception", "ZeroDivisionError", 3)
    assert [(f.file, f.function) for f in record.frames or ()] == [("main.py", "<module>"), ("main.py", "divide")]
    assert record.description == "ZeroDivisionError: division by zero"
    assert str(tmp_path) not in repr(dataclasses.asdict(record))  # no device path leaves the device
