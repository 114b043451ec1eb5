"""The access log's cheap path (observability/accesslog.py): the same line as the formatter, batched per loop turn."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator

import pytest

from bastion.jsonlog import REQUEST_ID, JsonFormatter
from bastion.service.observability.accesslog import MAX_PENDING_LINES, AccessLogHandler, access_line
from bastion.service.observability.logconfig import ACCESS_LOGGER, log_config
from conftest import TestClient, bearer

DEVICE_ID = "cd" * 32


class CountingStream(io.StringIO):
    """A stream that counts its ``write`` calls (one per flushed batch)."""

    writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)


def _formatter_line(method: str, route: str, status: int, ms: float, *, request_id: str, created: float) -> str:
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "%s %s %d", (method, route, status), None)
    record.created = created
    for name, value in {"method": method, "route": route, "status": status, "ms": ms}.items():
        setattr(record, name, value)
    token = REQUEST_ID.set(request_id)
    try:
        return JsonFormatter(process="service").format(record)
    finally:
        REQUEST_ID.reset(token)


@pytest.mark.parametrize(
    ("method", "route", "status", "ms"),
    [("GET", "/healthz", 200, 0.412), ("POST", "/api/v1/attestation", 403, 12.0), ("other", "unmatched", 404, 0.0)],
)
def test_the_prebuilt_line_is_the_formatters_line(method: str, route: str, status: int, ms: float) -> None:
    created = 1_790_000_000.0456
    ours = json.loads(access_line(method, route, status, ms, "trace-42", now=created))
    theirs = json.loads(_formatter_line(method, route, status, ms, request_id="trace-42", created=created))
    assert ours == theirs | {"pid": ours["pid"]}
    assert ours["ts"] == "2026-09-21T14:13:20.045Z"


def test_a_request_id_outside_the_safe_alphabet_is_escaped_not_embedded() -> None:
    hostile = 'x","status":1,"admin":"1'
    line = json.loads(access_line("GET", "/healthz", 200, 1.0, hostile, now=time.time()))
    assert line["request_id"] == hostile
    assert line["status"] == 200
    assert "admin" not in line


def test_lines_of_one_loop_turn_are_written_with_one_write_at_its_end() -> None:
    stream = CountingStream()
    handler = AccessLogHandler(stream)

    async def serve() -> tuple[str, str]:
        for i in range(3):
            handler.write_line(f'{{"n":{i}}}')
        during = stream.getvalue()
        await asyncio.sleep(0)  # the turn ends: the queued flush runs
        return during, stream.getvalue()

    during, after = asyncio.run(serve())
    assert during == ""
    assert after == '{"n":0}\n{"n":1}\n{"n":2}\n'
    assert stream.writes == 1


def test_outside_an_event_loop_a_line_is_written_at_once() -> None:
    stream = io.StringIO()
    AccessLogHandler(stream).write_line('{"n":1}')
    assert stream.getvalue() == '{"n":1}\n'


def test_the_queue_of_one_turn_is_bounded() -> None:
    stream = io.StringIO()
    handler = AccessLogHandler(stream)

    async def serve() -> int:
        for _ in range(MAX_PENDING_LINES):
            handler.write_line("{}")
        return stream.getvalue().count("\n")

    assert asyncio.run(serve()) == MAX_PENDING_LINES


def test_an_ordinary_record_still_goes_through_the_formatter() -> None:
    stream = io.StringIO()
    handler = AccessLogHandler(stream)
    handler.setFormatter(JsonFormatter(process="service"))
    handler.handle(logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "hello", None, None))
    assert json.loads(stream.getvalue())["msg"] == "hello"


def test_the_service_log_config_sends_the_access_log_through_the_cheap_handler() -> None:
    config = log_config("warning", access_log=True)
    assert config["loggers"][ACCESS_LOGGER]["handlers"] == ["access"]
    assert config["handlers"]["access"]["()"].endswith("accesslog.AccessLogHandler")
    assert config["loggers"][ACCESS_LOGGER]["propagate"] is False


@pytest.fixture
def access_sink() -> Iterator[tuple[AccessLogHandler, io.StringIO]]:
    """The access logger configured as the service configures it, into a buffer."""
    stream = io.StringIO()
    handler = AccessLogHandler(stream)
    handler.setFormatter(JsonFormatter(process="service"))
    access = logging.getLogger(ACCESS_LOGGER)
    old = (access.handlers[:], access.level, access.propagate)
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    try:
        yield handler, stream
    finally:
        access.handlers[:], access.propagate = old[0], old[2]
        access.setLevel(old[1])


def test_served_requests_take_the_cheap_path_and_leak_no_secret(
    client: TestClient,
    access_sink: tuple[AccessLogHandler, io.StringIO],
    tenant: object,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler, stream = access_sink

    def no_record(record: logging.LogRecord) -> None:
        raise AssertionError(f"the access line went the LogRecord way: {record.getMessage()}")

    monkeypatch.setattr(handler, "emit", no_record)
    # pytest (>= 9) hangs its capture handlers on non-propagating loggers too, at each phase's start:
    # they would need the LogRecord, so the cheap path rightly steps aside. Take them off for this call.
    logging.getLogger(ACCESS_LOGGER).handlers[:] = [handler]
    admin = tenant.admin_token  # type: ignore[attr-defined]
    r = client.get("/healthz", headers={"x-request-id": "trace-7"})
    client.get(f"/api/v1/devices/{DEVICE_ID}?access_token=qs-secret-1", headers=bearer(admin))
    client.get("/api/v1/devices", headers={"authorization": "Bearer not-a-real-token-secret"})
    client.get("/tuf/g/targets/abc.bin?credential=qs-secret-2", headers={"x-bastion-download": "dl-secret"})
    handler.flush()  # the test client's loop may not have finished its turn yet
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 4
    assert lines[0] | {"ms": 0, "ts": "", "pid": 0} == {
        "ts": "", "level": "info", "logger": ACCESS_LOGGER, "msg": "GET /healthz 200", "process": "service", "pid": 0,
        "request_id": r.headers["x-request-id"], "method": "GET", "route": "/healthz", "status": 200, "ms": 0,
    }  # fmt: skip
    out = stream.getvalue()
    for secret in (admin, "qs-secret-1", "qs-secret-2", "not-a-real-token-secret", "dl-secret", DEVICE_ID):
        assert secret not in out
