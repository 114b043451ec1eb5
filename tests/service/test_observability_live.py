"""``bastion service run --workers 2`` on loopback: the scraped counters count every worker's requests."""

from __future__ import annotations

import json
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bastion.cli import _localstack
from bastion.cli._localstack import LocalStack, wait_for

#: Requests the test sends; the scrape must count exactly these.
REQUESTS = 200
#: Client threads: enough concurrent connections that both workers accept some.
CLIENT_THREADS = 8
#: Two workers each import the app; on a shared, loaded machine that takes longer than one.
START_TIMEOUT_S = 180.0
#: The service answers once its first worker is up; the second may still be importing the app.
BOTH_WORKERS_TIMEOUT_S = 180.0


@pytest.fixture(autouse=True)
def _patient_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_localstack, "SERVICE_START_TIMEOUT_S", START_TIMEOUT_S)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback URL
        return response.status, response.read().decode()


def _healthz_count(metrics_text: str) -> float:
    pattern = r'^bastion_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$'
    found = re.search(pattern, metrics_text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _access_records(stack: LocalStack) -> list[dict[str, object]]:
    """The service log's JSON access records of ``/healthz``."""
    lines = stack.service_log.read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    return [r for r in records if r["logger"] == "bastion.access" and r["route"] == "/healthz"]


def _both_workers_served(stack: LocalStack, url: str) -> bool:
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        list(pool.map(lambda _: _get(f"{url}/healthz"), range(CLIENT_THREADS)))
    return len({r["pid"] for r in _access_records(stack)}) == 2


def test_two_workers_count_every_request_and_log_json(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack")
    url = stack.start_service(extra_args=["--workers", "2"])
    try:
        # Under load (a parallel run) 200 requests were all served before the second worker was up.
        wait_for(
            "both workers to serve /healthz", lambda: _both_workers_served(stack, url), timeout=BOTH_WORKERS_TIMEOUT_S
        )
        before = _healthz_count(_get(f"{url}/metrics")[1])
        with ThreadPoolExecutor(CLIENT_THREADS) as pool:
            statuses = list(pool.map(lambda _: _get(f"{url}/healthz")[0], range(REQUESTS)))
        assert statuses == [200] * REQUESTS
        status, text = _get(f"{url}/metrics")
        assert status == 200
        assert _healthz_count(text) - before == REQUESTS
        # Summed twice (scrapes served by either worker) the answer is the same.
        assert _healthz_count(_get(f"{url}/metrics")[1]) - before == REQUESTS
        assert _get(f"{url}/readyz")[0] == 200
    finally:
        stack.stop_service()
    # The metric files live under the data directory (emptied at the next start).
    assert list((stack.service_home / "metrics").glob("*.db"))
    lines = stack.service_log.read_text().splitlines()
    access = _access_records(stack)
    assert len(access) >= REQUESTS
    assert len({r["pid"] for r in access}) == 2, "both workers served requests"
    assert all(re.fullmatch(r"[0-9a-f]{32}", str(r["request_id"])) for r in access)
    # Nothing but the CLI's start-up lines is outside the JSON format.
    assert all(line.startswith("{") for line in lines if "uvicorn" in line.lower() or "Traceback" in line)


def test_metrics_dir_is_emptied_at_start(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path / "stack")
    stale = stack.service_home / "metrics"
    stale.mkdir(parents=True)
    (stale / "counter_1.db").write_bytes(b"from a previous run")
    url = stack.start_service()
    try:
        text = _get(f"{url}/metrics")[1]
        assert _healthz_count(text) >= 1  # the start probe, counted in this run's files
    finally:
        stack.stop_service()
    assert not (stale / "counter_1.db").exists()
