"""Static serving of TUF repositories: ETag, 304, Cache-Control, 404, traversal, and ngclient end to end.

Targets are served only with a download credential (docs/adr/0013-update-eligibility.md):
these tests send one (:func:`tuf_attacks.download_headers`); test_eligibility_static.py
pins the refusals.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from tuf.api.exceptions import ExpiredMetadataError
from tuf_attacks import TestClientFetcher, download_headers, make_updater

from bastion.service.app import create_app
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.tuf import TargetSpec, group_root, publish_group, refresh_group
from bastion.service.tuf.endpoints import TufStaticApp
from bastion.service.tuf.layout import metadata_dir
from bastion.service.tuf.repository import load_state
from conftest import TestClient

IMMUTABLE = "public, max-age=31536000, immutable"
#: Targets: immutable, but no shared cache may hand them to a request without a credential.
TARGET_IMMUTABLE = "private, max-age=31536000, immutable"
SERVER_START_TIMEOUT_S = 10


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, database_url=f"sqlite:///{home / 'unused.db'}", master_key=secrets.token_bytes(32))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings, migrate_on_startup=False)) as test_client:
        yield test_client


@pytest.fixture
def now() -> dt.datetime:
    """Real time: ngclient checks expiry against the system clock."""
    return dt.datetime.now(dt.UTC)


@pytest.fixture
def group() -> str:
    return str(uuid.uuid4())


def put_spec(settings: Settings, path: str, data: bytes) -> TargetSpec:
    ref = BlobStore(settings.home / "blobs").put_bytes(data)
    return TargetSpec(path, ref.sha256, ref.size, {"bastion": {"component_id": "c0"}})


@pytest.fixture
def app_spec(settings: Settings, group: str, now: dt.datetime) -> TargetSpec:
    target = put_spec(settings, "apps/c0/1.0.0.img", b"app image v1 " * 1000)
    publish_group(settings, group, [target], now=now)
    return target


def etag_of(data: bytes) -> str:
    return f'"{hashlib.sha256(data).hexdigest()}"'


def test_metadata_is_served_with_strong_etags_and_cache_control(
    client: TestClient, settings: Settings, group: str, app_spec: TargetSpec
) -> None:
    base = f"/tuf/{group}/metadata"
    for name, cache_control in (
        ("1.root.json", IMMUTABLE),
        ("1.targets.json", IMMUTABLE),
        ("1.snapshot.json", IMMUTABLE),
        ("timestamp.json", "public, max-age=60"),
    ):
        data = (metadata_dir(settings, group) / name).read_bytes()
        r = client.get(f"{base}/{name}")
        assert r.status_code == 200, name
        assert r.content == data
        assert r.headers["etag"] == etag_of(data)
        assert r.headers["cache-control"] == cache_control
        assert r.headers["content-type"] == "application/json"
        assert int(r.headers["content-length"]) == len(data)
        for inm in (etag_of(data), f"W/{etag_of(data)}", f'"nope", {etag_of(data)}', "*"):
            again = client.get(f"{base}/{name}", headers={"If-None-Match": inm})
            assert again.status_code == 304, inm
            assert again.content == b""
            assert again.headers["etag"] == etag_of(data)
            assert again.headers["cache-control"] == cache_control
        assert client.get(f"{base}/{name}", headers={"If-None-Match": '"other"'}).status_code == 200
        head = client.head(f"{base}/{name}")
        assert head.status_code == 200
        assert head.content == b""
        assert head.headers["etag"] == etag_of(data)


def test_a_new_timestamp_gets_a_new_etag(
    client: TestClient, settings: Settings, group: str, app_spec: TargetSpec, now: dt.datetime
) -> None:
    url = f"/tuf/{group}/metadata/timestamp.json"
    first = client.get(url)
    publish_group(settings, group, [], now=now)
    second = client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert second.status_code == 200
    assert second.headers["etag"] != first.headers["etag"]
    assert second.content == (metadata_dir(settings, group) / "timestamp.json").read_bytes()


def test_targets_are_served_by_hash_prefixed_name(
    client: TestClient, settings: Settings, group: str, app_spec: TargetSpec
) -> None:
    url = f"/tuf/{group}/targets/apps/c0/{app_spec.blob_sha256}.1.0.0.img"
    auth = download_headers(settings, group)
    r = client.get(url, headers=auth)
    assert r.status_code == 200
    assert r.content == b"app image v1 " * 1000
    assert r.headers["etag"] == f'"{app_spec.blob_sha256}"'
    assert r.headers["cache-control"] == TARGET_IMMUTABLE
    assert r.headers["content-type"] == "application/octet-stream"
    assert client.get(url, headers={**auth, "If-None-Match": f'"{app_spec.blob_sha256}"'}).status_code == 304
    partial = client.get(url, headers={**auth, "Range": "bytes=13-25"})  # resumable downloads
    assert partial.status_code == 206
    assert partial.content == b"app image v1 "
    rest = client.get(url, headers={**auth, "Range": "bytes=12987-"})  # what the device's fetcher sends to resume
    assert (rest.status_code, rest.content) == (206, b"app image v1 ")
    head = client.head(url, headers=auth)
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "13000")
    # The unprefixed path is not served (consistent snapshots only).
    assert client.get(f"/tuf/{group}/targets/apps/c0/1.0.0.img", headers=auth).status_code == 404


@pytest.mark.parametrize(
    "path",
    [
        "metadata/2.root.json",  # the next-root probe
        "metadata/7.targets.json",
        "metadata/01.root.json",
        "metadata/root.json",
        "metadata/snapshot.json",
        "metadata/timestamp.json/",
        "metadata/1.root.json.bak",
        "metadata/1.keys.json",
        "targets/apps/c0/" + "0" * 64 + ".1.0.0.img",
        "targets/apps/c0/1.0.0.img",
        "keys/root.key",
        "lock",
        "metadata",
        "",
    ],
)
def test_unknown_files_are_404(
    client: TestClient, settings: Settings, group: str, app_spec: TargetSpec, path: str
) -> None:
    r = client.get(f"/tuf/{group}/{path}", headers=download_headers(settings, group))
    assert r.status_code == 404
    assert r.json()["error"] == "not_found"
    assert r.headers["cache-control"] == "public, max-age=60"


def test_unknown_or_malformed_groups_are_404(client: TestClient, group: str, app_spec: TargetSpec) -> None:
    for g in (str(uuid.uuid4()), group.upper(), "..", "x"):
        assert client.get(f"/tuf/{g}/metadata/1.root.json").status_code == 404


def test_only_get_and_head(client: TestClient, group: str, app_spec: TargetSpec) -> None:
    r = client.post(f"/tuf/{group}/metadata/timestamp.json", content=b"{}")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


def _asgi_get(app: TufStaticApp, path: str, root_path: str = "/tuf") -> tuple[int, bytes]:
    """Call the raw ASGI app with an unnormalised path, as a hostile proxy might pass it."""
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {"type": "http", "method": "GET", "path": root_path + path, "root_path": root_path, "headers": []}
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return messages[0]["status"], body


@pytest.mark.parametrize(
    "template",
    [
        "/{g}/metadata/../keys/root.key",
        "/{g}/metadata/../../{g}/keys/root.key",
        "/{g}/targets/../keys/root.key",
        "/{g}/targets/apps/../../keys/root.key",
        "/{g}/targets/apps/c0/../../../keys/root.key",
        "/{g}/targets/./../keys/root.key",
        "/{g}/targets//etc/passwd",
        "/{g}/targets/%2e%2e/keys/root.key",
        "/{g}/keys/root.key",
        "/../{g}/keys/root.key",
        "/{g}/metadata/..%2fkeys%2froot.key",
        "/{g}/metadata/1.root.json\x00",
        "/{g}/targets/apps/c0/{sha}.1.0.0.img/../../../../keys/root.key",
    ],
)
def test_traversal_attempts_are_refused(settings: Settings, group: str, app_spec: TargetSpec, template: str) -> None:
    app = TufStaticApp(settings)
    path = template.format(g=group, sha=app_spec.blob_sha256)
    status, body = _asgi_get(app, path)
    assert status == 404
    assert b"BSE1" not in body
    # The same path through the HTTP stack (which may normalise it) is refused too.
    if "\x00" not in path:  # httpx refuses to send a NUL
        with TestClient(create_app(settings, migrate_on_startup=False)) as client:
            assert client.get("/tuf" + path).status_code == 404


def test_ngclient_refreshes_and_downloads_a_target(  # noqa: PLR0917 - pytest fixtures
    client: TestClient, settings: Settings, group: str, app_spec: TargetSpec, tmp_path: Path, now: dt.datetime
) -> None:
    auth = download_headers(settings, group)
    fetcher = TestClientFetcher(client, auth)
    updater = make_updater(client, group, group_root(settings, group), tmp_path / "dev", fetcher=fetcher)
    updater.refresh()
    info = updater.get_targetinfo("apps/c0/1.0.0.img")
    assert info is not None
    assert info.custom == {"bastion": {"component_id": "c0"}}
    path = updater.download_target(info)
    assert Path(path).read_bytes() == b"app image v1 " * 1000

    # A check-in with nothing new: the next-root probe (404) and the timestamp, nothing else.
    again = TestClientFetcher(client)
    make_updater(client, group, group_root(settings, group), tmp_path / "dev", fetcher=again).refresh()
    assert [(url.rsplit("/", 1)[1], status) for url, status in again.statuses] == [
        ("2.root.json", 404),
        ("timestamp.json", 200),
    ]

    # A new version arrives at the next check-in.
    v2 = put_spec(settings, "apps/c0/2.0.0.img", b"app image v2")
    publish_group(settings, group, [v2], now=now)
    third = make_updater(client, group, group_root(settings, group), tmp_path / "dev", headers=auth)
    third.refresh()
    assert third.get_targetinfo("apps/c0/1.0.0.img") is None
    info2 = third.get_targetinfo("apps/c0/2.0.0.img")
    assert info2 is not None
    assert Path(third.download_target(info2)).read_bytes() == b"app image v2"


def test_ngclient_follows_a_root_rotation_made_by_refresh(
    client: TestClient, settings: Settings, group: str, tmp_path: Path
) -> None:
    real_now = dt.datetime.now(dt.UTC)
    publish_group(settings, group, [put_spec(settings, "a/x.img", b"x")], now=real_now - dt.timedelta(days=200))
    # Everything but the root has expired: the device refuses to update (freeze protection)...
    with pytest.raises(ExpiredMetadataError):
        make_updater(client, group, group_root(settings, group), tmp_path / "d1").refresh()
    # ...until the refresh task re-signs: root v2 (half its year gone), targets, snapshot, timestamp.
    assert refresh_group(settings, group, now=real_now) is True
    updater = make_updater(client, group, group_root(settings, group), tmp_path / "d2")
    updater.refresh()
    assert updater.get_targetinfo("a/x.img") is not None
    assert (tmp_path / "d2" / "metadata" / "root_history" / "2.root.json").is_file()


def test_ngclient_over_real_uvicorn(settings: Settings, group: str, app_spec: TargetSpec, tmp_path: Path) -> None:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, migrate_on_startup=False), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        assert thread.is_alive(), "uvicorn stopped"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client() as http:
            base = f"http://127.0.0.1:{port}"
            auth = download_headers(settings, group)
            updater = make_updater(
                http, group, group_root(settings, group), tmp_path / "dev", base_url=base, headers=auth
            )
            updater.refresh()
            info = updater.get_targetinfo("apps/c0/1.0.0.img")
            assert info is not None
            assert Path(updater.download_target(info)).read_bytes() == b"app image v1 " * 1000
            ts = http.get(f"{base}/tuf/{group}/metadata/timestamp.json")
            assert http.get(ts.url, headers={"If-None-Match": ts.headers["etag"]}).status_code == 304
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_app_refreshes_aging_repositories_in_the_background(settings: Settings, group: str) -> None:
    real_now = dt.datetime.now(dt.UTC)
    publish_group(settings, group, [], now=real_now - dt.timedelta(hours=20))
    app = create_app(
        settings, clock=lambda: dt.datetime.now(dt.UTC), migrate_on_startup=False, tuf_refresh_interval_s=0.05
    )
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while load_state(settings, group).timestamp.signed.version == 1:
            assert time.monotonic() < deadline, "the refresh task did not re-sign the timestamp"
            time.sleep(0.05)
        assert client.get(f"/tuf/{group}/metadata/timestamp.json").json()["signed"]["version"] == 2


def test_no_background_refresh_unless_asked(settings: Settings, group: str) -> None:
    publish_group(settings, group, [], now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=20))
    with TestClient(create_app(settings, migrate_on_startup=False)):
        time.sleep(0.3)
    assert load_state(settings, group).timestamp.signed.version == 1
