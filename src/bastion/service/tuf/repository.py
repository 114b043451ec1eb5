"""One TUF repository per device group, written with the python-tuf Metadata API.

Example:
    >>> spec = TargetSpec("apps/<component>/1.0.0.img", blob.sha256, blob.size, {"bastion": {}})  # doctest: +SKIP
    >>> publish_group(settings, group_id, [spec], now=now)                 # doctest: +SKIP
    >>> refresh_all(settings, now=now)                                      # doctest: +SKIP

A publish creates the repository on first use (one ECDSA P-256 key per role,
sealed under the master key; root v1 with consistent snapshots), then writes
new ``targets``, ``snapshot`` and ``timestamp`` versions. Files are written in
the order a client reads them backwards (targets files, targets metadata,
snapshot, then ``timestamp.json`` last), so every state a reader can observe
is complete. All writers of a group take its file lock.

Time is a parameter: every function takes ``now`` (timezone-aware UTC).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuf.api.exceptions import RepositoryError
from tuf.api.serialization import DeserializationError

from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings, write_private_file
from bastion.service.tuf._tuf import (
    CryptoSigner,
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from bastion.service.tuf.errors import CorruptRepository, InvalidTarget, TufError, UnknownGroup
from bastion.service.tuf.files import PUBLISH_LOCK_FILE, check_blob, fsync_dir, group_lock, place_target, read_bounded
from bastion.service.tuf.keys import create_signers, load_signers
from bastion.service.tuf.layout import (
    ROLES,
    group_dir,
    keys_dir,
    metadata_dir,
    served_target_name,
    targets_dir,
    tuf_root,
    validate_group_id,
    validate_target_path,
)

__all__ = [
    "LIFETIMES",
    "MAX_CUSTOM_BYTES",
    "MAX_METADATA_BYTES",
    "MAX_TARGETS_PER_GROUP",
    "REFRESH_FRACTION",
    "ROOT_LIFETIME",
    "SNAPSHOT_LIFETIME",
    "TARGETS_LIFETIME",
    "TIMESTAMP_FILE",
    "TIMESTAMP_LIFETIME",
    "PublishResult",
    "RepositoryState",
    "TargetSpec",
    "group_root",
    "list_groups",
    "load_state",
    "publish_group",
    "publish_lock",
    "published_targets",
    "refresh_all",
    "refresh_group",
    "remove_group",
]

#: Expiry of each role's metadata after it is signed (docs/updates.md).
ROOT_LIFETIME = dt.timedelta(days=365)
TARGETS_LIFETIME = dt.timedelta(days=90)
SNAPSHOT_LIFETIME = dt.timedelta(days=7)
TIMESTAMP_LIFETIME = dt.timedelta(days=1)
LIFETIMES: Mapping[str, dt.timedelta] = {
    "root": ROOT_LIFETIME,
    "targets": TARGETS_LIFETIME,
    "snapshot": SNAPSHOT_LIFETIME,
    "timestamp": TIMESTAMP_LIFETIME,
}
#: A role is re-signed by a refresh when less than this fraction of its lifetime remains.
REFRESH_FRACTION = 0.5
#: Bound on the number of targets in one group.
MAX_TARGETS_PER_GROUP = 1024
#: Bound on one target's ``custom`` value, serialized as JSON.
MAX_CUSTOM_BYTES = 4096
#: Bound on a metadata file the writer reads back (ngclient's default for targets).
MAX_METADATA_BYTES = 5_000_000

#: The one metadata file that is not versioned.
TIMESTAMP_FILE = "timestamp.json"


@dataclass(frozen=True)
class TargetSpec:
    """One target of a group: a blob of the blob store published under ``path``.

    Attributes:
        path: the TUF target path, e.g. ``apps/<component_id>/<version>.img``.
        blob_sha256: the blob's SHA-256 (lowercase hex), its id in the blob store.
        length: the blob's size in bytes.
        custom: the target's ``custom`` value (a JSON object, at most
            :data:`MAX_CUSTOM_BYTES` serialized).
    """

    path: str
    blob_sha256: str
    length: int
    custom: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PublishResult:
    """What a publish or refresh left behind: the current version of each role."""

    group_id: str
    changed: bool
    root_version: int
    targets_version: int
    snapshot_version: int
    timestamp_version: int


@dataclass
class RepositoryState:
    """The current metadata of a group, as read from its files."""

    root: Metadata[Root]
    targets: Metadata[Targets]
    snapshot: Metadata[Snapshot]
    timestamp: Metadata[Timestamp]

    def result(self, group_id: str, *, changed: bool) -> PublishResult:
        """Summarise the versions."""
        return PublishResult(
            group_id,
            changed,
            self.root.signed.version,
            self.targets.signed.version,
            self.snapshot.signed.version,
            self.timestamp.signed.version,
        )


def _utc(now: dt.datetime) -> dt.datetime:
    if now.tzinfo is None:
        raise TufError("time must be timezone-aware (UTC)")
    return now.astimezone(dt.UTC)


def _parse(data: bytes, signed_type: type[Signed], name: str) -> Metadata[Any]:
    try:
        md: Metadata[Any] = Metadata.from_bytes(data)
    except (DeserializationError, RepositoryError, ValueError, KeyError, TypeError) as exc:
        raise CorruptRepository(f"{name} is not valid TUF metadata") from exc
    if not isinstance(md.signed, signed_type):
        raise CorruptRepository(f"{name} holds {md.signed.type} metadata")
    return md


def _read_md(directory: Path, name: str, signed_type: type[Signed]) -> Metadata[Any]:
    try:
        data = read_bounded(directory / name, MAX_METADATA_BYTES)
    except FileNotFoundError as exc:
        raise CorruptRepository(f"{name} is missing") from exc
    return _parse(data, signed_type, name)


def _latest_root_version(directory: Path) -> int:
    versions = [int(p.name.split(".", 1)[0]) for p in directory.glob("*.root.json") if p.name.split(".")[0].isdigit()]
    return max(versions, default=0)


def load_state(settings: Settings, group_id: str) -> RepositoryState:
    """Read a group's current metadata (timestamp → snapshot → targets, and the newest root).

    Raises:
        UnknownGroup: nothing was ever published for the group.
        CorruptRepository: files are missing or unreadable.
    """
    directory = metadata_dir(settings, group_id)
    root_version = _latest_root_version(directory) if directory.is_dir() else 0
    if root_version == 0:
        raise UnknownGroup(f"device group {group_id} has no TUF repository yet")
    root = _read_md(directory, f"{root_version}.root.json", Root)
    timestamp = _read_md(directory, TIMESTAMP_FILE, Timestamp)
    snapshot = _read_md(directory, f"{timestamp.signed.snapshot_meta.version}.snapshot.json", Snapshot)
    targets_meta = snapshot.signed.meta.get("targets.json")
    if targets_meta is None:
        raise CorruptRepository("the snapshot does not list targets.json")
    targets = _read_md(directory, f"{targets_meta.version}.targets.json", Targets)
    return RepositoryState(root, targets, snapshot, timestamp)


def _write(directory: Path, name: str, md: Metadata[Any], signer: CryptoSigner) -> bytes:
    md.signatures.clear()
    md.sign(signer)
    data = md.to_bytes()
    write_private_file(directory / name, data)
    return data


def _meta_file(version: int, data: bytes) -> MetaFile:
    return MetaFile(version=version, length=len(data), hashes={"sha256": hashlib.sha256(data).hexdigest()})


def _create(settings: Settings, group_id: str, now: dt.datetime) -> tuple[Metadata[Root], dict[str, CryptoSigner]]:
    """Create keys and root v1 (the caller holds the group lock; no root exists)."""
    # No root names them, so keys left by a creation that crashed were never trusted by anyone.
    stale = keys_dir(settings, group_id)
    if stale.is_dir():
        shutil.rmtree(stale)
    signers = create_signers(settings, group_id)
    root = Root(version=1, expires=now + ROOT_LIFETIME, consistent_snapshot=True)
    for role in ROLES:
        root.add_key(signers[role].public_key, role)
    md = Metadata(root)
    directory = metadata_dir(settings, group_id)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(directory, "1.root.json", md, signers["root"])
    fsync_dir(directory)
    return md, signers


def _target_files(specs: Sequence[TargetSpec]) -> dict[str, TargetFile]:
    if len(specs) > MAX_TARGETS_PER_GROUP:
        raise InvalidTarget(f"a group has at most {MAX_TARGETS_PER_GROUP} targets")
    files: dict[str, TargetFile] = {}
    for spec in specs:
        path = validate_target_path(spec.path)
        if path in files:
            raise InvalidTarget(f"target path {path!r} is listed twice")
        if not isinstance(spec.length, int) or spec.length < 0:
            raise InvalidTarget(f"target {path!r} has an invalid length")
        try:
            custom_json = json.dumps(dict(spec.custom), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidTarget(f"the custom value of target {path!r} is not a JSON object") from exc
        if len(custom_json) > MAX_CUSTOM_BYTES:
            raise InvalidTarget(f"the custom value of target {path!r} is larger than {MAX_CUSTOM_BYTES} bytes")
        files[path] = TargetFile(
            spec.length, {"sha256": spec.blob_sha256}, path, unrecognized_fields={"custom": json.loads(custom_json)}
        )
    return files


def _advance(
    settings: Settings,
    group_id: str,
    root: Metadata[Root],
    state: RepositoryState | None,
    signers: Mapping[str, CryptoSigner],
    *,
    now: dt.datetime,
    new_targets: dict[str, TargetFile] | None,
    new_custom: dict[str, Any] | None = None,
    bump_root: bool = False,
    bump_snapshot: bool = False,
) -> RepositoryState:
    """Write new versions: root (if asked), targets (if given), snapshot (if needed), timestamp.

    ``state`` is None for a repository that has only its root: every role then starts at 1.
    """
    directory = metadata_dir(settings, group_id)
    if bump_root:
        version = root.signed.version + 1
        root = Metadata(Root(version, None, now + ROOT_LIFETIME, root.signed.keys, root.signed.roles, True))
        _write(directory, f"{version}.root.json", root, signers["root"])
    if new_targets is not None:
        t_version = state.targets.signed.version + 1 if state else 1
        extra = {"custom": new_custom} if new_custom else None
        targets = Metadata(Targets(t_version, None, now + TARGETS_LIFETIME, new_targets, unrecognized_fields=extra))
        t_data = _write(directory, f"{t_version}.targets.json", targets, signers["targets"])
        meta = {"targets.json": _meta_file(t_version, t_data)}
    elif state is not None:
        targets, meta = state.targets, dict(state.snapshot.signed.meta)
    else:
        raise TufError("a new repository needs its first targets")
    if state is None or new_targets is not None or bump_snapshot:
        s_version = state.snapshot.signed.version + 1 if state else 1
        snapshot = Metadata(Snapshot(s_version, None, now + SNAPSHOT_LIFETIME, meta))
        s_data = _write(directory, f"{s_version}.snapshot.json", snapshot, signers["snapshot"])
        snapshot_meta = _meta_file(s_version, s_data)
    else:
        snapshot, snapshot_meta = state.snapshot, state.timestamp.signed.snapshot_meta
    ts_version = state.timestamp.signed.version + 1 if state else 1
    timestamp = Metadata(Timestamp(ts_version, None, now + TIMESTAMP_LIFETIME, snapshot_meta))
    _write(directory, TIMESTAMP_FILE, timestamp, signers["timestamp"])  # last: readers switch here
    fsync_dir(directory)
    return RepositoryState(root, targets, snapshot, timestamp)


def _group_custom(custom: Mapping[str, Any] | None) -> dict[str, Any]:
    """The group-wide ``custom`` value of the targets role, checked and bounded (``{}``: none)."""
    if not custom:
        return {}
    try:
        custom_json = json.dumps(dict(custom), sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidTarget("the group's custom value is not a JSON object") from exc
    if len(custom_json) > MAX_CUSTOM_BYTES:
        raise InvalidTarget(f"the group's custom value is larger than {MAX_CUSTOM_BYTES} bytes")
    loaded: dict[str, Any] = json.loads(custom_json)
    return loaded


def _current_custom(targets: Targets) -> dict[str, Any]:
    """The group-wide ``custom`` value a targets role carries (``{}``: none)."""
    value = targets.unrecognized_fields.get("custom")
    return value if isinstance(value, dict) else {}


def publish_group(
    settings: Settings,
    group_id: str,
    targets: Sequence[TargetSpec],
    *,
    now: dt.datetime,
    custom: Mapping[str, Any] | None = None,
) -> PublishResult:
    """Publish ``targets`` as the complete target set of a group, with the group-wide ``custom`` value.

    ``custom`` (a JSON object of at most ``MAX_CUSTOM_BYTES``) is signed into
    the targets role's own ``custom`` field: the fleet carries the group's
    update settings there (maintenance window, update policy) so that a change
    reaches devices at their next check-in. Creates the repository on first
    use. When the target set and ``custom`` equal the current ones, nothing is
    written (``changed`` is False).

    Raises:
        InvalidGroupId: ``group_id`` is not a lowercase UUID string.
        InvalidTarget: a spec is invalid or its blob is missing or of another length.
        TufKeyError: the group's sealed keys do not open under the master key.
        CorruptRepository: the group's files are unreadable.
    """
    validate_group_id(group_id)
    now = _utc(now)
    files = _target_files(targets)
    group_custom = _group_custom(custom)
    store = BlobStore(settings.home / "blobs")
    for spec in targets:  # before the lock and before creating anything
        check_blob(store, spec.blob_sha256, spec.length)
    with group_lock(group_dir(settings, group_id)):
        directory = metadata_dir(settings, group_id)
        root_version = _latest_root_version(directory) if directory.is_dir() else 0
        state: RepositoryState | None = None
        if root_version == 0:
            root, signers = _create(settings, group_id, now)
        elif not (directory / TIMESTAMP_FILE).is_file():  # a creation that stopped after its root
            root = _read_md(directory, f"{root_version}.root.json", Root)
            signers = load_signers(settings, group_id, root.signed)
        else:
            state = load_state(settings, group_id)
            if state.targets.signed.targets == files and _current_custom(state.targets.signed) == group_custom:
                return state.result(group_id, changed=False)
            root, signers = state.root, load_signers(settings, group_id, state.root.signed)
        served = targets_dir(settings, group_id)
        for spec in targets:
            place_target(store, served / served_target_name(spec.path, spec.blob_sha256), spec.blob_sha256, spec.length)
        new_state = _advance(
            settings, group_id, root, state, signers, now=now, new_targets=files, new_custom=group_custom
        )
        return new_state.result(group_id, changed=True)


def _aging(signed: Signed, role: str, now: dt.datetime) -> bool:
    return signed.expires - now < LIFETIMES[role] * REFRESH_FRACTION


def refresh_group(settings: Settings, group_id: str, *, now: dt.datetime) -> bool:
    """Re-sign the roles of a group with less than half their lifetime left.

    Re-signing targets forces a new snapshot, and either forces a new
    timestamp; the root is re-signed as a new version (clients fetch it with
    their usual probe for the next root).

    Returns:
        True if anything was re-signed.

    Raises:
        UnknownGroup, TufKeyError, CorruptRepository: as :func:`publish_group`.
    """
    validate_group_id(group_id)
    now = _utc(now)
    if not (metadata_dir(settings, group_id) / TIMESTAMP_FILE).is_file():
        raise UnknownGroup(f"device group {group_id} has no TUF repository yet")
    with group_lock(group_dir(settings, group_id)):
        state = load_state(settings, group_id)
        aging = {
            "root": _aging(state.root.signed, "root", now),
            "targets": _aging(state.targets.signed, "targets", now),
            "snapshot": _aging(state.snapshot.signed, "snapshot", now),
            "timestamp": _aging(state.timestamp.signed, "timestamp", now),
        }
        if not any(aging.values()):
            return False
        signers = load_signers(settings, group_id, state.root.signed)
        _advance(
            settings,
            group_id,
            state.root,
            state,
            signers,
            now=now,
            new_targets=dict(state.targets.signed.targets) if aging["targets"] else None,
            new_custom=_current_custom(state.targets.signed),
            bump_root=aging["root"],
            bump_snapshot=aging["snapshot"],
        )
        return True


def list_groups(settings: Settings, *, complete: bool = True) -> list[str]:
    """The ids of every group that has a repository, sorted.

    With ``complete=False`` also those with only part of one: a creation that stopped
    before its first timestamp (sealed keys, a root), or only lock files (a publish that
    found its group deleted). The refresher wants the first list; a sweep of deleted
    groups' directories wants the second.
    """
    base = tuf_root(settings)
    if not base.is_dir():
        return []
    groups = []
    for entry in base.iterdir():
        try:
            validate_group_id(entry.name)
        except TufError:
            continue
        if (entry / "metadata" / TIMESTAMP_FILE).is_file() or (not complete and entry.is_dir()):
            groups.append(entry.name)
    return sorted(groups)


def refresh_all(settings: Settings, *, now: dt.datetime, on_group: Callable[[str, bool], None] | None = None) -> int:
    """Refresh every group; a failing group does not stop the others.

    Args:
        settings: service settings.
        now: the current time.
        on_group: called with ``(group_id, refreshed)`` after each group (CLI progress).

    Returns:
        The number of groups that were re-signed.

    Raises:
        TufError: after trying every group, if any failed (names them).
    """
    refreshed = 0
    failed: list[str] = []
    for group_id in list_groups(settings):
        try:
            changed = refresh_group(settings, group_id, now=now)
        except TufError:
            failed.append(group_id)
            continue
        refreshed += int(changed)
        if on_group is not None:
            on_group(group_id, changed)
    if failed:
        raise TufError(f"{len(failed)} group(s) could not be refreshed: {', '.join(failed)}")
    return refreshed


#: A removed group's directory while it is deleted (outside the group-id namespace: never served or refreshed).
_TOMBSTONE_PREFIX = ".removed-"


def remove_group(settings: Settings, group_id: str) -> bool:
    """Remove a deleted group's repository and its sealed online keys; whether there was one (idempotent).

    Under the group's publish lock and its inner writer lock (the one a publish or a
    refresh holds while it writes files, taken in that order as :func:`publish_group`
    is called) the directory is renamed out of the served and refreshed namespace (one
    atomic rename), then deleted: a crash midway leaves a tombstone that the next
    removal of any group sweeps, never a half-served repository, and no writer is
    midway through its files when they move.
    """
    root = tuf_root(settings)
    directory = group_dir(settings, group_id)
    removed = False
    if directory.is_dir():
        with publish_lock(settings, group_id), group_lock(directory):
            tomb = root / f"{_TOMBSTONE_PREFIX}{group_id}"
            shutil.rmtree(tomb, ignore_errors=True)
            try:
                directory.rename(tomb)
                removed = True
            except FileNotFoundError:  # a concurrent removal won
                pass
            fsync_dir(root)
    for leftover in root.glob(f"{_TOMBSTONE_PREFIX}*") if root.is_dir() else ():
        shutil.rmtree(leftover, ignore_errors=True)
    return removed


def group_root(settings: Settings, group_id: str) -> bytes:
    """The group's first root (``1.root.json``): what a device is bootstrapped with.

    Raises:
        InvalidGroupId: malformed id.
        UnknownGroup: nothing was ever published for the group.
    """
    try:
        return read_bounded(metadata_dir(settings, group_id) / "1.root.json", MAX_METADATA_BYTES)
    except FileNotFoundError as exc:
        raise UnknownGroup(f"device group {group_id} has no TUF repository yet") from exc


@contextmanager
def publish_lock(settings: Settings, group_id: str) -> Iterator[None]:
    """Hold the group's publish lock (outside :func:`publish_group`'s own lock).

    The fleet holds it across "read the committed database state, publish it",
    so concurrent workers publish in the order they read (ADR 0018).
    """
    with group_lock(group_dir(settings, group_id), PUBLISH_LOCK_FILE):
        yield


def published_targets(settings: Settings, group_id: str) -> dict[str, str] | None:
    """The group's served targets as ``{path: sha256}``, or None when it has no repository yet."""
    validate_group_id(group_id)
    directory = metadata_dir(settings, group_id)
    if not (directory / TIMESTAMP_FILE).is_file():
        return None
    state = load_state(settings, group_id)
    return {path: target.hashes["sha256"] for path, target in state.targets.signed.targets.items()}
