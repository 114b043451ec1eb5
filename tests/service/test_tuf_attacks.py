"""Attacks on a group's TUF repository, each refused by the python-tuf ngclient a device runs.

The stolen-online-keys case is the one TUF cannot refuse by itself: the test
shows ngclient accepting the target and the image layer (the publisher's
signature, checked against the device's pinned key) refusing it.
"""

from __future__ import annotations

import datetime as dt
import io
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.exceptions import (
    BadVersionNumberError,
    DownloadLengthMismatchError,
    ExpiredMetadataError,
    LengthOrHashMismatchError,
    RepositoryError,
)
from tuf.ngclient import Updater
from tuf_attacks import (
    download_headers,
    endless_target,
    freeze_timestamp,
    make_updater,
    mix_snapshot_with_old_targets,
    mix_targets_file,
    rollback_timestamp,
    save_metadata,
    sign_malicious_target,
)

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.errors import ImageSignatureError
from bastion.images.package import ImageType, build_image, verify_image
from bastion.service.app import create_app
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.tuf import TargetSpec, group_root, publish_group
from conftest import TestClient

COMPONENT = "6f1a3c9e-2b4d-4e8f-9a7b-1c2d3e4f5a6b"


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
def group() -> str:
    return str(uuid.uuid4())


def now() -> dt.datetime:
    """Real time: ngclient checks expiry against the system clock."""
    return dt.datetime.now(dt.UTC)


def publish(settings: Settings, group: str, *contents: tuple[str, bytes]) -> list[TargetSpec]:
    store = BlobStore(settings.home / "blobs")
    specs = []
    for path, data in contents:
        ref = store.put_bytes(data)
        specs.append(TargetSpec(path, ref.sha256, ref.size, {}))
    publish_group(settings, group, specs, now=now())
    return specs


class Device:
    """A device's TUF client state for one group: its metadata directory persists across check-ins."""

    def __init__(self, client: TestClient, settings: Settings, group: str, workdir: Path) -> None:
        self.client, self.group, self.workdir = client, group, workdir
        self.root = group_root(settings, group)
        self.settings = settings

    def check_in(self) -> Updater:
        # Targets need a download credential (docs/adr/0013-update-eligibility.md).
        headers = download_headers(self.settings, self.group)
        updater = make_updater(self.client, self.group, self.root, self.workdir, headers=headers)
        updater.refresh()
        return updater


def test_rollback_of_the_timestamp_is_refused(
    client: TestClient, settings: Settings, group: str, tmp_path: Path
) -> None:
    publish(settings, group, ("apps/c/1.img", b"v1"))
    old = save_metadata(settings, group)
    device = Device(client, settings, group, tmp_path / "dev")
    device.check_in()
    publish(settings, group, ("apps/c/2.img", b"v2"))
    device.check_in()  # the device now trusts timestamp v2
    rollback_timestamp(settings, group, old)  # validly signed, but older
    with pytest.raises(BadVersionNumberError):
        device.check_in()


def test_an_expired_timestamp_is_refused(client: TestClient, settings: Settings, group: str, tmp_path: Path) -> None:
    publish(settings, group, ("apps/c/1.img", b"v1"))
    device = Device(client, settings, group, tmp_path / "dev")
    device.check_in()
    freeze_timestamp(settings, group, now=now())
    with pytest.raises(ExpiredMetadataError):
        device.check_in()


def test_an_old_targets_file_under_the_new_name_is_refused(
    client: TestClient, settings: Settings, group: str, tmp_path: Path
) -> None:
    publish(settings, group, ("apps/c/1.img", b"v1"))
    publish(settings, group, ("apps/c/2.img", b"v2"))
    mix_targets_file(settings, group, old_version=1)
    # Refused by the snapshot's length (if the old file is longer) or its hash (TUF 5.6.2).
    with pytest.raises((LengthOrHashMismatchError, DownloadLengthMismatchError)):
        Device(client, settings, group, tmp_path / "dev").check_in()


def test_a_snapshot_mixing_in_older_targets_is_refused(
    client: TestClient, settings: Settings, group: str, tmp_path: Path
) -> None:
    publish(settings, group, ("apps/c/1.img", b"v1"))
    publish(settings, group, ("apps/c/2.img", b"v2"))
    device = Device(client, settings, group, tmp_path / "dev")
    device.check_in()  # trusts targets v2
    mix_snapshot_with_old_targets(settings, group, old_version=1, now=now())
    with pytest.raises(BadVersionNumberError):
        device.check_in()


def test_endless_data_is_cut_at_the_target_length(
    client: TestClient, settings: Settings, group: str, tmp_path: Path
) -> None:
    publish(settings, group, ("os/c/1.1.0.img", b"os image" * 100))
    endless_target(settings, group, "os/c/1.1.0.img", extra=b"\0" * 1_000_000)
    updater = Device(client, settings, group, tmp_path / "dev").check_in()
    info = updater.get_targetinfo("os/c/1.1.0.img")
    assert info is not None
    with pytest.raises(DownloadLengthMismatchError):
        updater.download_target(info)
    assert not list((tmp_path / "dev" / "targets").iterdir())  # nothing kept


def test_a_tampered_target_is_refused(client: TestClient, settings: Settings, group: str, tmp_path: Path) -> None:
    (spec,) = publish(settings, group, ("apps/c/1.img", b"genuine!"))
    served = settings.home / "blobs" / "tuf" / group / "targets" / "apps" / "c" / f"{spec.blob_sha256}.1.img"
    served.unlink()
    served.write_bytes(b"evil!!!!")  # same length
    updater = Device(client, settings, group, tmp_path / "dev").check_in()
    info = updater.get_targetinfo("apps/c/1.img")
    assert info is not None
    with pytest.raises(RepositoryError):
        updater.download_target(info)


def _app_image(key: PrivateKey, version: str) -> bytes:
    out = io.BytesIO()
    build_image(
        out,
        io.BytesIO(b"app payload " + version.encode()),
        image_type=ImageType.APP,
        component_id=COMPONENT,
        version=version,
        security_version=1,
        key=key,
    )
    return out.getvalue()


def test_stolen_online_keys_cannot_make_a_device_run_an_unsigned_app(
    client: TestClient, settings: Settings, group: str, tmp_path: Path
) -> None:
    tenant_key = generate_private_key()  # on the operator's machine; the device pins its public half
    pinned = [tenant_key.public_key()]
    genuine = _app_image(tenant_key, "1.0.0")
    publish(settings, group, (f"apps/{COMPONENT}/1.0.0.img", genuine))

    attacker_key = generate_private_key()
    evil = _app_image(attacker_key, "9.9.9")
    sign_malicious_target(settings, group, f"apps/{COMPONENT}/9.9.9.img", evil, now=now())

    # TUF alone accepts it: the online keys signed it...
    updater = Device(client, settings, group, tmp_path / "dev").check_in()
    info = updater.get_targetinfo(f"apps/{COMPONENT}/9.9.9.img")
    assert info is not None
    downloaded = Path(updater.download_target(info))
    # ...so the image layer must refuse it, and does; the genuine image passes the same check.
    with downloaded.open("rb") as fh, pytest.raises(ImageSignatureError):
        verify_image(fh, pinned)
    good = updater.get_targetinfo(f"apps/{COMPONENT}/1.0.0.img")
    assert good is not None
    with Path(updater.download_target(good)).open("rb") as fh:
        assert verify_image(fh, pinned).version == "1.0.0"
