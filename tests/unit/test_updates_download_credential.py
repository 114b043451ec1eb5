"""The device's download credential: a signed request, kept briefly, sent with target requests only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import cbor2
import httpx
import pytest
from tuf.api.exceptions import DownloadError, DownloadHTTPError

from bastion.crypto.cose import decode_sign1, verify_sign1
from bastion.crypto.keys import generate_private_key
from bastion.os.updates.download_credential import CREDENTIAL_PATH, DownloadCredentials
from bastion.os.updates.fetcher import CachingFetcher, is_target

DEVICE = "ab" * 32
NOW = dt.datetime(2026, 1, 15, 12, 0, tzinfo=dt.UTC)
TARGET_URL = "http://svc/tuf/g/targets/apps/x/" + "ab" * 32 + ".1.0.0.img"
META_URL = "http://svc/tuf/g/metadata/timestamp.json"
KEY = generate_private_key()


class Service:
    """Issues numbered credentials (or refuses); serves a target only with the newest one."""

    def __init__(self) -> None:
        self.issued = 0
        self.refuse: tuple[int, str] | None = None
        self.requests: list[dict[str, object]] = []
        self.target_auth: list[str | None] = []
        self.meta_auth: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == CREDENTIAL_PATH:
            message = decode_sign1(request.content)
            verify_sign1(message, KEY.public_key())
            self.requests.append(cbor2.loads(message.payload))
            assert request.headers["content-type"] == "application/cose"
            if self.refuse is not None:
                status, code = self.refuse
                return httpx.Response(status, json={"error": code, "detail": "no"})
            self.issued += 1
            return httpx.Response(200, json={"credential": f"v1.tok{self.issued}", "expires_in_s": 60})
        auth = request.headers.get("authorization")
        if "/targets/" in request.url.path:
            self.target_auth.append(auth)
            if auth != f"Bastion-Download v1.tok{self.issued}":
                return httpx.Response(401, json={"error": "download_credential_expired", "detail": "x"})
            return httpx.Response(200, content=b"image")
        self.meta_auth.append(auth)
        return httpx.Response(200, content=b"{}")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def service() -> Service:
    return Service()


def credentials(service: Service, clock: Clock | None = None) -> DownloadCredentials:
    http = httpx.Client(transport=httpx.MockTransport(service), base_url="http://svc")
    return DownloadCredentials(
        http,
        credentials=lambda: (KEY, b"cert-der"),
        device_id=DEVICE,
        clock=lambda: NOW,
        monotonic=clock or Clock(),
    )


def test_the_request_is_signed_and_purpose_bound(service: Service) -> None:
    creds = credentials(service)
    assert creds.authorization() == "Bastion-Download v1.tok1"
    assert service.requests == [{"purpose": "download-credential", "device_id": DEVICE, "iat": int(NOW.timestamp())}]


def test_the_credential_is_kept_until_its_margin_then_renewed(service: Service) -> None:
    clock = Clock()
    creds = credentials(service, clock)
    assert creds.authorization().endswith("tok1")
    clock.t += 44  # 60 s lifetime - 15 s margin
    assert creds.authorization().endswith("tok1")
    clock.t += 1
    assert creds.authorization().endswith("tok2")
    creds.invalidate()
    assert creds.authorization().endswith("tok3")
    assert creds.fetched == 3


@pytest.mark.parametrize("code", ["device_revoked", "device_not_claimed", "attestation_failed"])
def test_a_refusal_names_its_code(service: Service, code: str) -> None:
    service.refuse = (403, code)
    with pytest.raises(DownloadHTTPError, match=code) as info:
        credentials(service).authorization()
    assert info.value.status_code == 403


def test_no_certificate_yet_is_a_download_error(service: Service) -> None:
    http = httpx.Client(transport=httpx.MockTransport(service), base_url="http://svc")
    creds = DownloadCredentials(http, credentials=lambda: None, device_id=DEVICE)
    with pytest.raises(DownloadError, match="attest"):
        creds.authorization()
    assert service.requests == []


def test_a_malformed_answer_is_refused() -> None:
    http = httpx.Client(
        transport=httpx.MockTransport(
            lambda r: httpx.Response(200, json={"credential": "x" * 600, "expires_in_s": 60})
        ),
        base_url="http://svc",
    )
    creds = DownloadCredentials(http, credentials=lambda: (KEY, b"c"), device_id=DEVICE)
    with pytest.raises(DownloadError, match="malformed"):
        creds.authorization()


def _fetcher(service: Service, creds: DownloadCredentials, tmp_path: Path | None = None) -> CachingFetcher:
    http = httpx.Client(transport=httpx.MockTransport(service), base_url="http://svc")
    return CachingFetcher(http, authorization=creds, partial_dir=tmp_path)


@pytest.mark.parametrize("resumable", [False, True])
def test_the_fetcher_sends_the_credential_with_targets_only(
    service: Service, tmp_path: Path, *, resumable: bool
) -> None:
    fetcher = _fetcher(service, credentials(service), tmp_path if resumable else None)
    assert fetcher.download_bytes(META_URL, 100) == b"{}"
    assert fetcher.download_bytes(TARGET_URL, 100) == b"image"
    assert service.meta_auth == [None]  # a check-in carries no credential
    assert service.target_auth == ["Bastion-Download v1.tok1"]
    assert is_target(TARGET_URL)
    assert not is_target(META_URL)


def test_a_credential_refused_twice_gives_up_after_one_renewal() -> None:
    seen: list[str | None] = []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == CREDENTIAL_PATH:
            return httpx.Response(200, json={"credential": "v1.t", "expires_in_s": 60})
        seen.append(request.headers.get("authorization"))
        return httpx.Response(401, json={"error": "download_credential_invalid", "detail": "x"})

    http = httpx.Client(transport=httpx.MockTransport(server), base_url="http://svc")
    creds = DownloadCredentials(http, credentials=lambda: (KEY, b"c"), device_id=DEVICE)
    with pytest.raises(DownloadHTTPError, match="download_credential_invalid"):
        CachingFetcher(http, authorization=creds).download_bytes(TARGET_URL, 100)
    assert len(seen) == 2
    assert creds.fetched == 2


def test_a_stale_kept_credential_is_replaced_and_the_download_succeeds(service: Service) -> None:
    creds = credentials(service)
    fetcher = _fetcher(service, creds)
    creds.authorization()  # keeps tok1
    service.issued = 5  # the server's newest is tok5: tok1 is refused (401); the retry fetches tok6
    assert fetcher.download_bytes(TARGET_URL, 100) == b"image"
    assert service.target_auth == ["Bastion-Download v1.tok1", "Bastion-Download v1.tok6"]


def test_a_forbidden_target_is_not_retried_and_names_the_code() -> None:
    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path == CREDENTIAL_PATH:
            return httpx.Response(200, json={"credential": "v1.t", "expires_in_s": 60})
        return httpx.Response(403, json={"error": "download_credential_wrong_group", "detail": "x"})

    http = httpx.Client(transport=httpx.MockTransport(server), base_url="http://svc")
    creds = DownloadCredentials(http, credentials=lambda: (KEY, b"c"), device_id=DEVICE)
    fetcher = CachingFetcher(http, authorization=creds)
    with pytest.raises(DownloadHTTPError, match="download_credential_wrong_group"):
        fetcher.download_bytes(TARGET_URL, 100)
    assert creds.fetched == 1


def test_a_revoked_device_gets_no_target(service: Service) -> None:
    service.refuse = (403, "device_revoked")
    fetcher = _fetcher(service, credentials(service))
    with pytest.raises(DownloadHTTPError, match="device_revoked"):
        fetcher.download_bytes(TARGET_URL, 100)
    assert service.target_auth == []  # it never even asked for the image
