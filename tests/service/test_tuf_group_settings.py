"""Group update settings signed into the targets role (issue 7, section 2: group changes reach running devices).

The fleet signs ``{"bastion": {"maintenance_window", "update_policy"}}`` into each
group's targets metadata; a device's ngclient verifies it with the targets and
the agent reads the window from it after every refresh. These tests run the
real service repository and the device's :class:`GroupRepository` over it.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from pathlib import Path

import pytest
from tuf.ngclient.fetcher import FetcherInterface

from bastion.os.updates.errors import UpdateRefusedError
from bastion.os.updates.pointer import MaintenanceWindow, signed_window
from bastion.os.updates.tuf_client import GroupRepository
from bastion.service.config import Settings
from bastion.service.tuf import InvalidTarget, group_root, publish_group, refresh_group
from bastion.service.tuf.layout import metadata_dir
from bastion.service.tuf.repository import MAX_CUSTOM_BYTES, load_state

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)
CLOSED = {"bastion": {"maintenance_window": {"start": "22:00", "duration_minutes": 60}, "update_policy": "UpdateAll"}}
ANY_TIME = {"bastion": {"maintenance_window": None, "update_policy": "UpdateAll"}}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url="sqlite://", master_key=secrets.token_bytes(32))


@pytest.fixture
def group() -> str:
    return str(uuid.uuid4())


def test_custom_is_signed_into_targets_and_a_change_alone_republishes(settings: Settings, group: str) -> None:
    assert publish_group(settings, group, [], now=NOW, custom=ANY_TIME).targets_version == 1
    assert load_state(settings, group).targets.signed.unrecognized_fields["custom"] == ANY_TIME
    again = publish_group(settings, group, [], now=NOW, custom=ANY_TIME)
    assert again.changed is False
    changed = publish_group(settings, group, [], now=NOW, custom=CLOSED)
    assert (changed.changed, changed.targets_version) == (True, 2)
    assert load_state(settings, group).targets.signed.unrecognized_fields["custom"] == CLOSED
    # Re-signing an aging targets role keeps the settings.
    assert refresh_group(settings, group, now=NOW + dt.timedelta(days=46)) is True
    state = load_state(settings, group)
    assert state.targets.signed.version == 3
    assert state.targets.signed.unrecognized_fields["custom"] == CLOSED
    # No custom: none is written (a repository of a publisher that sends none).
    publish_group(settings, group, [], now=NOW, custom=None)
    assert "custom" not in load_state(settings, group).targets.signed.unrecognized_fields


def test_custom_is_bounded(settings: Settings, group: str) -> None:
    with pytest.raises(InvalidTarget, match="larger than"):
        publish_group(settings, group, [], now=NOW, custom={"bastion": "x" * MAX_CUSTOM_BYTES})
    with pytest.raises(InvalidTarget, match="not a JSON object"):
        publish_group(settings, group, [], now=NOW, custom={"bastion": object()})


class _FilesFetcher(FetcherInterface):
    """Serves the group's metadata directory as the TUF server would."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _fetch(self, url: str) -> list[bytes]:  # type: ignore[override]
        name = url.rsplit("/", 1)[-1]
        path = self.directory / name
        if not path.is_file():
            from tuf.api.exceptions import DownloadHTTPError

            raise DownloadHTTPError(f"{name} not found", 404)
        return [path.read_bytes()]


def _device_repo(settings: Settings, group: str, tmp_path: Path) -> GroupRepository:
    device_dir = tmp_path / "device-tuf"
    device_dir.mkdir(exist_ok=True)
    if not (device_dir / "root.json").exists():
        (device_dir / "root.json").write_bytes(group_root(settings, group))
    return GroupRepository(
        metadata_dir=device_dir,
        base_url=f"http://svc/tuf/{group}",
        fetcher=_FilesFetcher(metadata_dir(settings, group)),
    )


def test_the_device_reads_the_window_of_its_next_check_in(settings: Settings, group: str, tmp_path: Path) -> None:
    """A window closed four seconds after it was set applies at the very next refresh."""
    now = dt.datetime.now(dt.UTC)  # ngclient checks expiry against the wall clock
    publish_group(settings, group, [], now=now, custom=ANY_TIME)
    repo = _device_repo(settings, group, tmp_path)
    repo.refresh()
    assert signed_window(repo.group_custom(), None) is None
    publish_group(settings, group, [], now=now + dt.timedelta(seconds=4), custom=CLOSED)
    repo = _device_repo(settings, group, tmp_path)
    repo.refresh()
    window = signed_window(repo.group_custom(), fallback=None)
    assert window == MaintenanceWindow(start_minute=22 * 60, duration_minutes=60)
    assert window is not None
    assert not window.is_open(NOW)


def test_signed_window_falls_back_and_refuses_malformed() -> None:
    fallback = MaintenanceWindow(start_minute=60, duration_minutes=30)
    assert signed_window({}, fallback) is fallback
    assert signed_window({"bastion": {"image_type": "x"}}, fallback) is fallback
    assert signed_window(ANY_TIME, fallback) is None  # the group removed its window: any time
    with pytest.raises(UpdateRefusedError):
        signed_window({"bastion": {"maintenance_window": {"start": "25:00", "duration_minutes": 5}}}, fallback)
