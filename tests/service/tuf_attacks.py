"""TUF test helpers: an ngclient over any httpx-style client, and attacks on a group's repository.

For other slices' attack tests (device update agent, e2e)::

    from tuf_attacks import TestClientFetcher, make_updater, rollback_timestamp, ...

    updater = make_updater(client, group_id, group_root(settings, group_id), tmp_path)
    updater.refresh()

Client side:
    :class:`TestClientFetcher`: a python-tuf ``FetcherInterface`` over a Starlette
    ``TestClient`` or an ``httpx.Client`` (``base_url`` set), e.g. a real uvicorn;
    it sends its ``headers`` (a download credential) with target requests.
    :func:`make_updater`: an ngclient ``Updater`` for a group, bootstrapped with its root.
    :func:`download_headers`: a valid download credential header for a group's targets,
        minted with the settings' master key (as the credential endpoint would).

Attacks (each edits the files the service serves, as a compromised mirror, CDN
or service host would; "stolen keys" use the group's sealed online keys
opened with the master key):
    :func:`save_metadata` / :func:`rollback_timestamp`: serve an older, validly
        signed ``timestamp.json`` (rollback, TUF 5.4.3).
    :func:`freeze_timestamp`: serve a newer timestamp that has expired (freeze, TUF 5.4.4).
    :func:`mix_targets_file`: serve an older targets file under the current
        version's name (mix-and-match, TUF 5.6.2 hashes).
    :func:`mix_snapshot_with_old_targets`: a validly signed new snapshot that
        lists an older targets version (mix-and-match / rollback, TUF 5.5.5).
    :func:`endless_target`: serve more bytes than the target's TUF length (endless data).
    :func:`sign_malicious_target`: with the stolen online keys, add a target whose
        content the tenant's app key never signed; TUF accepts it, the image layer must not.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from tuf.api.exceptions import DownloadHTTPError
from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings, write_private_file
from bastion.service.eligibility import CREDENTIAL_SCHEME, DownloadKey, mint_credential
from bastion.service.tuf import TargetSpec, publish_group
from bastion.service.tuf.keys import load_signers
from bastion.service.tuf.layout import metadata_dir, served_target_name, targets_dir
from bastion.service.tuf.repository import load_state

__all__ = [
    "TestClientFetcher",
    "download_headers",
    "endless_target",
    "freeze_timestamp",
    "make_updater",
    "mix_snapshot_with_old_targets",
    "mix_targets_file",
    "rollback_timestamp",
    "save_metadata",
    "sign_malicious_target",
]


class _HttpClient(Protocol):
    def get(self, url: str, *, headers: dict[str, str] | None = None) -> Any: ...


#: The device and tenant named by :func:`download_headers` credentials.
TEST_DEVICE_ID = "ab" * 32
TEST_TENANT_ID = str(uuid.UUID(int=7))


def download_headers(
    settings: Settings,
    group_id: str,
    *,
    now: dt.datetime | None = None,
    ttl: dt.timedelta = dt.timedelta(seconds=60),
    device_id: str = TEST_DEVICE_ID,
) -> dict[str, str]:
    """``Authorization: Bastion-Download <credential>`` opening ``group_id``'s targets until ``now + ttl``."""
    expires = int(((now or dt.datetime.now(dt.UTC)) + ttl).timestamp())
    token = mint_credential(
        DownloadKey.from_master_key(settings.master_key), device_id, group_id, TEST_TENANT_ID, expires=expires
    )
    return {"Authorization": f"{CREDENTIAL_SCHEME} {token}"}


class TestClientFetcher(FetcherInterface):
    """ngclient network access through a Starlette TestClient or an httpx.Client.

    Counts requests per status so tests can pin what a check-in costs.
    """

    __test__ = False  # not a pytest test class

    def __init__(self, client: _HttpClient, headers: dict[str, str] | None = None) -> None:
        self.client = client
        self.headers = headers or {}
        self.statuses: list[tuple[str, int]] = []

    def _fetch(self, url: str) -> Iterator[bytes]:
        response = self.client.get(url, headers=self.headers if "/targets/" in url else {})
        self.statuses.append((url, response.status_code))
        if response.status_code != 200:
            raise DownloadHTTPError(f"GET {url}: {response.status_code}", response.status_code)
        return iter([response.content])


