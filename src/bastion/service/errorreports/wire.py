"""The error-report batch as the service reads it (docs/error-reports.md, the brief's wire contract).

The codec (:mod:`bastion.crypto.error_report`, shared with the device) decodes
and bounds the payload; this module turns its checked map into the shape the
slice stores (optional record fields in one ``detail`` map) and applies the
service's own bounds. Everything else of the slice uses only this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.crypto.error_report import CATEGORIES, EVENT_CLASSES, RECORD_KEYS, RECORD_OPTIONAL_KEYS, decode_batch_map
from bastion.crypto.errors import MalformedInput

__all__ = ["CATEGORIES", "EVENT_CLASSES", "Batch", "Installed", "Record", "WireError", "decode"]


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


#: The record keys that are not Record fields (the codec's optional ones): ``detail``, when present.
_DETAIL_KEYS = tuple(sorted(RECORD_OPTIONAL_KEYS))


def _record(item: dict[str, Any]) -> Record:
    # From the codec's checked map: its frames are maps of file, function and line already.
    detail = {key: item[key] for key in _DETAIL_KEYS if key in item} if len(item) > len(RECORD_KEYS) else {}
    return Record(
        category=item["category"],
        event_class=item["event_class"],
        event_type=item["event_type"],
        component_id=item["component_id"],
        version=item["version"],
        count=item["count"],
        first_at=item["first_at"],
        last_at=item["last_at"],
        description=item["description"],
        detail=detail,
    )


def decode(payload: bytes, *, max_records: int, max_installed: int, max_count: int) -> Batch:
    """Decode a batch payload with the wire codec (:func:`bastion.crypto.error_report.decode_batch`).

    The service's own bounds (records, installed, counts) apply on top of the codec's.

    Raises:
        WireError: the codec refuses it, or it is over one of the service's bounds.
    """
    try:
        item = decode_batch_map(payload)
    except MalformedInput as exc:
        raise WireError(str(exc)[:200] or "not a well-formed batch") from exc
    records, installed = item["records"], item["installed"]
    if len(records) > max_records or len(installed) > max_installed:
        raise WireError(f"a batch holds at most {max_records} records and {max_installed} installed components")
    if item["dropped"] > max_count or any(r["count"] > max_count for r in records):
        raise WireError(f"counts must be at most {max_count}")
    return Batch(
        device_id=item["device_id"],
        batch_id=item["batch_id"],
        iat=item["iat"],
        os_version=item["os_version"],
        boot_slot=item["boot_slot"],
        group_id=item["group_id"],
        installed=tuple(Installed(component_id=i["component_id"], version=i["version"]) for i in installed),
        dropped=item["dropped"],
        records=tuple(_record(r) for r in records),
    )
