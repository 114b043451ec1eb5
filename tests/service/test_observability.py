"""/healthz, /readyz, /metrics, the request id and the JSON access log (ADR 0019)."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine, text

from bastion.jsonlog import JsonFormatter, redact
from bastion.service import metrics
from bastion.service.config import Settings
from bastion.service.observability.endpoints import ObservabilitySettings
from bastion.service.observability.logconfig import ACCESS_LOGGER
from bastion.service.observability.middleware import MAX_REQUEST_ID_CHARS
from bastion.service.observability.readiness import TUF_MIN_REMAINING, readiness
from conftest import FakeClock, TestClient, bearer

DEVICE_ID = "ab" * 32


def sample(text_: str, name: str, **labels: str) -> float:
    """The value of one sample of the text exposition (0 when absent)."""
    for line in text_.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.rpartition("} ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """Every line the service logs (access log included), formatted as the service formats them."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter(process="service"))
    handler.addFilter(lambda record: not record.name.startswith("httpx"))  # the test client's own lines
    root, access = logging.getLogger(), logging.getLogger(ACCESS_LOGGER)
    old = (root.level, access.level)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    access.setLevel(logging.INFO)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old[0])
        access.setLevel(old[1])


# --- /healthz and the request id ------------------------------------------------------------------


def test_healthz_answers_with_a_generated_request_id(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])
    assert client.get("/healthz").headers["x-request-id"] != r.headers["x-request-id"]


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("lb-1234.abc:9", True), ("a" * MAX_REQUEST_ID_CHARS, True), ("a" * (MAX_REQUEST_ID_CHARS + 1), False),
     ("bad id", False), ("x\u00e9", False), ("", False)],
)  # fmt: skip
def test_incoming_request_id_is_kept_only_within_bounds(client: TestClient, incoming: str, kept: bool) -> None:
    r = client.get("/healthz", headers={"x-request-id": incoming.encode("utf-8")})
    assert (r.headers["x-request-id"] == incoming) is kept
    assert len(r.headers["x-request-id"]) <= MAX_REQUEST_ID_CHARS


def test_error_answers_carry_the_request_id_too(client: TestClient) -> None:
    r = client.get("/api/v1/nowhere", headers={"x-request-id": "req-404"})
    assert r.status_code == 404
    assert r.headers["x-request-id"] == "req-404"
    r = client.post("/api/v1/attestation", content=b"x", headers={"x-request-id": "req-415"})
    assert r.headers["x-request-id"] == "req-415"  # a fast path, outside FastAPI


# --- /readyz --------------------------------------------------------------------------------------


def test_readyz_is_ready_on_a_migrated_database(client: TestClient) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ready", "checks": dict.fromkeys(("database", "migrations", "blobs", "tuf"), "ok")}


def test_readyz_names_a_database_that_is_gone(client: TestClient, app: FastAPI, tmp_path: Path) -> None:
    app.state.engine = create_engine(f"sqlite:///{tmp_path}/no/such/dir/db.sqlite")
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready"
    assert "database" in body["failed"]
    assert body["checks"]["database"].startswith("unavailable")
    assert body["checks"]["blobs"] == "ok"


def test_readyz_names_a_migration_head_that_does_not_match(client: TestClient, app: FastAPI) -> None:
    with app.state.engine.begin() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(text("UPDATE alembic_version SET version_num = '0004_older'"))
    try:
        r = client.get("/readyz")
    finally:  # PostgreSQL's schema outlives the test: put the real head back
        with app.state.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert r.status_code == 503
    assert r.json()["failed"] == ["migrations"]
    assert "database at 0004_older" in r.json()["checks"]["migrations"]


def test_readyz_names_a_blob_store_that_takes_no_write(client: TestClient, settings: Settings) -> None:
    # The tests run as root, whom a read-only mode does not stop; a file where the directory
    # should be refuses the write for anyone.
    blobs = settings.home / "blobs"
    if blobs.exists():
        import shutil

        shutil.rmtree(blobs)
    blobs.write_bytes(b"not a directory")
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["failed"] == ["blobs"]
    assert r.json()["checks"]["blobs"].startswith("not writable")


def _timestamp(settings: Settings, group: str, expires: dt.datetime) -> None:
    meta = settings.home / "blobs" / "tuf" / group / "metadata"
    meta.mkdir(parents=True, exist_ok=True)
    stamp = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
    (meta / "timestamp.json").write_bytes(orjson.dumps({"signed": {"_type": "timestamp", "expires": stamp}}))


def test_readyz_names_tuf_metadata_near_expiry(client: TestClient, settings: Settings, clock: FakeClock) -> None:
    _timestamp(settings, "fresh", clock() + dt.timedelta(hours=20))
    assert client.get("/readyz").status_code == 200
    _timestamp(settings, "stale", clock() + TUF_MIN_REMAINING - dt.timedelta(minutes=1))
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["failed"] == ["tuf"]
    assert "stale" in r.json()["checks"]["tuf"]
    assert "fresh" not in r.json()["checks"]["tuf"]