def make_updater(
    client: _HttpClient,
    group_id: str,
    root: bytes,
    workdir: Path,
    *,
    base_url: str = "http://testserver",
    fetcher: TestClientFetcher | None = None,
    headers: dict[str, str] | None = None,
) -> Updater:
    """An ngclient Updater for a group's repository, with metadata and targets under ``workdir``.

    ``headers`` (e.g. :func:`download_headers`) go with target requests of the default fetcher.
    """
    (workdir / "metadata").mkdir(parents=True, exist_ok=True)
    (workdir / "targets").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(workdir / "metadata"),
        metadata_base_url=f"{base_url}/tuf/{group_id}/metadata/",
        target_dir=str(workdir / "targets"),
        target_base_url=f"{base_url}/tuf/{group_id}/targets/",
        fetcher=fetcher or TestClientFetcher(client, headers),
        config=UpdaterConfig(),
        bootstrap=root,
    )


def save_metadata(settings: Settings, group_id: str, name: str = "timestamp.json") -> bytes:
    """The bytes of a served metadata file (keep them to replay later)."""
    return (metadata_dir(settings, group_id) / name).read_bytes()


def rollback_timestamp(settings: Settings, group_id: str, old: bytes) -> None:
    """Serve an older, validly signed timestamp (bytes from :func:`save_metadata`)."""
    write_private_file(metadata_dir(settings, group_id) / "timestamp.json", old)


def freeze_timestamp(settings: Settings, group_id: str, *, now: dt.datetime) -> None:
    """With the stolen timestamp key, serve a newer timestamp that expired before ``now``."""
    state = load_state(settings, group_id)
    signers = load_signers(settings, group_id, state.root.signed)
    old = state.timestamp.signed
    md = Metadata(Timestamp(old.version + 1, None, now - dt.timedelta(seconds=1), old.snapshot_meta))
    md.sign(signers["timestamp"])
    write_private_file(metadata_dir(settings, group_id) / "timestamp.json", md.to_bytes())


def mix_targets_file(settings: Settings, group_id: str, old_version: int) -> None:
    """Serve targets version ``old_version``'s bytes under the current targets file name."""
    state = load_state(settings, group_id)
    directory = metadata_dir(settings, group_id)
    old = (directory / f"{old_version}.targets.json").read_bytes()
    write_private_file(directory / f"{state.targets.signed.version}.targets.json", old)


def mix_snapshot_with_old_targets(settings: Settings, group_id: str, old_version: int, *, now: dt.datetime) -> None:
    """With the stolen snapshot and timestamp keys, point a new snapshot at an older targets file."""
    state = load_state(settings, group_id)
    signers = load_signers(settings, group_id, state.root.signed)
    directory = metadata_dir(settings, group_id)
    old = (directory / f"{old_version}.targets.json").read_bytes()
    meta = MetaFile(old_version, len(old), {"sha256": hashlib.sha256(old).hexdigest()})
    s_version = state.snapshot.signed.version + 1
    snapshot = Metadata(Snapshot(s_version, None, now + dt.timedelta(days=7), {"targets.json": meta}))
    snapshot.sign(signers["snapshot"])
    s_data = snapshot.to_bytes()
    write_private_file(directory / f"{s_version}.snapshot.json", s_data)
    s_meta = MetaFile(s_version, len(s_data), {"sha256": hashlib.sha256(s_data).hexdigest()})
    timestamp = Metadata(Timestamp(state.timestamp.signed.version + 1, None, now + dt.timedelta(days=1), s_meta))
    timestamp.sign(signers["timestamp"])
    write_private_file(directory / "timestamp.json", timestamp.to_bytes())


def endless_target(settings: Settings, group_id: str, target_path: str, extra: bytes = b"\0" * 4096) -> None:
    """Serve the target's bytes followed by ``extra`` (more than its TUF length)."""
    state = load_state(settings, group_id)
    info = state.targets.signed.targets[target_path]
    served = targets_dir(settings, group_id) / served_target_name(target_path, info.hashes["sha256"])
    data = served.read_bytes()
    served.unlink()  # it is a hard link to the blob: do not grow the blob itself
    served.write_bytes(data + extra)


def sign_malicious_target(
    settings: Settings, group_id: str, path: str, data: bytes, *, now: dt.datetime, custom: dict[str, Any] | None = None
) -> TargetSpec:
    """With the stolen online keys, add ``data`` as target ``path`` beside the current targets.

    This is what a compromised service does (it holds the online keys); TUF
    accepts the result, so the device's publisher-signature check must refuse it.
    """
    ref = BlobStore(settings.home / "blobs").put_bytes(data)
    state = load_state(settings, group_id)
    current = [
        TargetSpec(p, t.hashes["sha256"], t.length, t.custom or {}) for p, t in state.targets.signed.targets.items()
    ]
    spec = TargetSpec(path, ref.sha256, ref.size, custom or {})
    publish_group(settings, group_id, [*current, spec], now=now)
    return spec
