"""The payload of a device status report: parsed strictly and bounded (pure, no I/O).

docs/updates.md "Service fleet slice"::

    {"device_id": tstr, "iat": int, "os_version": tstr, "boot_slot": tstr, "group_id": tstr / null,
     "installed": [{"component_id": tstr, "version": tstr, ? "sandbox": tstr}],
     "events": [{"at": int, "kind": tstr, "component_id": tstr, "version": tstr, "detail": tstr}]}

Unknown keys are ignored (a newer device may say more); known keys must have
the right types and sizes. Control characters in strings are replaced by ``?``.

Example:
    >>> import cbor2
    >>> r = parse_report(cbor2.dumps({"device_id": "ab" * 32, "iat": 1, "os_version": "1.0.0",
    ...     "boot_slot": "A", "installed": [], "events": []}), max_events=64, max_installed=64,
    ...     max_detail_chars=500)
    >>> r.os_version
    '1.0.0'
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bastion.crypto.cose import cbor_loads_exact
from bastion.crypto.errors import MalformedInput

__all__ = ["EVENT_KINDS", "InstalledItem", "ReportError", "StatusEvent", "StatusReport", "parse_report"]

#: The event kinds a device may report (docs/updates.md).
EVENT_KINDS = frozenset(
    {
        "app_installed",
        "app_started",
        "app_failed",
        "os_staged",
        "os_installed",
        "os_confirmed",
        "os_rolled_back",
        "update_refused",
        "update_failed",
        "update_deferred",
        "app_denied",
        "sandbox_violation",
        "app_watchdog",
        "os_crashed",
        "sandbox_unavailable",
        "app_sideloaded",
        "sideload_refused",
        "app_power",
        "clock_set",
        "development_enabled",
        "development_disabled",
        "local_op_refused",
        "os_trial_interrupted",
        "os_blocklist_cleared",
    }
)
#: Bounds on the string fields.
MAX_VERSION_CHARS = 64
MAX_COMPONENT_CHARS = 64
MAX_SLOT_CHARS = 8
#: Bound on an app's sandbox-layers line (the device sends at most 160 characters).
MAX_SANDBOX_CHARS = 256
MAX_DETAIL_INPUT_CHARS = 4096
#: Times are seconds since the epoch; this bound keeps them representable.
MAX_EPOCH_SECONDS = 2**37
_DEVICE_ID = re.compile(r"[0-9a-f]{64}")


class ReportError(ValueError):
    """The payload is not a well-formed status report; the message says which field."""


@dataclass(frozen=True)
class InstalledItem:
    """An installed image as the device reports it.

    Attributes:
        component_id: the image's component ID.
        version: its version.
        sandbox: for an app, one line naming the sandbox layers it runs under (empty if not given).
    """

    component_id: str
    version: str
    sandbox: str = ""


@dataclass(frozen=True)
class StatusEvent:
    """One update event."""

    at: int
    kind: str
    component_id: str
    version: str
    detail: str


@dataclass(frozen=True)
class StatusReport:
    """A parsed (not yet authenticated against the database) status report."""

    device_id: str
    iat: int
    os_version: str
    boot_slot: str
    group_id: str | None
    installed: tuple[InstalledItem, ...]
    events: tuple[StatusEvent, ...]


def _text(value: Any, name: str, max_chars: int, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str) or len(value) > max_chars or (not allow_empty and not value):
        raise ReportError(f"{name} must be a string of at most {max_chars} characters")
    # Control characters are replaced, not refused: a refused report keeps its events
    # queued on the device, so one odd byte must not block every later report.
    return value if value.isprintable() else "".join(c if c.isprintable() else "?" for c in value)


def _time(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EPOCH_SECONDS:
        raise ReportError(f"{name} must be a non-negative integer number of seconds since the epoch")
    return value


def _list(value: Any, name: str, bound: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > bound:
        raise ReportError(f"{name} must be a list of at most {bound} items")
    return value


def _map(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"{name} must be a map")
    return value


def parse_report(payload: bytes, *, max_events: int, max_installed: int, max_detail_chars: int) -> StatusReport:
    """Parse a report payload (CBOR map).

    Raises:
        ReportError: not CBOR, or a field is missing, of the wrong type, or over its bound.
    """
    try:
        data = _map(cbor_loads_exact(payload), "the payload")
    except MalformedInput as exc:
        raise ReportError("the payload is not well-formed CBOR") from exc
    for key in ("device_id", "iat", "os_version", "boot_slot", "installed", "events"):
        if key not in data:
            raise ReportError(f"the payload has no {key!r}")
    device_id = data["device_id"]
    if not isinstance(device_id, str) or not _DEVICE_ID.fullmatch(device_id):
        raise ReportError("device_id must be 64 lowercase hex characters")
    group_id = data.get("group_id")
    if group_id is not None:
        group_id = _text(group_id, "group_id", MAX_COMPONENT_CHARS)
    installed = []
    for index, raw in enumerate(_list(data["installed"], "installed", max_installed)):
        item = _map(raw, f"installed[{index}]")
        installed.append(
            InstalledItem(
                component_id=_text(item.get("component_id"), f"installed[{index}].component_id", MAX_COMPONENT_CHARS),
                version=_text(item.get("version"), f"installed[{index}].version", MAX_VERSION_CHARS),
                sandbox=_text(item.get("sandbox", ""), f"installed[{index}].sandbox", MAX_SANDBOX_CHARS),
            )
        )
    events = []
    for index, raw in enumerate(_list(data["events"], "events", max_events)):
        event = _map(raw, f"events[{index}]")
        kind = event.get("kind")
        # A CBOR array or map is unhashable: test the type before the set membership.
        if not isinstance(kind, str) or kind not in EVENT_KINDS:
            raise ReportError(f"events[{index}].kind is not one of {', '.join(sorted(EVENT_KINDS))}")
        detail = _text(event.get("detail", ""), f"events[{index}].detail", MAX_DETAIL_INPUT_CHARS)
        events.append(
            StatusEvent(
                at=_time(event.get("at"), f"events[{index}].at"),
                kind=str(kind),
                component_id=_text(event.get("component_id", ""), f"events[{index}].component_id", MAX_COMPONENT_CHARS),
                version=_text(event.get("version", ""), f"events[{index}].version", MAX_VERSION_CHARS),
                detail=detail[:max_detail_chars],
            )
        )
    return StatusReport(
        device_id=device_id,
        iat=_time(data["iat"], "iat"),
        os_version=_text(data["os_version"], "os_version", MAX_VERSION_CHARS),
        boot_slot=_text(data["boot_slot"], "boot_slot", MAX_SLOT_CHARS),
        group_id=group_id,
        installed=tuple(installed),
        events=tuple(events),
    )
