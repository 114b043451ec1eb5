"""The ``updates`` pointer from the attestation answer, and where the device keeps it.

The attestation answer carries (docs/updates.md, "Device bootstrap")::

    "updates": {"group_id": "...", "tuf_base": "/tuf/<group_id>",
                "root": "<base64 of 1.root.json>",
                "maintenance_window": {"start": "HH:MM", "duration_minutes": 120} | null}

The first root the device is given for a group is its TUF trust anchor (trust on
first use, over the attested TLS session) and is stored once in
``DEV/os-state/tuf/<group_id>/root.json``; every later root comes only through
TUF root rotation, which ngclient verifies. The current pointer (group, base
path, maintenance window; not the root) is kept in ``DEV/os-state/tuf/group.json``.
The window in force is the one the group's signed TUF targets metadata carries
(:func:`signed_window`), read after every refresh; the pointer's window is the
fallback for a repository that carries none.

Example:
    >>> p = parse_update_pointer({"group_id": "g1", "tuf_base": "/tuf/g1", "root": "e30="})
    >>> p.group_id, p.root
    ('g1', b'{}')
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.hw.atomic import atomic_write_bytes
from bastion.os.updates.errors import UpdateRefusedError

__all__ = [
    "GROUP_FILE",
    "MAX_POINTER_FILE_BYTES",
    "MAX_ROOT_BYTES",
    "MAX_SIGNED_CLEARS",
    "BlocklistClear",
    "GroupStore",
    "MaintenanceWindow",
    "UpdatePointer",
    "parse_update_pointer",
    "signed_clears",
    "signed_window",
]

#: Bound on the first root metadata handed over at attestation (same as ngclient's root bound).
MAX_ROOT_BYTES = 512 * 1024
#: Bound on ``group.json``.
MAX_POINTER_FILE_BYTES = 16 * 1024
#: Bound on the TUF base path.
MAX_TUF_BASE_CHARS = 256
#: A maintenance window lasts at most a day.
MAX_WINDOW_MINUTES = 24 * 60
GROUP_FILE = "group.json"
ROOT_FILE = "root.json"
# Used with fullmatch: "$" alone also matches before a final newline, which then rode
# into directory names and URLs (fuzz/harnesses/fuzz_update_pointer.py). ASCII digits only.
_GROUP_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_TUF_BASE = re.compile(r"/[A-Za-z0-9_./-]*")
_HHMM = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class MaintenanceWindow:
    """A daily window (UTC) in which updates may be installed.

    Attributes:
        start_minute: minutes after midnight UTC at which it opens.
        duration_minutes: how long it stays open (1..1440).
    """

    start_minute: int
    duration_minutes: int

    @classmethod
    def parse(cls, value: object) -> MaintenanceWindow | None:
        """Parse ``{"start": "HH:MM", "duration_minutes": n}``; ``None`` means any time.

        Raises:
            UpdateRefusedError: (``bad-pointer``) the window is malformed.
        """
        if value is None:
            return None
        if not isinstance(value, dict):
            raise UpdateRefusedError("bad-pointer", "maintenance_window must be an object or null")
        start, duration = value.get("start"), value.get("duration_minutes")
        match = _HHMM.fullmatch(start) if isinstance(start, str) else None
        if match is None:
            raise UpdateRefusedError("bad-pointer", "maintenance_window.start must be HH:MM")
        if isinstance(duration, bool) or not isinstance(duration, int) or not 1 <= duration <= MAX_WINDOW_MINUTES:
            raise UpdateRefusedError("bad-pointer", "maintenance_window.duration_minutes must be 1..1440")
        return cls(int(match[1]) * 60 + int(match[2]), duration)

    def to_json(self) -> dict[str, Any]:
        """The JSON form :meth:`parse` reads."""
        hours, minutes = divmod(self.start_minute, 60)
        return {"start": f"{hours:02d}:{minutes:02d}", "duration_minutes": self.duration_minutes}

    def _opening_on(self, day: dt.date) -> dt.datetime:
        midnight = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        return midnight + dt.timedelta(minutes=self.start_minute)

    def is_open(self, now: dt.datetime) -> bool:
        """Whether ``now`` falls inside the window (windows may cross midnight)."""
        now = now.astimezone(dt.UTC)
        length = dt.timedelta(minutes=self.duration_minutes)
        return any(
            opening <= now < opening + length
            for opening in (self._opening_on(now.date()), self._opening_on(now.date() - dt.timedelta(days=1)))
        )

    def next_open(self, now: dt.datetime) -> dt.datetime:
        """``now`` if the window is open, else when it opens next."""
        if self.is_open(now):
            return now
        opening = self._opening_on(now.astimezone(dt.UTC).date())
        return opening if opening > now else opening + dt.timedelta(days=1)


def signed_window(custom: Mapping[str, Any], fallback: MaintenanceWindow | None) -> MaintenanceWindow | None:
    """The maintenance window the group's signed targets metadata carries, else ``fallback``.

    The service signs ``{"bastion": {"maintenance_window": {...} | null, ...}}``
    into the group's targets role (docs/updates.md), so the device sees a
    changed window at its next check-in; ``fallback`` (the window of the last
    attestation answer) serves a repository published before it did.

    Raises:
        UpdateRefusedError: (``bad-pointer``) the signed window is malformed.
    """
    settings = custom.get("bastion")
    if not isinstance(settings, dict) or "maintenance_window" not in settings:
        return fallback
    return MaintenanceWindow.parse(settings["maintenance_window"])


@dataclass(frozen=True)
class UpdatePointer:
    """Where the device's update repository is, and its first root."""

    group_id: str
    tuf_base: str
    root: bytes | None = None
    maintenance_window: MaintenanceWindow | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form (without the root)."""
        window = self.maintenance_window.to_json() if self.maintenance_window else None
        return {"group_id": self.group_id, "tuf_base": self.tuf_base, "maintenance_window": window}


def parse_update_pointer(value: object, *, require_root: bool = True) -> UpdatePointer | None:
    """Parse the ``updates`` value of an attestation answer; ``None``, ``{}`` or ``[]`` (issue 2) means no group.

    Raises:
        UpdateRefusedError: (``bad-pointer``) a field is missing, malformed or oversized.
    """
    if value is None or value in ({}, []):
        return None
    if not isinstance(value, dict):
        raise UpdateRefusedError("bad-pointer", "updates must be an object")
    group_id, base, root = value.get("group_id"), value.get("tuf_base"), value.get("root")
    if not isinstance(group_id, str) or not _GROUP_ID.fullmatch(group_id):
        raise UpdateRefusedError("bad-pointer", "updates.group_id is not a valid group id")
    if (
        not isinstance(base, str)
        or len(base) > MAX_TUF_BASE_CHARS
        or not _TUF_BASE.fullmatch(base)
        or ".." in base.split("/")
    ):
        raise UpdateRefusedError("bad-pointer", "updates.tuf_base must be an absolute path on the service")
    root_bytes: bytes | None = None
    if require_root:
        if not isinstance(root, str) or len(root) > MAX_ROOT_BYTES * 4 // 3 + 4:
            raise UpdateRefusedError("bad-pointer", "updates.root is missing or oversized")
        try:
            root_bytes = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UpdateRefusedError("bad-pointer", "updates.root is not base64") from exc
    window = MaintenanceWindow.parse(value.get("maintenance_window"))
    return UpdatePointer(group_id, base.rstrip("/"), root_bytes, window)


class GroupStore:
    """The device's TUF trust anchors and current group, under ``DEV/os-state/tuf/``.

    Args:
        path: the ``tuf`` directory; created 0700.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def metadata_dir(self, group_id: str) -> Path:
        """ngclient's metadata directory for a group (holds ``root.json``)."""
        return self.path / group_id

    def has_root(self, group_id: str) -> bool:
        """Whether a trust anchor is stored for ``group_id``."""
        return (self.metadata_dir(group_id) / ROOT_FILE).exists()

    def remember(self, pointer: UpdatePointer | None) -> bool:
        """Record the current group; store its root only if none is stored yet.

        Returns:
            True if this stored a new trust anchor (first time in this group).
        """
        if pointer is None:
            (self.path / GROUP_FILE).unlink(missing_ok=True)
            return False
        first = False
        if not self.has_root(pointer.group_id) and pointer.root is not None:
            directory = self.metadata_dir(pointer.group_id)
            directory.mkdir(mode=0o700, exist_ok=True)
            atomic_write_bytes(directory / ROOT_FILE, pointer.root)  # trust on first use, per group
            first = True
        data = json.dumps(pointer.to_json(), sort_keys=True).encode() + b"\n"
        current = self.path / GROUP_FILE
        if not current.exists() or current.read_bytes()[: MAX_POINTER_FILE_BYTES + 1] != data:
            atomic_write_bytes(current, data)
        return first

    def current(self) -> UpdatePointer | None:
        """The group the device is in now, or ``None`` (no group, or unreadable)."""
        try:
            with (self.path / GROUP_FILE).open("rb") as handle:
                data = handle.read(MAX_POINTER_FILE_BYTES + 1)
            if len(data) > MAX_POINTER_FILE_BYTES:
                return None
            pointer = parse_update_pointer(json.loads(data), require_root=False)
        except (OSError, ValueError, UpdateRefusedError):
            return None
        if pointer is None or not self.has_root(pointer.group_id):
            return None
        return pointer