class _HungEngine:
    """An engine whose connect blocks (a database that accepts and never answers)."""

    def connect(self) -> object:
        time.sleep(3)
        raise RuntimeError("unreachable")


def test_readyz_is_bounded_in_time_when_the_database_hangs(settings: Settings, clock: FakeClock) -> None:
    start = time.monotonic()
    report = asyncio.run(readiness(settings, _HungEngine(), now=clock(), timeout_s=0.3))  # type: ignore[arg-type]
    assert time.monotonic() - start < 2
    assert not report.ok
    assert report.checks["database"].startswith("timed out")
    assert report.checks["blobs"] == "ok"


# --- /metrics -------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_template_not_raw_path(client: TestClient) -> None:
    before = client.get("/metrics").text
    route = "/api/v1/devices/{device_id}"
    base = sample(before, "bastion_http_requests_total", route=route, method="GET", status="401")
    for _ in range(3):
        assert client.get(f"/api/v1/devices/{DEVICE_ID}?token=s3cr3t").status_code == 401
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    assert sample(after.text, "bastion_http_requests_total", route=route, method="GET", status="401") == base + 3
    assert sample(after.text, "bastion_http_request_duration_seconds_count", route=route, method="GET") >= 3
    assert DEVICE_ID not in after.text
    assert "s3cr3t" not in after.text
    client.get("/no/such/" + DEVICE_ID)
    assert DEVICE_ID not in client.get("/metrics").text  # unmatched paths share one label


def test_metrics_count_refused_attestations_by_reason_and_checkins(client: TestClient) -> None:
    text_ = client.get("/metrics").text
    refused = sample(text_, "bastion_attestations_total", result="refused", reason="malformed_evidence")
    r = client.post("/api/v1/attestation", content=b"\xa0", headers={"content-type": "application/eat+cwt"})
    assert r.status_code in {400, 403}, r.text
    reason = r.json()["error"]
    text_ = client.get("/metrics").text
    if reason == "malformed_evidence":
        assert sample(text_, "bastion_attestations_total", result="refused", reason=reason) == refused + 1
    else:
        assert sample(text_, "bastion_attestations_total", result="refused", reason=reason) >= 1
    assert sample(text_, "bastion_http_requests_total", route="/api/v1/attestation", method="POST") >= 1
    # A failed timestamp fetch is not a check-in.
    checkins = sample(text_, "bastion_checkins_total", kind="tuf_timestamp")
    assert client.get("/tuf/nogroup/metadata/timestamp.json").status_code == 404
    text_ = client.get("/metrics").text
    assert sample(text_, "bastion_checkins_total", kind="tuf_timestamp") == checkins
    assert sample(text_, "bastion_http_requests_total", route="/tuf/{group}/metadata/timestamp.json", status="404") >= 1


def test_metrics_report_tuf_metadata_age(client: TestClient, settings: Settings, clock: FakeClock) -> None:
    _timestamp(settings, "g1", clock() + dt.timedelta(hours=10))
    text_ = client.get("/metrics").text
    assert sample(text_, "bastion_tuf_groups") == 1
    assert sample(text_, "bastion_tuf_timestamp_expiry_seconds_min") == pytest.approx(10 * 3600, abs=2)
    assert sample(text_, "bastion_tuf_timestamp_age_seconds_max") >= 0


def test_metrics_can_be_turned_off_or_put_behind_a_token(client: TestClient, app: FastAPI) -> None:
    app.state.observability = ObservabilitySettings(metrics_enabled=False)
    assert client.get("/metrics").status_code == 404
    app.state.observability = ObservabilitySettings.from_env({"BASTION_METRICS_TOKEN": "scrape-secret"})
    r = client.get("/metrics")
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated"
    assert client.get("/metrics", headers=bearer("wrong")).status_code == 401
    assert client.get("/metrics", headers=bearer("scrape-secret")).status_code == 200
    assert ObservabilitySettings.from_env({"BASTION_METRICS": "off"}).metrics_enabled is False
    assert "scrape-secret" not in repr(ObservabilitySettings.from_env({"BASTION_METRICS_TOKEN": "scrape-secret"}))


# --- structured logs ------------------------------------------------------------------------------


def test_access_log_is_one_json_object_per_request_with_its_id(client: TestClient, log_lines: io.StringIO) -> None:
    r = client.get("/healthz", headers={"x-request-id": "trace-42"})
    lines = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == ACCESS_LOGGER]
    assert len(access) == 1
    assert access[0]["request_id"] == r.headers["x-request-id"] == "trace-42"
    assert access[0] | {"ms": 0, "ts": "", "pid": 0} == {
        "ts": "", "level": "info", "logger": ACCESS_LOGGER, "msg": "GET /healthz 200", "process": "service", "pid": 0,
        "request_id": "trace-42", "method": "GET", "route": "/healthz", "status": 200, "ms": 0,
    }  # fmt: skip


