"""The TUF repository writer: creation, sealed keys, publish idempotence and versions, expiry, refresh, locking."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import secrets
import stat
import threading
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from tuf.api.exceptions import UnsignedMetadataError
from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp

from bastion.service.blobs.store import BlobRef, BlobStore
from bastion.service.config import Settings
from bastion.service.tuf import (
    InvalidGroupId,
    InvalidTarget,
    TargetSpec,
    TufError,
    TufKeyError,
    UnknownGroup,
    group_root,
    list_groups,
    publish_group,
    refresh_all,
    refresh_group,
)
from bastion.service.tuf.layout import keys_dir, metadata_dir, targets_dir
from bastion.service.tuf.repository import (
    MAX_CUSTOM_BYTES,
    ROOT_LIFETIME,
    SNAPSHOT_LIFETIME,
    TARGETS_LIFETIME,
    TIMESTAMP_LIFETIME,
    load_state,
)

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh home and master key (the TUF slice needs no database)."""
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, database_url=f"sqlite:///{home / 'unused.db'}", master_key=secrets.token_bytes(32))


@pytest.fixture
def group() -> str:
    return str(uuid.uuid4())


def put(settings: Settings, data: bytes) -> BlobRef:
    return BlobStore(settings.home / "blobs").put_bytes(data)


def spec(settings: Settings, path: str, data: bytes, **custom: object) -> TargetSpec:
    ref = put(settings, data)
    return TargetSpec(path, ref.sha256, ref.size, {"bastion": custom})


def md(settings: Settings, group: str, name: str) -> Metadata:  # type: ignore[type-arg]
    return Metadata.from_bytes((metadata_dir(settings, group) / name).read_bytes())


def listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.rglob("*")}


def test_first_publish_creates_a_consistent_snapshot_repository(settings: Settings, group: str) -> None:
    app = spec(settings, "apps/c0/1.0.0.img", b"app v1" * 50, version="1.0.0")
    result = publish_group(settings, group, [app], now=NOW)
    assert (result.changed, result.root_version, result.targets_version) == (True, 1, 1)
    assert (result.snapshot_version, result.timestamp_version) == (1, 1)

    names = sorted(p.name for p in metadata_dir(settings, group).iterdir())
    assert names == ["1.root.json", "1.snapshot.json", "1.targets.json", "timestamp.json"]
    root = md(settings, group, "1.root.json")
    assert isinstance(root.signed, Root)
    assert root.signed.consistent_snapshot is True
    assert root.signed.version == 1
    keyids = {role: root.signed.roles[role].keyids for role in ("root", "targets", "snapshot", "timestamp")}
    assert all(len(ids) == 1 for ids in keyids.values())
    assert len({ids[0] for ids in keyids.values()}) == 4  # one distinct key per role
    for ids in keyids.values():
        key = root.signed.keys[ids[0]]
        assert (key.keytype, key.scheme) == ("ecdsa", "ecdsa-sha2-nistp256")
    # Each role verifies under the key root names for it.
    root.verify_delegate("root", root)
    for role, name in (("targets", "1.targets.json"), ("snapshot", "1.snapshot.json"), ("timestamp", "timestamp.json")):
        root.verify_delegate(role, md(settings, group, name))
    with pytest.raises(
        UnsignedMetadataError, match="signed by 0/1"
    ):  # a role signed by another role's key does not verify
        root.verify_delegate("timestamp", md(settings, group, "1.snapshot.json"))

    targets = md(settings, group, "1.targets.json").signed
    assert isinstance(targets, Targets)
    info = targets.targets["apps/c0/1.0.0.img"]
    assert info.length == app.length
    assert info.hashes == {"sha256": app.blob_sha256}
    assert info.custom == {"bastion": {"version": "1.0.0"}}
    served = targets_dir(settings, group) / "apps" / "c0" / f"{app.blob_sha256}.1.0.0.img"
    assert served.read_bytes() == b"app v1" * 50
    assert group_root(settings, group) == (metadata_dir(settings, group) / "1.root.json").read_bytes()