#: Bound on the blocklist clears a group's targets carry (the service keeps the newest).
MAX_SIGNED_CLEARS = 64
_SHA256 = re.compile(r"[0-9a-f]{64}")
_CLEAR_ID = re.compile(r"[0-9a-z_-]{1,40}")


@dataclass(frozen=True)
class BlocklistClear:
    """A service clear of a blocklisted OS image, for the whole group or some devices (ADR 0018)."""

    clear_id: str
    sha256: str


def signed_clears(custom: Mapping[str, Any], device_id: str) -> list[BlocklistClear]:
    """The blocklist clears signed into the group's targets that apply to ``device_id``.

    The service signs ``{"bastion": {"blocklist_clears": [{"id", "sha256", "devices": [...] | null}]}}``
    into the group's targets role; ``devices`` null is the whole group. Malformed
    entries are ignored (a clear only ever lifts a device-side blocklisting), and at
    most :data:`MAX_SIGNED_CLEARS` are read.
    """
    settings = custom.get("bastion")
    clears = settings.get("blocklist_clears") if isinstance(settings, dict) else None
    if not isinstance(clears, list):
        return []
    out = []
    for entry in clears[:MAX_SIGNED_CLEARS]:
        if not isinstance(entry, dict):
            continue
        clear_id, sha, devices = entry.get("id"), entry.get("sha256"), entry.get("devices")
        if not (isinstance(clear_id, str) and _CLEAR_ID.fullmatch(clear_id)):
            continue
        if not (isinstance(sha, str) and _SHA256.fullmatch(sha)):
            continue
        if devices is not None and not (isinstance(devices, list) and device_id in devices):
            continue
        out.append(BlocklistClear(clear_id, sha))
    return out
