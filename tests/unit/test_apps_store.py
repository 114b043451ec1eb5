"""The app store on flash: versions side by side, atomic ``current`` switch, pruning."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_updates_support import APP_A, APP_B, build_app

from bastion.crypto.keys import generate_private_key
from bastion.os.apps.store import AppStore, check_component_id, check_version
from bastion.os.updates.errors import UpdateFailedError, UpdateRefusedError

KEY = generate_private_key()


def image(tmp_path: Path, component_id: str, version: str) -> Path:
    path = tmp_path / f"{component_id[:8]}-{version}.img"
    path.write_bytes(build_app(tmp_path / "build", KEY, component_id, version))
    return path


def test_install_beside_switch_and_prune(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    first = store.install(image(tmp_path, APP_A, "1.0.0"), component_id=APP_A, version="1.0.0")
    assert first.path == tmp_path / "apps" / APP_A / "1.0.0"
    assert first.manifest.entry_point == "main.py"
    store.install(image(tmp_path, APP_A, "1.1.0"), component_id=APP_A, version="1.1.0")
    store.install(image(tmp_path, APP_A, "1.2.0"), component_id=APP_A, version="1.2.0")
    app_dir = tmp_path / "apps" / APP_A
    assert str((app_dir / "current").readlink()) == "1.2.0"
    assert sorted(p.name for p in app_dir.iterdir()) == ["1.1.0", "1.2.0", "current"]  # previous kept, older pruned
    store.install(image(tmp_path, APP_B, "2.0.0"), component_id=APP_B, version="2.0.0")
    assert [(a.component_id, a.version) for a in store.installed()] == sorted([(APP_A, "1.2.0"), (APP_B, "2.0.0")])


def test_manifest_for_another_component_is_refused(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    with pytest.raises(UpdateRefusedError) as info:
        store.install(image(tmp_path, APP_A, "1.0.0"), component_id=APP_B, version="1.0.0")
    assert info.value.reason == "component"
    assert store.get(APP_B) is None
    assert [p.name for p in (tmp_path / "apps" / APP_B).iterdir()] == []  # no leftovers


def test_same_version_again_and_bad_payload_fail_without_touching_current(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    img = image(tmp_path, APP_A, "1.0.0")
    store.install(img, component_id=APP_A, version="1.0.0")
    with pytest.raises(UpdateFailedError, match="already"):
        store.install(img, component_id=APP_A, version="1.0.0")
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"not an image")
    with pytest.raises(UpdateFailedError, match="does not unpack"):
        store.install(junk, component_id=APP_A, version="1.1.0")
    assert store.get(APP_A).version == "1.0.0"  # type: ignore[union-attr]


def test_leftover_of_an_interrupted_install_is_replaced(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    store.install(image(tmp_path, APP_A, "1.0.0"), component_id=APP_A, version="1.0.0")
    stale = tmp_path / "apps" / APP_A / "1.1.0"
    stale.mkdir()
    (stale / "garbage").write_text("half written")
    app = store.install(image(tmp_path, APP_A, "1.1.0"), component_id=APP_A, version="1.1.0")
    assert not (app.path / "garbage").exists()
    assert (app.path / "main.py").is_file()


def test_broken_current_link_reads_as_not_installed(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    (tmp_path / "apps" / APP_A).mkdir()
    (tmp_path / "apps" / APP_A / "current").symlink_to("../../etc")
    assert store.get(APP_A) is None
    assert store.installed() == []


@pytest.mark.parametrize("value", ["../x", "5B1E2F0A-7C3D-4E8B-9A61-2F4C8D0E1A37", "x"])
def test_component_ids_must_be_canonical_uuids(value: str) -> None:
    with pytest.raises(UpdateRefusedError):
        check_component_id(value)


@pytest.mark.parametrize("value", ["../1.0.0", "1.0", "1.0.0/..", ""])
def test_versions_must_be_semver(value: str) -> None:
    with pytest.raises(UpdateRefusedError):
        check_version(value)


def test_a_reinstall_of_the_same_version_replaces_it_and_keeps_the_others(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    store.install(image(tmp_path, APP_A, "1.0.0"), component_id=APP_A, version="1.0.0")
    store.install(image(tmp_path, APP_A, "1.1.0"), component_id=APP_A, version="1.1.0")
    marker = tmp_path / "apps" / APP_A / "1.1.0" / "old-build-marker"
    marker.write_text("from the first build of 1.1.0")
    again = store.install(image(tmp_path, APP_A, "1.1.0"), component_id=APP_A, version="1.1.0", reinstall=True)
    assert again.version == "1.1.0"
    assert not marker.exists()  # the new build's files, not the old ones
    app_dir = tmp_path / "apps" / APP_A
    assert sorted(p.name for p in app_dir.iterdir()) == ["1.0.0", "1.1.0", "current"]
    assert store.get(APP_A) is not None