def test_expiry_per_role(settings: Settings, group: str) -> None:
    publish_group(settings, group, [], now=NOW)
    assert md(settings, group, "1.root.json").signed.expires == NOW + ROOT_LIFETIME
    assert md(settings, group, "1.targets.json").signed.expires == NOW + TARGETS_LIFETIME
    assert md(settings, group, "1.snapshot.json").signed.expires == NOW + SNAPSHOT_LIFETIME
    assert md(settings, group, "timestamp.json").signed.expires == NOW + TIMESTAMP_LIFETIME
    assert (
        dt.timedelta(days=365),
        dt.timedelta(days=90),
        dt.timedelta(days=7),
        dt.timedelta(days=1),
    ) == (ROOT_LIFETIME, TARGETS_LIFETIME, SNAPSHOT_LIFETIME, TIMESTAMP_LIFETIME)


def test_unchanged_target_set_writes_nothing(settings: Settings, group: str) -> None:
    specs = [spec(settings, "apps/c0/1.0.0.img", b"a"), spec(settings, "os/c1/1.0.0.img", b"b", security_version=1)]
    publish_group(settings, group, specs, now=NOW)
    before = listing(settings.home / "blobs" / "tuf" / group)
    result = publish_group(settings, group, list(reversed(specs)), now=NOW + dt.timedelta(hours=1))
    assert result.changed is False
    assert result.targets_version == 1
    assert listing(settings.home / "blobs" / "tuf" / group) == before


def test_each_change_writes_new_versions_linked_by_hashes(settings: Settings, group: str) -> None:
    v1 = spec(settings, "apps/c0/1.0.0.img", b"one")
    v2 = spec(settings, "apps/c0/2.0.0.img", b"two")
    publish_group(settings, group, [v1], now=NOW)
    result = publish_group(settings, group, [v2], now=NOW + dt.timedelta(minutes=5))
    assert (result.targets_version, result.snapshot_version, result.timestamp_version) == (2, 2, 2)
    timestamp = md(settings, group, "timestamp.json").signed
    assert isinstance(timestamp, Timestamp)
    assert timestamp.snapshot_meta.version == 2
    timestamp.snapshot_meta.verify_length_and_hashes((metadata_dir(settings, group) / "2.snapshot.json").read_bytes())
    snapshot = md(settings, group, "2.snapshot.json").signed
    assert isinstance(snapshot, Snapshot)
    targets_meta = snapshot.meta["targets.json"]
    assert targets_meta.version == 2
    targets_meta.verify_length_and_hashes((metadata_dir(settings, group) / "2.targets.json").read_bytes())
    assert set(md(settings, group, "2.targets.json").signed.targets) == {"apps/c0/2.0.0.img"}
    # Old versions stay (devices and CDNs may hold them); targets files stay too.
    assert (metadata_dir(settings, group) / "1.targets.json").is_file()
    assert (targets_dir(settings, group) / "apps" / "c0" / f"{v1.blob_sha256}.1.0.0.img").is_file()
    # Changing only a custom value is a change.
    changed = TargetSpec(v2.path, v2.blob_sha256, v2.length, {"bastion": {"security_version": 3}})
    assert publish_group(settings, group, [changed], now=NOW).targets_version == 3


def test_custom_is_normalised_to_json(settings: Settings, group: str) -> None:
    base = put(settings, b"x")
    first = TargetSpec("apps/c0/1.img", base.sha256, base.size, {"bastion": {"list": (1, 2)}})
    publish_group(settings, group, [first], now=NOW)
    again = TargetSpec("apps/c0/1.img", base.sha256, base.size, {"bastion": {"list": [1, 2]}})
    assert publish_group(settings, group, [again], now=NOW).changed is False


