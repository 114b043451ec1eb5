"""Where a group's TUF repository lives, and which names in it are valid.

One directory per device group under the blob store::

    <home>/blobs/tuf/<group_id>/
        lock                          fcntl.flock: one publisher at a time
        keys/<role>.key               sealed PKCS#8 private keys (0600)
        metadata/<N>.root.json        consistent snapshots: versioned, immutable
        metadata/<N>.targets.json
        metadata/<N>.snapshot.json
        metadata/timestamp.json       the only file that changes in place
        targets/<dir>/<sha256>.<name> hash-prefixed target files (immutable)

Both the repository writer and the static file server validate every name
against the patterns here, so a request path can never leave the group's
directory (TUF 5.5.2 and 5.7.3 name files this way).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

from bastion.service.config import Settings
from bastion.service.tuf.errors import InvalidGroupId, InvalidTarget

__all__ = [
    "MAX_TARGET_DEPTH",
    "MAX_TARGET_PATH_CHARS",
    "ROLES",
    "group_dir",
    "is_metadata_name",
    "is_served_target_path",
    "keys_dir",
    "metadata_dir",
    "served_target_name",
    "targets_dir",
    "tuf_root",
    "validate_group_id",
    "validate_target_path",
]

#: The top-level roles, in signing order of a publish.
ROLES = ("root", "targets", "snapshot", "timestamp")
#: Bound on a target path (``apps/<uuid>/<version>.img`` is well under it).
MAX_TARGET_PATH_CHARS = 200
#: Bound on the number of directories in a target path.
MAX_TARGET_DEPTH = 4

_GROUP_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A path segment starts with an alphanumeric, so "." and ".." can never match.
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_METADATA_NAME = re.compile(r"(?:[1-9][0-9]{0,9}\.(?:root|targets|snapshot)|timestamp)\.json")
_HASHED_NAME = re.compile(r"([0-9a-f]{64})\.([A-Za-z0-9][A-Za-z0-9._+-]{0,99})")


def validate_group_id(group_id: str) -> str:
    """Return ``group_id`` if it is a canonical lowercase UUID string.

    Raises:
        InvalidGroupId: anything else (including path tricks such as ``../x``).
    """
    if not isinstance(group_id, str) or not _GROUP_ID.fullmatch(group_id):
        raise InvalidGroupId("a device group id is a lowercase UUID string")
    try:
        uuid.UUID(group_id)
    except ValueError as exc:  # pragma: no cover - the pattern already guarantees it parses
        raise InvalidGroupId("a device group id is a lowercase UUID string") from exc
    return group_id


def validate_target_path(path: str) -> str:
    """Return ``path`` if it is a safe relative target path (``dir/.../name``).

    Raises:
        InvalidTarget: empty, absolute, too long, too deep, or a segment with
            characters outside ``[A-Za-z0-9._+-]`` or starting with a dot.
    """
    if not isinstance(path, str) or not path or len(path) > MAX_TARGET_PATH_CHARS:
        raise InvalidTarget(f"a target path has 1 to {MAX_TARGET_PATH_CHARS} characters")
    segments = path.split("/")
    if len(segments) > MAX_TARGET_DEPTH + 1:
        raise InvalidTarget(f"a target path has at most {MAX_TARGET_DEPTH} directories")
    for segment in segments:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidTarget(f"target path {path!r} has an invalid segment")
    return path


def is_metadata_name(name: str) -> bool:
    """Whether ``name`` is a metadata file name the repository can hold."""
    return _METADATA_NAME.fullmatch(name) is not None


def is_served_target_path(path: str) -> str | None:
    """The SHA-256 hex of a hash-prefixed target path, or ``None`` if the path is not one."""
    if not path or len(path) > MAX_TARGET_PATH_CHARS + 65:
        return None
    segments = path.split("/")
    if len(segments) > MAX_TARGET_DEPTH + 1:
        return None
    match = _HASHED_NAME.fullmatch(segments[-1])
    if match is None or not all(_SEGMENT.fullmatch(s) for s in segments[:-1]):
        return None
    return match.group(1)


def served_target_name(path: str, sha256: str) -> str:
    """The consistent-snapshot file name of a target: ``dir/<sha256>.<basename>``."""
    parent, sep, name = path.rpartition("/")
    return f"{parent}{sep}{sha256}.{name}"


def tuf_root(settings: Settings) -> Path:
    """The directory holding every group's repository."""
    return settings.home / "blobs" / "tuf"


def group_dir(settings: Settings, group_id: str) -> Path:
    """A group's repository directory (validates the id)."""
    return tuf_root(settings) / validate_group_id(group_id)


def keys_dir(settings: Settings, group_id: str) -> Path:
    """Where a group's sealed online keys live."""
    return group_dir(settings, group_id) / "keys"


def metadata_dir(settings: Settings, group_id: str) -> Path:
    """Where a group's metadata files live."""
    return group_dir(settings, group_id) / "metadata"


def targets_dir(settings: Settings, group_id: str) -> Path:
    """Where a group's hash-prefixed target files live."""
    return group_dir(settings, group_id) / "targets"
