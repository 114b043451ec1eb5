"""What the device captures (bastion.os.reporting.capture): app exits, tracebacks, events, boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.os.reporting.capture import AppExit, FailureReporter, normalise_path, parse_traceback
from bastion.os.reporting.queue import ReportQueue
from bastion.os.updates.events import Event, EventQueue

TRACEBACK = """starting
Traceback (most recent call last):
  File "/app/main.py", line 12, in <module>
    main()
  File "/app/lib/work.py", line 4, in main
    1 / 0
    ~~^~~
  File "/usr/lib/python3.11/fractions.py", line 9, in helper
ZeroDivisionError: division by zero
"""


def _reporter(tmp_path: Path) -> tuple[FailureReporter, list[int]]:
    urgent: list[int] = []
    reporter = FailureReporter(ReportQueue(tmp_path / "q.json"), on_urgent=lambda: urgent.append(1))
    reporter.os_version = "1.0.0"
    return reporter, urgent


def test_a_python_traceback_gives_type_and_normalised_frames() -> None:
    exception, frames = parse_traceback(TRACEBACK)
    assert exception == "ZeroDivisionError"
    assert [(f.file, f.function, f.line) for f in frames] == [
        ("main.py", "<module>", 12),
        ("lib/work.py", "main", 4),
        ("<lib>/fractions.py", "helper", 9),
    ]


def test_a_chained_traceback_gives_the_last_one() -> None:
    text = (
        TRACEBACK
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + TRACEBACK.replace("ZeroDivisionError: division by zero", "mod.CustomError")
    )
    assert parse_traceback(text)[0] == "CustomError"


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/app/main.py", "main.py"),
        ("/srv/dev-7/os-state/apps/x/1.0.0/main.py", "main.py"),
        ("/home/alice/secret-project/mod.py", "<lib>/mod.py"),
        ("<string>", "<string>"),
    ],
)
def test_paths_carry_no_device_data(path: str, expected: str) -> None:
    assert normalise_path(path, app_roots=["/srv/dev-7/os-state/apps/x/1.0.0"]) == expected


def test_the_same_crash_repeated_is_one_record_with_its_count(tmp_path: Path) -> None:
    reporter, urgent = _reporter(tmp_path)
    for at in (100, 110, 120):
        reporter.app_exited(AppExit("app", "1.0.0", 1, True, 3, TRACEBACK), at)
    (record,) = reporter.queue.open_records()
    assert (record.category, record.event_type, record.count) == ("AppCrash", "python_exception", 3)
    assert (record.first_at, record.last_at, record.uptime_s) == (100, 120, 3)
    assert record.description == "ZeroDivisionError: division by zero"
    assert urgent == [1]  # the third crash within the window is a crash loop


def test_signals_and_exit_codes(tmp_path: Path) -> None:
    reporter, _ = _reporter(tmp_path)
    reporter.app_exited(AppExit("app", "1.0.0", 128 + 11, True, 1, ""), 1)
    reporter.app_exited(AppExit("app", "1.0.0", -9, False, 1, ""), 2)
    reporter.app_exited(AppExit("app", "1.0.0", 3, True, 1, "bye"), 3)
    records = reporter.queue.open_records()
    assert [(r.category, r.event_type, r.signal, r.exit_code) for r in records] == [
        ("AppCrash", "signal", 11, None),
        ("AppCrash", "signal", 9, None),
        ("AppExit", "exit_code", None, 3),
    ]


def test_events_become_records_and_denials_are_urgent(tmp_path: Path) -> None:
    reporter, urgent = _reporter(tmp_path)
    events = EventQueue(tmp_path / "events.json")
    events.listener = reporter.on_event
    events.record(at=5, kind="app_denied", component_id="app", version="1.0.0", detail="gpio 3: needs Gpio")
    events.record(at=6, kind="os_rolled_back", version="1.1.0", detail="trial OS 1.1.0 failed")
    events.record(at=7, kind="app_started", component_id="app", version="1.0.0")
    denied, rolled = reporter.queue.open_records()
    assert (denied.category, denied.event_type, denied.capability) == ("Security", "capability_denied", "Gpio")
    assert (rolled.category, rolled.event_type, rolled.component_id, rolled.reason) == (
        "Update",
        "update_rolled_back",
        "",
        "failed",
    )
    assert urgent == [1]


def test_boot_process_events_are_imported_once(tmp_path: Path) -> None:
    reporter, _ = _reporter(tmp_path)
    events = [Event(at=50, kind="os_crashed", detail="the OS died by signal 11")]
    assert reporter.import_boot_events(events) == 1
    again = FailureReporter(ReportQueue(tmp_path / "q.json"))
    assert again.import_boot_events(events) == 0
    reporter.booted(at=60, reason="after_os_crash")
    crash, boot = again.queue.open_records() + reporter.queue.open_records()[1:]
    assert (crash.category, crash.event_type) == ("OS", "os_crash")
    assert (boot.event_type, boot.reason) == ("boot", "after_os_crash")


def test_attestation_refusals_and_failed_renewals(tmp_path: Path) -> None:
    reporter, _ = _reporter(tmp_path)
    reporter.attestation_failed(at=1, reason="unknown_os", renewal=False)
    reporter.attestation_failed(at=2, reason="device_revoked", renewal=True)
    first, second = reporter.queue.open_records()
    assert (first.category, first.event_type, first.reason) == ("Attestation", "attestation_failed", "unknown_os")
    assert (second.category, second.event_type) == ("Certificate", "renewal_failed")
