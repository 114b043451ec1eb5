"""The error-report batch as the service reads it (docs/error-reports.md, the brief's wire contract).

Until devreport's codec (:mod:`bastion.crypto.error_report`) is merged, this
module holds a strict, bounded decoder of the same contract; at the merge
:func:`decode` becomes a call of ``decode_batch`` and the dataclasses become
``ErrorBatch``/``ErrorRecord``. Everything else of the slice uses only this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bastion.crypto.cose import cbor_loads_exact
from bastion.crypto.errors import MalformedInput

__all__ = ["CATEGORIES", "EVENT_CLASSES", "Batch", "Installed", "Record", "WireError", "decode"]

CATEGORIES = frozenset({"AppCrash", "AppExit", "Watchdog", "Security", "OS", "Update", "Attestation", "Certificate"})
EVENT_CLASSES = frozenset({"Error", "Warning", "Info"})
#: Times are seconds since the epoch; this bound keeps them representable.
MAX_EPOCH_SECONDS = 2**37
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_EVENT_TYPE = re.compile(r"[a-z0-9_]{1,48}")
_DETAIL_TEXT = {"exception": 128, "stderr_tail": 2048, "capability": 64, "reason": 128}
_DETAIL_INT = ("exit_code", "signal", "uptime_s")
MAX_FRAMES = 32
MAX_FRAME_TEXT = 128


class WireError(ValueError):
    """The payload is not a well-formed error-report batch; the message says which field."""


@dataclass(frozen=True)
class Installed:
    """An installed component (an app; the OS is ``os_version``)."""

    component_id: str
    version: str


@dataclass(frozen=True)
class Record:
    """One coalesced error record."""

    category: str
    event_class: str
    event_type: str
    component_id: str
    version: str
    count: int
    first_at: int
    last_at: int
    description: str
    #: The optional fields that are present (exception, frames, signal, ...).
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """A decoded (not yet authenticated against the database) batch."""

    device_id: str
    batch_id: str
    iat: int
    os_version: str
    boot_slot: str
    group_id: str | None
    installed: tuple[Installed, ...]
    dropped: int
    records: tuple[Record, ...]


def _text(value: Any, name: str, bound: int) -> str:
    if not isinstance(value, str) or len(value) > bound:
        raise WireError(f"{name} must be a string of at most {bound} characters")
    return value if value.isprintable() else "".join(c if c.isprintable() else "?" for c in value)


def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise WireError(f"{name} must be an integer in [{low}, {high}]")
    return value


def _list(value: Any, name: str, bound: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > bound:
        raise WireError(f"{name} must be a list of at most {bound} items")
    return value


def _map(value: Any, name: str) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise WireError(f"{name} must be a map")
    return value


def _record(raw: Any, name: str, max_count: int) -> Record:
    data = _map(raw, name)
    category, event_class, event_type = data.get("category"), data.get("event_class"), data.get("event_type")
    if not isinstance(category, str) or category not in CATEGORIES:
        raise WireError(f"{name}.category is not one of {', '.join(sorted(CATEGORIES))}")
    if not isinstance(event_class, str) or event_class not in EVENT_CLASSES:
        raise WireError(f"{name}.event_class is not one of {', '.join(sorted(EVENT_CLASSES))}")
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise WireError(f"{name}.event_type must be 1-48 characters of [a-z0-9_]")
    first_at = _int(data.get("first_at"), f"{name}.first_at", 0, MAX_EPOCH_SECONDS)
    last_at = _int(data.get("last_at"), f"{name}.last_at", first_at, MAX_EPOCH_SECONDS)
    detail: dict[str, Any] = {}
    for key, bound in _DETAIL_TEXT.items():
        if key in data:
            detail[key] = _text(data[key], f"{name}.{key}", bound)
    for key in _DETAIL_INT:
        if key in data:
            detail[key] = _int(data[key], f"{name}.{key}", -(2**31), 2**40)
    if "frames" in data:
        frames = []
        for index, frame in enumerate(_list(data["frames"], f"{name}.frames", MAX_FRAMES)):
            f = _map(frame, f"{name}.frames[{index}]")
            frames.append(
                {
                    "file": _text(f.get("file"), f"{name}.frames[{index}].file", MAX_FRAME_TEXT),
                    "function": _text(f.get("function"), f"{name}.frames[{index}].function", MAX_FRAME_TEXT),
                    "line": _int(f.get("line", 0), f"{name}.frames[{index}].line", 0, 2**31),
                }
            )
        detail["frames"] = frames
    return Record(
        category=category,
        event_class=event_class,
        event_type=event_type,
        component_id=_text(data.get("component_id"), f"{name}.component_id", 64),
        version=_text(data.get("version"), f"{name}.version", 64),
        count=_int(data.get("count"), f"{name}.count", 1, max_count),
        first_at=first_at,
        last_at=last_at,
        description=_text(data.get("description", ""), f"{name}.description", 256),
        detail=detail,
    )


def decode(payload: bytes, *, max_records: int, max_installed: int, max_count: int) -> Batch:
    """Decode a batch payload (deterministic CBOR map, ``v`` = 1).

    Raises:
        WireError: not CBOR, or a field is missing, of the wrong type, or over its bound.
    """
    try:
        data = _map(cbor_loads_exact(payload), "the payload")
    except MalformedInput as exc:
        raise WireError("the payload is not well-formed CBOR") from exc
    if data.get("v") != 1 or isinstance(data.get("v"), bool):
        raise WireError("v must be 1")
    device_id, batch_id = data.get("device_id"), data.get("batch_id")
    if not isinstance(device_id, str) or not _HEX64.fullmatch(device_id):
        raise WireError("device_id must be 64 lowercase hex characters")
    if not isinstance(batch_id, str) or not _HEX32.fullmatch(batch_id):
        raise WireError("batch_id must be 32 lowercase hex characters")
    slot = data.get("boot_slot")
    if slot not in ("a", "b"):
        raise WireError("boot_slot must be 'a' or 'b'")
    group_id = data.get("group_id")
    if group_id is not None:
        group_id = _text(group_id, "group_id", 64)
    installed = []
    for index, raw in enumerate(_list(data.get("installed"), "installed", max_installed)):
        item = _map(raw, f"installed[{index}]")
        installed.append(
            Installed(
                component_id=_text(item.get("component_id"), f"installed[{index}].component_id", 64),
                version=_text(item.get("version"), f"installed[{index}].version", 64),
            )
        )
    records = tuple(
        _record(raw, f"records[{index}]", max_count)
        for index, raw in enumerate(_list(data.get("records"), "records", max_records))
    )
    return Batch(
        device_id=device_id,
        batch_id=batch_id,
        iat=_int(data.get("iat"), "iat", 0, MAX_EPOCH_SECONDS),
        os_version=_text(data.get("os_version"), "os_version", 64),
        boot_slot=str(slot),
        group_id=group_id,
        installed=tuple(installed),
        dropped=_int(data.get("dropped"), "dropped", 0, max_count),
        records=records,
    )
