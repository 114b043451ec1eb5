"""The TUF static server never follows a symlink and never leaves its tree.

Each test plants something in a group's repository, as a compromised writer, a
careless rsync or a bad restore could, and checks that the server answers 404
without serving a byte of what the link points at. Every component is opened
with ``O_NOFOLLOW`` below a descriptor of the tree's root, and the answer is read
from the descriptor that was checked.
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session
from tuf_attacks import download_headers

from bastion.service.app import create_app
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.db import create_engine_for
from bastion.service.models import AuditEvent
from bastion.service.tuf import TargetSpec, publish_group
from bastion.service.tuf.endpoints import open_beneath
from bastion.service.tuf.layout import group_dir, metadata_dir, served_target_name, targets_dir, tuf_root
from conftest import TestClient

SECRET = b"-----BEGIN SECRET----- do not serve -----END SECRET-----\n"
APP = "apps/c0/1.0.0.img"


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
def outside(tmp_path: Path) -> Path:
    """A file outside the tree that a link points at."""
    path = tmp_path / "outside" / "secret.pem"
    path.parent.mkdir()
    path.write_bytes(SECRET)
    return path


def _publish(settings: Settings, group: str, data: bytes = b"app image v1 " * 100) -> TargetSpec:
    ref = BlobStore(settings.home / "blobs").put_bytes(data)
    spec = TargetSpec(APP, ref.sha256, ref.size, {})
    publish_group(settings, group, [spec], now=dt.datetime.now(dt.UTC))
    return spec


@pytest.fixture
def group(settings: Settings) -> str:
    group_id = str(uuid.uuid4())
    _publish(settings, group_id)
    return group_id


def _target_file(settings: Settings, group: str) -> tuple[Path, str]:
    name = next(p.name for p in (targets_dir(settings, group) / "apps" / "c0").iterdir())
    sha = name.split(".", 1)[0]
    return targets_dir(settings, group) / served_target_name(APP, sha), sha


def _refused(r: object) -> None:
    status = r.status_code  # type: ignore[attr-defined]
    content = r.content  # type: ignore[attr-defined]
    assert status == 404, status
    assert SECRET not in content
    assert b"BEGIN" not in content


def test_a_symlinked_metadata_file_is_not_followed(
    client: TestClient, settings: Settings, group: str, outside: Path
) -> None:
    link = metadata_dir(settings, group) / "2.root.json"  # the next-root probe's name
    link.symlink_to(outside)
    _refused(client.get(f"/tuf/{group}/metadata/2.root.json"))
    # Replacing the live timestamp with a link: refused too (no stale bytes, no secret).
    timestamp = metadata_dir(settings, group) / "timestamp.json"
    timestamp.unlink()
    timestamp.symlink_to(outside)
    _refused(client.get(f"/tuf/{group}/metadata/timestamp.json"))


def test_a_symlink_to_a_key_inside_the_group_is_not_followed(
    client: TestClient, settings: Settings, group: str
) -> None:
    keys = sorted((group_dir(settings, group) / "keys").iterdir())
    assert keys
    (metadata_dir(settings, group) / "9.root.json").symlink_to(keys[0])
    _refused(client.get(f"/tuf/{group}/metadata/9.root.json"))


def test_a_symlinked_target_file_is_not_followed(
    client: TestClient, settings: Settings, group: str, outside: Path
) -> None:
    path, _ = _target_file(settings, group)
    path.unlink()
    path.symlink_to(outside)
    url = f"/tuf/{group}/targets/{path.relative_to(targets_dir(settings, group))}"
    _refused(client.get(url, headers=download_headers(settings, group)))


def test_a_symlinked_directory_is_not_followed(
    client: TestClient, settings: Settings, group: str, outside: Path
) -> None:
    # targets/apps -> a directory outside the tree holding a file of the served name.
    path, sha = _target_file(settings, group)
    planted = outside.parent / "apps" / "c0"
    planted.mkdir(parents=True)
    (planted / path.name).write_bytes(SECRET)
    shutil.rmtree(targets_dir(settings, group) / "apps")
    (targets_dir(settings, group) / "apps").symlink_to(outside.parent / "apps", target_is_directory=True)
    url = f"/tuf/{group}/targets/apps/c0/{sha}.1.0.0.img"
    _refused(client.get(url, headers=download_headers(settings, group)))


def test_a_symlinked_metadata_directory_and_group_are_not_followed(
    client: TestClient, settings: Settings, group: str
) -> None:
    # Another group's metadata dir linked in as this group's, and a whole group linked under a new id.
    other = str(uuid.uuid4())
    _publish(settings, other, b"other group")
    shutil.rmtree(metadata_dir(settings, group))
    metadata_dir(settings, group).symlink_to(metadata_dir(settings, other), target_is_directory=True)
    _refused(client.get(f"/tuf/{group}/metadata/1.root.json"))
    alias = str(uuid.uuid4())
    (tuf_root(settings) / alias).symlink_to(group_dir(settings, other), target_is_directory=True)
    _refused(client.get(f"/tuf/{alias}/metadata/timestamp.json"))
    # The real group is still served.
    assert client.get(f"/tuf/{other}/metadata/timestamp.json").status_code == 200


def test_a_fifo_or_directory_in_place_of_a_file_is_404_without_hanging(
    client: TestClient, settings: Settings, group: str
) -> None:
    os.mkfifo(metadata_dir(settings, group) / "3.root.json")
    _refused(client.get(f"/tuf/{group}/metadata/3.root.json"))
    (metadata_dir(settings, group) / "4.root.json").mkdir()
    _refused(client.get(f"/tuf/{group}/metadata/4.root.json"))


def test_a_file_swapped_after_the_check_is_not_what_is_served(settings: Settings, group: str) -> None:
    """The response reads the descriptor that was checked: no second open by name (no TOCTOU)."""
    base = os.open(tuf_root(settings), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd = open_beneath(base, [group, "metadata", "1.root.json"])
        assert fd is not None
        try:
            (metadata_dir(settings, group) / "1.root.json").unlink()
            (metadata_dir(settings, group) / "1.root.json").symlink_to("/etc/passwd")
            assert os.pread(fd, 1, 0) == b"{"  # still the checked file
        finally:
            os.close(fd)
        assert open_beneath(base, [group, "metadata", "1.root.json"]) is None
        assert open_beneath(base, [group, "metadata", "missing.json"]) is None
        # Components that would climb or re-root are refused before any open.
        climbing = (
            ["..", "..", "etc", "passwd"],
            [group, "..", group, "metadata", "timestamp.json"],
            ["/etc/passwd"],
            [group, "metadata/timestamp.json"],
            [group, ".", "metadata", "timestamp.json"],
            [""],
        )
        for parts in climbing:
            assert open_beneath(base, parts) is None, parts
    finally:
        os.close(base)


def test_a_home_reached_through_a_symlink_still_serves(tmp_path: Path) -> None:
    """Only links *inside* the tree are refused; the configured data directory may itself be a link."""
    real = tmp_path / "real-home"
    real.mkdir()
    link = tmp_path / "home-link"
    link.symlink_to(real, target_is_directory=True)
    settings = Settings(home=link, database_url=f"sqlite:///{real / 'unused.db'}", master_key=secrets.token_bytes(32))
    group_id = str(uuid.uuid4())
    _publish(settings, group_id)
    with TestClient(create_app(settings, migrate_on_startup=False)) as client:
        assert client.get(f"/tuf/{group_id}/metadata/timestamp.json").status_code == 200


def test_a_refused_symlink_is_recorded_service_wide(db_url: str, tmp_path: Path, outside: Path) -> None:
    """With a database, the refusal is an audit event in no tenant's view (the writer never makes links)."""
    home = tmp_path / "home-db"
    home.mkdir()
    settings = Settings(home=home, database_url=db_url, master_key=secrets.token_bytes(32))
    group_id = str(uuid.uuid4())
    _publish(settings, group_id)
    (metadata_dir(settings, group_id) / "2.root.json").symlink_to(outside)
    with TestClient(create_app(settings, migrate_on_startup=False)) as client:
        for _ in range(3):
            _refused(client.get(f"/tuf/{group_id}/metadata/2.root.json"))
    engine = create_engine_for(db_url)
    try:
        with Session(engine) as session:
            events = session.scalars(select(AuditEvent).where(AuditEvent.action == "tuf.symlink_refused")).all()
    finally:
        engine.dispose()
    assert len(events) == 1  # once per window, however often it is asked for
    assert events[0].tenant_id is None
    assert events[0].target == f"group:{group_id}"
    assert "2.root.json" in events[0].detail
