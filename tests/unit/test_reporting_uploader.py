"""The failure uploader (bastion.os.reporting.uploader) over httpx.MockTransport: signed, acked, backed off."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import httpx
import pytest

from bastion.crypto.cose import decode_sign1, verify_sign1
from bastion.crypto.error_report import ErrorRecord, decode_batch, decode_log
from bastion.crypto.keys import generate_private_key
from bastion.os.reporting.queue import ReportQueue
from bastion.os.reporting.uploader import ErrorReportUploader, UploadSettings
from bastion.os.updates.reporter import DeviceStatus

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
DEVICE = "ab" * 32
KEY = generate_private_key()
RECORD = ErrorRecord("AppCrash", "Error", "signal", "app", "1.0.0", 1, 5, 5, "killed by signal 11", signal=11)


class Service:
    """A fake service: answers per a script, keeps what it received."""

    def __init__(self, *answers: httpx.Response) -> None:
        self.answers = list(answers)
        self.batches: list[object] = []
        self.logs: list[object] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        message = decode_sign1(request.content)
        verify_sign1(message, KEY.public_key())
        if request.url.path == "/api/v1/device/logs":
            self.logs.append(decode_log(message.payload))
            return httpx.Response(200, json={"status": "delivered"})
        self.batches.append(decode_batch(message.payload))
        if isinstance(self.answers[0], Exception):
            raise self.answers.pop(0)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _uploader(tmp_path: Path, service: Service) -> ErrorReportUploader:
    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(service))
    status = DeviceStatus(
        device_id=DEVICE, os_version="1.0.0", boot_slot="a", group_id="g", installed=[("app", "1.0.0")]
    )
    return ErrorReportUploader(
        http,
        ReportQueue(tmp_path / "q.json"),
        credentials=lambda: (KEY, b"cert"),
        status=lambda: status,
        log_dir=tmp_path,
        jitter=lambda: 0.0,
    )


def _ok(**extra: object) -> httpx.Response:
    return httpx.Response(200, json={"status": "accepted", "records": 1, "log_requests": [], **extra})


def test_records_go_up_signed_and_leave_when_acknowledged(tmp_path: Path) -> None:
    service = Service(_ok())
    uploader = _uploader(tmp_path, service)
    uploader.queue.add(RECORD)
    assert uploader.upload(NOW) == "accepted"
    (batch,) = service.batches
    assert batch.device_id == DEVICE  # type: ignore[attr-defined]
    assert batch.records == (RECORD,)  # type: ignore[attr-defined]
    assert uploader.queue.pending() == 0


def test_a_check_in_with_nothing_sends_the_heartbeat(tmp_path: Path) -> None:
    service = Service(_ok())
    assert _uploader(tmp_path, service).upload(NOW) == "accepted"
    assert service.batches[0].records == ()  # type: ignore[attr-defined]


def test_a_failed_upload_keeps_the_batch_and_backs_off(tmp_path: Path) -> None:
    service = Service(httpx.Response(503), httpx.Response(503), _ok(status="duplicate"))
    uploader = _uploader(tmp_path, service)
    uploader.queue.add(RECORD)
    assert uploader.upload(NOW) == "unreachable"
    first = uploader.retry_at
    assert uploader.upload(NOW) == "unreachable"
    assert first is not None
    assert uploader.retry_at is not None
    assert uploader.retry_at - NOW > first - NOW  # doubled
    assert uploader.job(NOW) == uploader.retry_at  # not due yet: nothing sent
    assert len(service.batches) == 2
    assert uploader.job(uploader.retry_at) is not None
    ids = {b.batch_id for b in service.batches}  # type: ignore[attr-defined]
    assert len(ids) == 1  # the same batch each time
    assert uploader.queue.pending() == 0


def test_a_batch_the_service_will_never_take_is_dropped_not_looped(tmp_path: Path) -> None:
    service = Service(httpx.Response(400, json={"error": "malformed_report"}))
    uploader = _uploader(tmp_path, service)
    uploader.queue.add(RECORD)
    assert uploader.upload(NOW) == "discarded"
    assert uploader.discarded == 1
    assert uploader.queue.pending() == 0


def test_transport_errors_are_kept(tmp_path: Path) -> None:
    service = Service(httpx.ConnectError("down"))  # type: ignore[arg-type]
    uploader = _uploader(tmp_path, service)
    uploader.queue.add(RECORD)
    assert uploader.upload(NOW) == "unreachable"
    assert uploader.queue.pending() == 1


def test_urgent_uploads_are_soon_and_rate_limited(tmp_path: Path) -> None:
    uploader = _uploader(tmp_path, Service(_ok()))
    settings = UploadSettings()
    first = uploader.request_urgent(NOW)
    assert first == NOW + dt.timedelta(seconds=settings.urgent_delay_s)
    uploader.job(first)
    second = uploader.request_urgent(first)
    assert second >= first + dt.timedelta(seconds=settings.urgent_min_gap_s)


def test_a_log_request_uploads_the_apps_bounded_tail(tmp_path: Path) -> None:
    (tmp_path / "app.log").write_text("x" * 5000 + "the end\n")
    request = {"request_id": "7", "component_id": "app", "max_bytes": 1024}
    service = Service(_ok(log_requests=[request]))
    _uploader(tmp_path, service).upload(NOW)
    (upload,) = service.logs
    assert upload.request_id == "7"  # type: ignore[attr-defined]
    assert upload.truncated  # type: ignore[attr-defined]
    assert len(upload.text.encode()) <= 1024  # type: ignore[attr-defined]
    assert upload.text.endswith("the end\n")  # type: ignore[attr-defined]


@pytest.mark.parametrize("component", ["../../os-state/device-key", "other-app", "", "app/../x"])
def test_a_log_request_reads_only_an_installed_apps_log(tmp_path: Path, component: str) -> None:
    service = Service(_ok(log_requests=[{"request_id": "7", "component_id": component, "max_bytes": 100}]))
    _uploader(tmp_path, service).upload(NOW)
    assert service.logs == []


def test_junk_answers_do_not_break_the_uploader(tmp_path: Path) -> None:
    service = Service(httpx.Response(200, content=json.dumps({"log_requests": "x"}).encode()))
    uploader = _uploader(tmp_path, service)
    assert uploader.upload(NOW) == "accepted"
