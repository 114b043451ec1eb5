"""The OS attestation client against a fake service (httpx.MockTransport) and a real monitor."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_monitor_support import make_identity, serving

from bastion.crypto.certs import (
    certificate_pem,
    issue_device_cert,
    load_certificate_der,
    make_ca,
)
from bastion.crypto.cose import verify_sign1
from bastion.crypto.eat import decode_eat
from bastion.crypto.keys import PrivateKey, generate_private_key, load_public_key_bytes, public_key_bytes
from bastion.monitor.client import MonitorClient
from bastion.monitor.errors import MonitorUnavailableError
from bastion.os.attestation import EAT_CONTENT_TYPE, AttestationClient, renewal_time
from bastion.os.config import AttestationPolicy, DeviceConfig
from bastion.os.errors import (
    AttestationRefusedError,
    MonitorFailedError,
    ServiceProtocolError,
    ServiceUnreachableError,
)
from bastion.os.runtime import AttestationJob
from bastion.os.state import OsState, StateDir

CHIP = make_identity()
DEVICE_ID = CHIP.identity.device_id
NOW = dt.datetime(2026, 3, 2, 9, 30, 0, tzinfo=dt.UTC)
TENANT = "7d9e8a43-0000-4000-8000-000000000001"
Handler = Callable[[httpx.Request], httpx.Response]


class FakeService:
    """A Security Service that really verifies the EAT and issues a device certificate."""

    def __init__(self, *, lifetime: dt.timedelta = dt.timedelta(hours=24)) -> None:
        self.ca_key = generate_private_key()
        self.ca = make_ca("Tenant CA", self.ca_key, now=NOW - dt.timedelta(days=1))
        self.lifetime = lifetime
        self.now = NOW  # the service's clock
        self.device_id = DEVICE_ID
        self.nonces: list[bytes] = []
        self.requests: list[httpx.Request] = []
        self.issue_for: bytes | None = None  # override the certified key

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/v1/attestation/challenge":
            body = json.loads(request.content)
            assert body == {"device_id": self.device_id}
            nonce = bytes([len(self.nonces)]) * 32
            self.nonces.append(nonce)
            encoded = base64.urlsafe_b64encode(nonce).rstrip(b"=").decode()
            return httpx.Response(200, json={"nonce": encoded, "expires_at": NOW.isoformat()})
        assert request.url.path == "/api/v1/attestation"
        assert request.headers["content-type"] == EAT_CONTENT_TYPE
        message, claims = decode_eat(request.content)
        verify_sign1(message, load_certificate_der(message.x5chain[0]).public_key())
        assert claims.nonce == self.nonces[-1]
        key = load_public_key_bytes(self.issue_for or claims.key_to_certify)
        cert = issue_device_cert(
            self.ca_key, self.ca, key, tenant_id=TENANT, device_id=self.device_id, now=self.now, lifetime=self.lifetime
        )
        return httpx.Response(
            200,
            json={
                "device_id": self.device_id,
                "tenant_id": TENANT,
                "certificate": certificate_pem(cert).decode(),
                "ca_chain": [certificate_pem(self.ca).decode()],
                "not_after": cert.not_valid_after_utc.isoformat(),
                "updates": [],
            },
        )


@pytest.fixture
def monitor() -> Iterator[MonitorClient]:
    with serving(CHIP.identity) as sock:
        yield MonitorClient(sock)


def make_client(handler: Handler, monitor: MonitorClient, key: PrivateKey, **policy: float) -> AttestationClient:
    http = httpx.Client(base_url="http://service.test", transport=httpx.MockTransport(handler))
    return AttestationClient(http, monitor, key, device_id=DEVICE_ID, policy=AttestationPolicy(**policy))


def test_success_returns_a_certificate_for_the_device_tls_key(monitor: MonitorClient) -> None:
    service = FakeService()
    key = generate_private_key()
    credential = make_client(service, monitor, key).attest(now=NOW)
    cert_key = credential.certificate.public_key()
    assert public_key_bytes(cert_key) == public_key_bytes(key.public_key())  # type: ignore[arg-type]
    assert credential.tenant_id == TENANT
    assert credential.not_after - credential.not_before >= dt.timedelta(hours=24)
    assert [r.url.path for r in service.requests] == ["/api/v1/attestation/challenge", "/api/v1/attestation"]


def test_renewal_is_at_80_percent_of_the_certificates_own_lifetime(monitor: MonitorClient) -> None:
    for lifetime in (dt.timedelta(hours=24), dt.timedelta(hours=1)):
        credential = make_client(FakeService(lifetime=lifetime), monitor, generate_private_key()).attest(now=NOW)
        window = credential.not_after - credential.not_before
        assert renewal_time(credential.certificate, 0.8) == credential.not_before + window * 0.8
        assert NOW < renewal_time(credential.certificate, 0.8) < credential.not_after


def test_job_stores_credentials_and_schedules_renewal(monitor: MonitorClient, tmp_path: Path) -> None:
    state_dir = StateDir(tmp_path / "os-state")
    key = state_dir.load_or_create_key()
    config = DeviceConfig(service_url="http://service.test")
    service = FakeService()
    job = AttestationJob(make_client(service, monitor, key), state_dir, OsState(), config)
    next_at = job(NOW)
    cert_pem = state_dir.load_cert_pem()
    assert cert_pem is not None
    assert b"BEGIN CERTIFICATE" in cert_pem
    state = state_dir.load_state()
    assert state.last_result == "ok"
    assert state.last_attestation_at == NOW.isoformat()
    not_before = dt.datetime.fromisoformat(state.cert_not_before or "")
    not_after = dt.datetime.fromisoformat(state.cert_not_after or "")
    assert next_at == not_before + (not_after - not_before) * 0.8
    assert state.next_attestation_at == next_at.isoformat(timespec="seconds")
    # At the renewal point the job attests again and gets a fresh certificate.
    service.now = next_at
    assert job(next_at) > next_at
    assert dt.datetime.fromisoformat(state_dir.load_state().cert_not_after or "") > not_after


def test_job_backs_off_exponentially_and_bounded(monitor: MonitorClient, tmp_path: Path) -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    state_dir = StateDir(tmp_path)
    policy = {"retry_initial_s": 5.0, "retry_multiplier": 2.0, "retry_max_s": 30.0}
    config = DeviceConfig(service_url="http://service.test", policy=AttestationPolicy(**policy))
    job = AttestationJob(make_client(down, monitor, generate_private_key(), **policy), state_dir, OsState(), config)
    delays = [(job(NOW) - NOW).total_seconds() for _ in range(5)]
    assert delays == [5.0, 10.0, 20.0, 30.0, 30.0]
    state = state_dir.load_state()
    assert (state.last_result, state.last_reason, state.consecutive_failures) == ("error", "service_unreachable", 5)
    assert state_dir.load_cert_pem() is None


def test_service_refusal_keeps_code_and_detail(monitor: MonitorClient, tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/challenge"):
            return FakeService()(request)
        return httpx.Response(403, json={"error": "device_unclaimed", "detail": "claim the device first"})

    client = make_client(refuse, monitor, generate_private_key())
    with pytest.raises(AttestationRefusedError) as info:
        client.attest(now=NOW)
    assert (info.value.status, info.value.code, info.value.detail) == (
        403,
        "device_unclaimed",
        "claim the device first",
    )
    state_dir = StateDir(tmp_path)
    config = DeviceConfig(service_url="http://service.test")
    AttestationJob(client, state_dir, OsState(), config)(NOW)
    state = state_dir.load_state()
    assert (state.last_result, state.last_reason, state.last_detail) == (
        "refused",
        "device_unclaimed",
        "claim the device first",
    )


def test_refusal_without_json_body_still_has_a_code(monitor: MonitorClient) -> None:
    client = make_client(lambda r: httpx.Response(404, text="nope"), monitor, generate_private_key())
    with pytest.raises(AttestationRefusedError) as info:
        client.attest(now=NOW)
    assert info.value.code == "http_404"


def _with_answer(change: Callable[[dict], object]) -> Handler:
    service = FakeService()

    def handler(request: httpx.Request) -> httpx.Response:
        response = service(request)
        if request.url.path.endswith("/challenge"):
            return response
        body = json.loads(response.content)
        changed = change(body)
        if isinstance(changed, bytes):
            return httpx.Response(200, content=changed)
        return httpx.Response(200, json=changed if changed is not None else body)

    return handler


def _other_ca_cert(body: dict) -> dict:
    other_key = generate_private_key()
    other_ca = make_ca("Evil CA", other_key, now=NOW - dt.timedelta(days=1))
    cert = issue_device_cert(
        other_key, other_ca, generate_private_key().public_key(), tenant_id=TENANT, device_id=DEVICE_ID, now=NOW
    )
    return {**body, "certificate": certificate_pem(cert).decode()}


@pytest.mark.parametrize(
    "change",
    [
        lambda body: b"not json",
        lambda body: b"[1, 2]",
        lambda body: {**body, "certificate": None},
        lambda body: {**body, "certificate": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
        lambda body: {**body, "ca_chain": []},
        lambda body: {**body, "ca_chain": "pem"},
        lambda body: {**body, "ca_chain": [1]},
        lambda body: {**body, "device_id": "0" * 64},
        lambda body: {**body, "tenant_id": 5},
        _other_ca_cert,
    ],
)
def test_malformed_attestation_answer_is_rejected(monitor: MonitorClient, change: Callable[[dict], object]) -> None:
    with pytest.raises(ServiceProtocolError):
        make_client(_with_answer(change), monitor, generate_private_key()).attest(now=NOW)


def test_certificate_for_another_key_is_rejected(monitor: MonitorClient) -> None:
    service = FakeService()
    service.issue_for = public_key_bytes(generate_private_key().public_key())
    with pytest.raises(ServiceProtocolError, match="not for this device"):
        make_client(service, monitor, generate_private_key()).attest(now=NOW)


def test_expired_certificate_is_rejected(monitor: MonitorClient) -> None:
    with pytest.raises(ServiceProtocolError, match="not valid now"):
        make_client(FakeService(), monitor, generate_private_key()).attest(now=NOW + dt.timedelta(days=2))


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, json={"nonce": "***"}),
        httpx.Response(200, json={"nonce": "AAAA"}),  # 3 bytes: too short
        httpx.Response(200, json={"nonce": "A" * 200}),
        httpx.Response(200, json={}),
        httpx.Response(200, text="<html>"),
    ],
)
def test_malformed_challenge_is_rejected(monitor: MonitorClient, answer: httpx.Response) -> None:
    with pytest.raises(ServiceProtocolError):
        make_client(lambda r: answer, monitor, generate_private_key()).attest(now=NOW)


def test_oversized_answer_is_rejected(monitor: MonitorClient) -> None:
    big = httpx.Response(200, json={"nonce": "A" * 43, "padding": "x" * 5000})
    with pytest.raises(ServiceProtocolError, match="larger than"):
        make_client(lambda r: big, monitor, generate_private_key(), max_response_bytes=4096).attest(now=NOW)

    def chunks() -> Iterator[bytes]:  # no content-length: the bound applies while reading
        yield b'{"nonce": "'
        for _ in range(100):
            yield b"A" * 100
        yield b'"}'

    streamed = httpx.Response(200, content=chunks())
    with pytest.raises(ServiceProtocolError, match="larger than"):
        make_client(lambda r: streamed, monitor, generate_private_key(), max_response_bytes=4096).attest(now=NOW)


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_transport_failures(monitor: MonitorClient, status: int) -> None:
    with pytest.raises(ServiceUnreachableError):
        make_client(lambda r: httpx.Response(status), monitor, generate_private_key()).attest(now=NOW)


def test_timeout_is_a_transport_failure(monitor: MonitorClient) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(ServiceUnreachableError):
        make_client(slow, monitor, generate_private_key()).attest(now=NOW)


class BrokenMonitor:
    def sign_attestation(self, **kwargs: object) -> bytes:
        raise MonitorUnavailableError("gone")


def test_monitor_failure_is_not_an_attestation_failure() -> None:
    http = httpx.Client(base_url="http://service.test", transport=httpx.MockTransport(FakeService()))
    client = AttestationClient(http, BrokenMonitor(), generate_private_key(), device_id=DEVICE_ID)
    with pytest.raises(MonitorFailedError):
        client.attest(now=NOW)