@pytest.mark.parametrize(
    "bad",
    [
        "../x",
        "",
        "ABCDEF00-0000-0000-0000-000000000000",
        "0000",
        "a/b",
        "118afac4-4a4d-4d14-a7c1-c6295e436981/..",
        "..",
        "/etc",
    ],
)
def test_invalid_group_ids_are_refused_before_touching_disk(settings: Settings, bad: str) -> None:
    with pytest.raises(InvalidGroupId):
        publish_group(settings, bad, [], now=NOW)
    with pytest.raises(InvalidGroupId):
        group_root(settings, bad)
    with pytest.raises(InvalidGroupId):
        refresh_group(settings, bad, now=NOW)
    assert not (settings.home / "blobs" / "tuf").exists()


@pytest.mark.parametrize(
    "path",
    [
        "../etc/passwd",
        "/abs/x.img",
        "a//b.img",
        ".hidden/x.img",
        "a/../b.img",
        "a/./b.img",
        "a/b/c/d/e/f.img",
        "x" * 201,
        "apps/c0/bad name.img",
        "apps/c0/x\x00.img",
        "apps\\c0\\x.img",
    ],
)
def test_invalid_target_paths_are_refused(settings: Settings, group: str, path: str) -> None:
    ref = put(settings, b"data")
    with pytest.raises(InvalidTarget):
        publish_group(settings, group, [TargetSpec(path, ref.sha256, ref.size)], now=NOW)
    assert not (settings.home / "blobs" / "tuf" / group / "metadata").exists()


def test_invalid_target_specs_are_refused(settings: Settings, group: str) -> None:
    ref = put(settings, b"data")
    cases = [
        [TargetSpec("a/x.img", ref.sha256, ref.size), TargetSpec("a/x.img", ref.sha256, ref.size)],  # duplicate
        [TargetSpec("a/x.img", ref.sha256, ref.size + 1)],  # length differs from the blob
        [TargetSpec("a/x.img", "0" * 64, 4)],  # no such blob
        [TargetSpec("a/x.img", "../../x", 4)],  # not a digest
        [TargetSpec("a/x.img", ref.sha256, ref.size, {"big": "x" * MAX_CUSTOM_BYTES})],
        [TargetSpec("a/x.img", ref.sha256, ref.size, {"obj": object()})],
    ]
    for specs in cases:
        with pytest.raises(InvalidTarget):
            publish_group(settings, group, specs, now=NOW)
    assert not (settings.home / "blobs" / "tuf" / group / "metadata").exists()


def test_time_must_be_aware(settings: Settings, group: str) -> None:
    with pytest.raises(TufError):
        publish_group(settings, group, [], now=dt.datetime(2026, 1, 1))


