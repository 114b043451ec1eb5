"""Header bounds and per-client rate limits on the unauthenticated device endpoints (issue 7, section 6).

In-process (TestClient) tests: the app's own checks. The bound that the HTTP
server applies while it reads the bytes is tested against a real ``bastion
service run`` in ``test_http_live.py``.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from bastion.service.app import create_app
from bastion.service.config import HttpLimits, Settings
from bastion.service.errors import ConfigError
from bastion.service.guard import RateLimiter
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient, bearer

CHALLENGE = "/api/v1/attestation/challenge"
DEVICE = "ab" * 32


class FakeMonotonic:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _limited_client(
    settings: Settings, clock: FakeClock, monotonic: FakeMonotonic, client_host: str, **limits: object
) -> TestClient:
    http = dataclasses.replace(HttpLimits(), **({"rate_limit_exempt": ()} | limits))  # type: ignore[arg-type]
    app = create_app(
        dataclasses.replace(settings, http=http), clock=clock, migrate_on_startup=False, monotonic=monotonic
    )
    return TestClient(app, client=(client_host, 50000))


def _challenge(client: TestClient) -> int:
    return int(client.post(CHALLENGE, json={"device_id": DEVICE}).status_code)


# -- header bounds ---------------------------------------------------------------------------------


def test_too_many_headers_is_431_before_any_route_and_recorded(
    client: TestClient, tenant: CreatedTenant, caplog: pytest.LogCaptureFixture
) -> None:
    headers = bearer(tenant.admin_token) | {f"x-filler-{i}": "1" for i in range(HttpLimits().max_header_count + 1)}
    with caplog.at_level(logging.WARNING, logger="bastion.service.guard"):
        for path in ("/api/v1/devices", CHALLENGE, "/tuf/g/metadata/timestamp.json", "/healthz"):
            r = client.get(path, headers=headers)
            assert r.status_code == 431, path
            assert r.json()["error"] == "headers_too_large"
            assert "send fewer headers" in r.json()["detail"]
    # Recorded: counted per kind, and one log line per interval (a flood does not write a line per request).
    assert client.app.refusals.totals["headers_too_large"] == 4  # type: ignore[attr-defined]
    lines = [r.getMessage() for r in caplog.records if "headers_too_large" in r.getMessage()]
    assert lines == ["refused 1 request(s) as headers_too_large; busiest clients: testclient x1"]


def test_an_oversized_header_section_is_431(client: TestClient) -> None:
    limit = HttpLimits().max_header_bytes
    for headers in ({"x-big": "a" * limit}, {f"x-{i}": "b" * (limit // 50) for i in range(60)}):
        r = client.post(CHALLENGE, headers=headers, json={"device_id": DEVICE})
        assert r.status_code == 431
        assert r.json() == {
            "error": "headers_too_large",
            "detail": f"the request header section is larger than {limit} bytes; send smaller headers",
        }
    # Just under the bound is served.
    assert client.get("/healthz", headers={"x-big": "a" * (limit // 2)}).status_code == 200


# -- rate limits -----------------------------------------------------------------------------------


def test_a_flooding_client_gets_429_with_retry_after_others_are_served_and_it_is_recorded(
    settings: Settings, clock: FakeClock, tenant: CreatedTenant, caplog: pytest.LogCaptureFixture
) -> None:
    monotonic = FakeMonotonic()
    limits = {"device_rate_per_s": 2.0, "device_rate_burst": 3}
    flooder = _limited_client(settings, clock, monotonic, "198.51.100.7", **limits)
    with flooder:
        assert [_challenge(flooder) for _ in range(3)] == [200, 200, 200]
        refused = flooder.post(CHALLENGE, json={"device_id": DEVICE})
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.json() == {
            "error": "rate_limited",
            "detail": "too many requests from this client; retry after 1 s",
        }
        # Every device endpoint shares the client's bucket: evidence and status reports, TUF files.
        assert flooder.post("/api/v1/attestation", content=b"x").status_code == 429
        assert flooder.post("/api/v1/device/status", content=b"x").status_code == 429
        assert flooder.get("/tuf/g/metadata/timestamp.json").status_code == 429
        # Operator endpoints are not device endpoints: authenticated, and not limited here.
        assert flooder.get("/api/v1/devices", headers=bearer(tenant.admin_token)).status_code == 200
        # Another client, on the same app (same limiter), is served.
        other = TestClient(flooder.app, client=("198.51.100.8", 50001))
        assert _challenge(other) == 200
        # Half a second refills one token at 2/s.
        monotonic.now += 0.5
        assert _challenge(flooder) == 200
        assert _challenge(flooder) == 429
        # Recorded: every refusal counted, one summary line per minute naming the flooding client.
        refusals = flooder.app.refusals  # type: ignore[attr-defined]
        assert refusals.totals["rate_limited"] == 5
        caplog.clear()
        monotonic.now += 60
        with caplog.at_level(logging.WARNING, logger="bastion.service.guard"):
            assert _challenge(flooder) == 200
            for _ in range(10):
                flooder.post(CHALLENGE, json={"device_id": DEVICE})
        # The bucket refilled (3 admitted); the first refusal after the quiet minute writes the line
        # for the 4 held back plus itself; the 7 that follow within the minute are counted, not written.
        lines = [r.getMessage() for r in caplog.records if "rate_limited" in r.getMessage()]
        assert lines == ["refused 5 request(s) as rate_limited; busiest clients: 198.51.100.7 x5"]
        assert refusals.totals["rate_limited"] == 13


def test_exempt_clients_and_off_are_not_limited(settings: Settings, clock: FakeClock) -> None:
    monotonic = FakeMonotonic()
    exempt = _limited_client(
        settings,
        clock,
        monotonic,
        "127.0.0.1",
        device_rate_per_s=1.0,
        device_rate_burst=1,
        rate_limit_exempt=("127.0.0.1",),
    )
    with exempt:
        assert {_challenge(exempt) for _ in range(5)} == {200}
    off = _limited_client(settings, clock, monotonic, "198.51.100.9", device_rate_per_s=0.0)
    with off:
        assert {_challenge(off) for _ in range(5)} == {200}
        assert "429" not in off.get("/openapi.json").json()["paths"][CHALLENGE]["post"]["responses"]


def test_the_limiter_forgets_the_least_recent_client_beyond_its_bound() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1, max_clients=2)
    assert limiter.admit("a", now=0.0) == 0.0
    assert limiter.admit("a", now=0.0) == pytest.approx(1.0)
    limiter.admit("b", now=0.0)
    limiter.admit("c", now=0.0)  # "a" is forgotten: memory stays bounded under a flood of addresses
    assert limiter.admit("a", now=0.0) == 0.0
    assert limiter.retry_after(0.01) == 1
    assert limiter.retry_after(2.5) == 3


def test_rate_limit_settings_from_the_environment(tmp_path: Path) -> None:
    base = {"BASTION_HOME": str(tmp_path), "BASTION_MASTER_KEY": "A" * 43 + "="}
    default = Settings.from_env(base).http
    assert (default.device_rate_per_s, default.device_rate_burst) == (50.0, 200)
    assert default.rate_limit_exempt == ("127.0.0.1", "::1")
    tuned = Settings.from_env(base | {"BASTION_DEVICE_RATE_LIMIT": "5/20", "BASTION_RATE_LIMIT_EXEMPT": ""}).http
    assert (tuned.device_rate_per_s, tuned.device_rate_burst, tuned.rate_limit_exempt) == (5.0, 20, ())
    assert not Settings.from_env(base | {"BASTION_DEVICE_RATE_LIMIT": "off"}).http.rate_limited
    for bad in ("fast", "0/10", "-1/5", "nan/5", "inf/5", "5/0", "5/x"):
        with pytest.raises(ConfigError, match="RATE/BURST"):
            Settings.from_env(base | {"BASTION_DEVICE_RATE_LIMIT": bad})
