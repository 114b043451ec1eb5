"""The error-report batch as the service reads it (docs/error-reports.md, the brief's wire contract).

The codec (:mod:`bastion.crypto.error_report`, shared with the device) decodes
and bounds the payload; this module turns its ``ErrorBatch`` into the shape the
slice stores (optional record fields in one ``detail`` map) and applies the
service's own bounds. Everything else of the slice uses only this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.crypto.error_report import ErrorRecord, decode_batch
from bastion.crypto.errors import MalformedInput

__all__ = ["CATEGORIES", "EVENT_CLASSES", "Batch", "Installed", "Record", "WireError", "decode"]

CATEGORIES = frozenset({"AppCrash", "AppExit", "Watchdog", "Security", "OS", "Update", "Attestation", "Certificate"})
EVENT_CLASSES = frozenset({"Error", "Warning", "Info"})


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


def _from_codec(rec: ErrorRecord) -> Record:
    # Attribute by attribute, not a getattr loop: this runs for every record of every batch.
    detail: dict[str, Any] = {}
    if rec.exception is not None:
        detail["exception"] = rec.exception
    if rec.stderr_tail is not None:
        detail["stderr_tail"] = rec.stderr_tail
    if rec.capability is not None:
        detail["capability"] = rec.capability
    if rec.reason is not None:
        detail["reason"] = rec.reason
    if rec.exit_code is not None:
        detail["exit_code"] = rec.exit_code
    if rec.signal is not None:
        detail["signal"] = rec.signal
    if rec.uptime_s is not None:
        detail["uptime_s"] = rec.uptime_s
    if rec.frames is not None:
        detail["frames"] = [{"file": f.file, "function": f.function, "line": f.line} for f in rec.frames]
    return Record(
        category=rec.category,
        event_class=rec.event_class,
        event_type=rec.event_type,
        component_id=rec.component_id,
        version=rec.version,
        count=rec.count,
        first_at=rec.first_at,
        last_at=rec.last_at,
        description=rec.description,
        detail=detail,
    )


def decode(payload: bytes, *, max_records: int, max_installed: int, max_count: int) -> Batch:
    """Decode a batch payload with the wire codec (:func:`bastion.crypto.error_report.decode_batch`).

    The service's own bounds (records, installed, counts) apply on top of the codec's.

    Raises:
        WireError: the codec refuses it, or it is over one of the service's bounds.
    """
    try:
        batch = decode_batch(payload)
    except MalformedInput as exc:
        raise WireError(str(exc)[:200] or "not a well-formed batch") from exc
    if len(batch.records) > max_records or len(batch.installed) > max_installed:
        raise WireError(f"a batch holds at most {max_records} records and {max_installed} installed components")
    if batch.dropped > max_count or any(r.count > max_count for r in batch.records):
        raise WireError(f"counts must be at most {max_count}")
    return Batch(
        device_id=batch.device_id,
        batch_id=batch.batch_id,
        iat=batch.iat,
        os_version=batch.os_version,
        boot_slot=batch.boot_slot,
        group_id=batch.group_id,
        installed=tuple(Installed(component_id=c, version=v) for c, v in batch.installed),
        dropped=batch.dropped,
        records=tuple(_from_codec(r) for r in batch.records),
    )