def test_online_keys_are_sealed_0600_and_fail_closed(settings: Settings, group: str) -> None:
    publish_group(settings, group, [], now=NOW)
    files = sorted(keys_dir(settings, group).iterdir())
    assert [p.name for p in files] == ["root.key", "snapshot.key", "targets.key", "timestamp.key"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        blob = path.read_bytes()
        assert blob.startswith(b"BSE1")
        assert b"PRIVATE KEY" not in blob
    assert stat.S_IMODE(keys_dir(settings, group).stat().st_mode) == 0o700

    wrong = Settings(home=settings.home, database_url=settings.database_url, master_key=secrets.token_bytes(32))
    data = put(settings, b"new")
    before = listing(metadata_dir(settings, group))
    with pytest.raises(TufKeyError) as info:
        publish_group(wrong, group, [TargetSpec("a/x.img", data.sha256, data.size)], now=NOW)
    assert info.value.code == "tuf_key_error"
    with pytest.raises(TufKeyError):
        refresh_group(wrong, group, now=NOW + dt.timedelta(days=2))
    assert listing(metadata_dir(settings, group)) == before  # nothing written, keys not re-created
    assert [p.read_bytes() for p in sorted(keys_dir(settings, group).iterdir())] == [p.read_bytes() for p in files]


def test_a_key_file_moved_to_another_role_or_group_does_not_open(settings: Settings, group: str) -> None:
    other = str(uuid.uuid4())
    publish_group(settings, group, [], now=NOW)
    publish_group(settings, other, [], now=NOW)
    keys = keys_dir(settings, group)
    (keys / "timestamp.key").write_bytes((keys / "snapshot.key").read_bytes())
    with pytest.raises(TufKeyError):
        refresh_group(settings, group, now=NOW + dt.timedelta(days=2))
    (keys / "timestamp.key").write_bytes((keys_dir(settings, other) / "timestamp.key").read_bytes())
    with pytest.raises(TufKeyError):
        refresh_group(settings, group, now=NOW + dt.timedelta(days=2))


def test_group_root_of_an_unknown_group(settings: Settings, group: str) -> None:
    with pytest.raises(UnknownGroup):
        group_root(settings, group)
    with pytest.raises(UnknownGroup):
        refresh_group(settings, group, now=NOW)


def test_refresh_resigns_each_role_when_half_its_lifetime_is_gone(settings: Settings, group: str) -> None:
    publish_group(settings, group, [spec(settings, "apps/c0/1.img", b"1")], now=NOW)
    state = load_state(settings, group)
    assert refresh_group(settings, group, now=NOW + dt.timedelta(hours=11)) is False
    assert load_state(settings, group).timestamp.signed.version == 1

    # Timestamp: 12 h of 24 h gone -> re-signed; snapshot untouched.
    later = NOW + dt.timedelta(hours=12, seconds=1)
    assert refresh_group(settings, group, now=later) is True
    state = load_state(settings, group)
    assert (state.timestamp.signed.version, state.snapshot.signed.version) == (2, 1)
    assert state.timestamp.signed.expires == later.replace(microsecond=0) + TIMESTAMP_LIFETIME
    assert refresh_group(settings, group, now=later) is False  # fresh again

    # Snapshot: 3.5 of 7 days gone -> snapshot and timestamp.
    later = NOW + dt.timedelta(days=4)
    assert refresh_group(settings, group, now=later) is True
    state = load_state(settings, group)
    assert (state.timestamp.signed.version, state.snapshot.signed.version, state.targets.signed.version) == (3, 2, 1)
    assert state.snapshot.signed.expires == later + SNAPSHOT_LIFETIME

    # Targets: 45 of 90 days gone -> a new targets version with the same targets.
    later = NOW + dt.timedelta(days=46)
    assert refresh_group(settings, group, now=later) is True
    state = load_state(settings, group)
    assert state.targets.signed.version == 2
    assert set(state.targets.signed.targets) == {"apps/c0/1.img"}
    assert state.snapshot.signed.meta["targets.json"].version == 2

    # Root: past half a year -> root v2, signed by the key root v1 trusts.
    later = NOW + dt.timedelta(days=183)
    assert refresh_group(settings, group, now=later) is True
    root1 = md(settings, group, "1.root.json")
    root2 = md(settings, group, "2.root.json")
    assert root2.signed.version == 2
    assert root2.signed.expires == later + ROOT_LIFETIME
    root1.verify_delegate("root", root2)
    root2.verify_delegate("root", root2)
    assert load_state(settings, group).root.signed.version == 2
    assert group_root(settings, group) == (metadata_dir(settings, group) / "1.root.json").read_bytes()
    # A publish after the root rotation still signs with keys root v2 names.
    publish_group(settings, group, [], now=later)
    root2.verify_delegate("targets", md(settings, group, "3.targets.json"))


def test_refresh_all_reports_each_group(settings: Settings) -> None:
    groups = sorted(str(uuid.uuid4()) for _ in range(3))
    for g in groups:
        publish_group(settings, g, [], now=NOW)
    (settings.home / "blobs" / "tuf" / "not-a-group").mkdir()
    (settings.home / "blobs" / "tuf" / str(uuid.uuid4())).mkdir()  # no repository inside
    assert list_groups(settings) == groups
    seen: list[tuple[str, bool]] = []
    assert refresh_all(settings, now=NOW, on_group=lambda g, r: seen.append((g, r))) == 0
    assert seen == [(g, False) for g in groups]
    assert refresh_all(settings, now=NOW + dt.timedelta(hours=13)) == 3
    # One broken group does not stop the others, and is named.
    (keys_dir(settings, groups[0]) / "timestamp.key").write_bytes(b"BSE1" + bytes(40))
    with pytest.raises(TufError, match=groups[0]):
        refresh_all(settings, now=NOW + dt.timedelta(days=2))
    assert load_state(settings, groups[1]).timestamp.signed.version == 3


def test_a_creation_that_stopped_after_its_root_is_completed(settings: Settings, group: str) -> None:
    publish_group(settings, group, [], now=NOW)
    for name in ("timestamp.json", "1.snapshot.json", "1.targets.json"):
        (metadata_dir(settings, group) / name).unlink()
    result = publish_group(settings, group, [spec(settings, "a/x.img", b"x")], now=NOW)
    assert (result.root_version, result.targets_version, result.timestamp_version) == (1, 1, 1)


def _publish_in_thread(settings: Settings, group: str, specs: list[TargetSpec], barrier: threading.Barrier) -> None:
    barrier.wait()
    publish_group(settings, group, specs, now=NOW)


def test_concurrent_publishers_in_threads_are_serialised(settings: Settings, group: str) -> None:
    count = 6
    specs = [[spec(settings, f"apps/c{i}/1.img", f"app {i}".encode())] for i in range(count)]
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            _publish_in_thread(settings, group, specs[i], barrier)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    _check_consistent(settings, group, count)


def publish_from_process(home: str, master_key: bytes, group: str, path: str, data: bytes) -> int:
    """Run in a spawned process: publish one target."""
    settings = Settings(home=Path(home), database_url="sqlite://", master_key=master_key)
    ref = BlobStore(settings.home / "blobs").put_bytes(data)
    return publish_group(settings, group, [TargetSpec(path, ref.sha256, ref.size)], now=NOW).targets_version


def test_concurrent_publishers_in_processes_are_serialised(settings: Settings, group: str) -> None:
    count = 4
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=count, mp_context=ctx) as pool:
        futures = [
            pool.submit(
                publish_from_process, str(settings.home), settings.master_key, group, f"apps/c{i}/1.img", b"%d" % i
            )
            for i in range(count)
        ]
        versions = sorted(f.result(timeout=60) for f in futures)
    assert versions == list(range(1, count + 1))
    _check_consistent(settings, group, count)