def test_secret_hygiene_of_the_access_log(client: TestClient, log_lines: io.StringIO, tenant: object) -> None:
    # Tokens in the Authorization header, a credential in a query string, a device id in the path:
    # none reaches a log line (the access line has the route template, never the path or headers).
    admin = tenant.admin_token  # type: ignore[attr-defined]
    client.get(f"/api/v1/devices/{DEVICE_ID}?access_token=qs-secret-1", headers=bearer(admin))
    client.get("/api/v1/devices", headers={"authorization": "Bearer not-a-real-token-secret"})
    client.get("/tuf/g/targets/abc.bin?credential=qs-secret-2", headers={"x-bastion-download": "dl-secret"})
    out = log_lines.getvalue()
    assert out.count(f'"logger":"{ACCESS_LOGGER}"') == 3
    for secret in (admin, "qs-secret-1", "qs-secret-2", "not-a-real-token-secret", "dl-secret", DEVICE_ID):
        assert secret not in out
    for line in out.splitlines():
        json.loads(line)


def test_secret_hygiene_of_a_logged_exception(app: FastAPI, log_lines: io.StringIO) -> None:
    def boom() -> None:
        raise RuntimeError("upstream said: Authorization: Bearer tok-secret-3 for /x?key=qs-secret-4 password=pw5")

    app.add_api_route("/boom", boom)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"x-request-id": "boom-1"})
    assert r.status_code == 500
    assert r.json()["error"] == "internal_error"
    errors = [json.loads(line) for line in log_lines.getvalue().splitlines() if '"level":"error"' in line]
    assert errors, log_lines.getvalue()
    assert errors[0]["request_id"] == "boom-1"
    assert errors[0]["exc_type"] == "RuntimeError"
    assert "Traceback" in errors[0]["exc"]
    for secret in ("tok-secret-3", "qs-secret-4", "pw5"):
        assert secret not in log_lines.getvalue()


@pytest.mark.parametrize(
    ("raw", "hidden"),
    [("Authorization: Bearer abc.def", "abc.def"), ("token=xyz123", "xyz123"), ("GET /a?sig=zz9 HTTP/1.1", "zz9"),
     ('{"api_key": "k-77"}', "k-77"), ("master_key=AAAA", "AAAA"), ("Basic dXNlcjpwdw==", "dXNlcjpwdw==")],
)  # fmt: skip
def test_redact_masks_secret_shaped_text(raw: str, hidden: str) -> None:
    assert hidden not in redact(raw)
    assert "[redacted]" in redact(raw)


def test_redact_leaves_ordinary_text() -> None:
    text_ = "attested: certificate valid until 2026-01-02T00:00:00Z, renewing at 2026-01-01T19:12:00Z"
    assert redact(text_) == text_


def test_formatter_bounds_and_keeps_scalar_extras() -> None:
    record = logging.LogRecord("bastion.x", logging.WARNING, __file__, 1, "m" * 10_000, None, None)
    record.component = "app-1"
    record.blob = object()
    line = json.loads(JsonFormatter(process="os").format(record))
    assert line["process"] == "os"
    assert len(line["msg"]) <= 8192
    assert line["component"] == "app-1"
    assert "blob" not in line


def test_a_served_timestamp_is_a_checkin(client: TestClient, settings: Settings, clock: FakeClock) -> None:
    group = str(uuid.uuid4())
    _timestamp(settings, group, clock() + dt.timedelta(hours=20))
    before = sample(client.get("/metrics").text, "bastion_checkins_total", kind="tuf_timestamp")
    r = client.get(f"/tuf/{group}/metadata/timestamp.json")
    assert r.status_code == 200, r.text
    text_ = client.get("/metrics").text
    assert sample(text_, "bastion_checkins_total", kind="tuf_timestamp") == before + 1
    assert group not in text_


def test_the_metrics_api_other_slices_use_is_pinned() -> None:
    assert set(metrics.__all__) >= {
        "ATTESTATIONS", "CERTIFICATES_ISSUED", "CHECKINS", "ERROR_REPORTS_INGESTED", "ERROR_REPORT_RECORDS",
        "ROLLOUT_HALTS", "ROLLOUT_STAGE_CHANGES", "bounded_label", "render",
    }  # fmt: skip
    assert metrics.bounded_label("crash_rate") == "crash_rate"
    assert metrics.bounded_label("Crash Rate") == "other"
    assert metrics.bounded_label("x" * (metrics.MAX_LABEL_CHARS + 1)) == "other"
    before = sample(metrics.render().decode(), "bastion_rollout_halts_total", kind="deployment", reason="new_bucket")
    metrics.ROLLOUT_HALTS.labels(kind="deployment", reason=metrics.bounded_label("new_bucket")).inc()
    after = sample(metrics.render().decode(), "bastion_rollout_halts_total", kind="deployment", reason="new_bucket")
    assert after == before + 1