def _check_consistent(settings: Settings, group: str, count: int) -> None:
    """Every publish landed as its own version, and the chain verifies with one set of keys."""
    state = load_state(settings, group)
    assert state.targets.signed.version == count
    assert state.timestamp.signed.version == count
    assert len(list(keys_dir(settings, group).iterdir())) == 4
    root = state.root
    for v in range(1, count + 1):
        root.verify_delegate("targets", md(settings, group, f"{v}.targets.json"))
        root.verify_delegate("snapshot", md(settings, group, f"{v}.snapshot.json"))
    root.verify_delegate("timestamp", state.timestamp)
    snapshot_meta = json.loads((metadata_dir(settings, group) / "timestamp.json").read_bytes())["signed"]["meta"]
    assert snapshot_meta["snapshot.json"]["version"] == count


def test_exported_names() -> None:
    """Other slices (fleet, CLI) rely on these names: a rename must be deliberate."""
    from bastion.service import tuf

    assert sorted(tuf.__all__) == sorted(
        [
            "CorruptRepository",
            "InvalidGroupId",
            "InvalidTarget",
            "PublishResult",
            "TargetSpec",
            "TufError",
            "TufKeyError",
            "UnknownGroup",
            "group_root",
            "list_groups",
            "publish_group",
            "publish_lock",
            "published_targets",
            "remove_group",
            "refresh_all",
            "refresh_group",
        ]
    )
    for name in tuf.__all__:
        assert hasattr(tuf, name)
    from bastion.service.errors import InvalidRequest, NotFound, SealedKeyError

    assert issubclass(tuf.InvalidGroupId, InvalidRequest)
    assert issubclass(tuf.UnknownGroup, NotFound)
    assert issubclass(tuf.TufKeyError, SealedKeyError)
