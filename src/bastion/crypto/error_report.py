"""Error-report batches and device log uploads: the payload codec (docs/error-reports.md).

A device sends its coalesced failure records to ``POST /api/v1/device/error-reports``
and an app's log tail to ``POST /api/v1/device/logs``. Both bodies are a COSE_Sign1
(ES256) by the device key that attestation certified, ``x5chain`` = [device
certificate]; this module is the payload inside: a deterministic CBOR map (RFC 8949
section 4.2.1). The signature is not checked here (the service does it, as for
status reports); this module is pure and does no I/O.

Batch payload (``v`` 1)::

    {"v": 1, "device_id": 64 hex, "batch_id": 32 hex, "iat": uint,
     "os_version": tstr, "boot_slot": "a"|"b", "group_id": tstr|null,
     "installed": [{"component_id", "version"}] (<= 64), "dropped": uint,
     "records": [RECORD] (<= 128)}

    RECORD = {"category", "event_class", "event_type", "component_id", "version",
              "count" >= 1, "first_at", "last_at" >= first_at, "description",
              ? "exit_code", ? "signal", ? "uptime_s", ? "exception",
              ? "frames": [{"file", "function", "line"}] (<= 32, innermost last),
              ? "stderr_tail", ? "capability", ? "reason"}

Log payload (``v`` 1)::

    {"v": 1, "device_id", "request_id", "component_id", "iat", "text", "truncated": bool}

Decoding is strict and bounded: unknown or missing keys, wrong types, values out
of their bounds, text holding NUL, and a non-deterministic encoding (duplicate
keys, non-minimal lengths, tags) are :class:`~bastion.crypto.errors.MalformedInput`.
Optional keys are absent, never ``null``. Encoding checks the same rules, so a
payload this module writes always decodes.

Example:
    >>> record = ErrorRecord(category="AppExit", event_class="Warning", event_type="exit_code",
    ...     component_id="app", version="1.0.0", count=2, first_at=10, last_at=20,
    ...     description="exited with code 3", exit_code=3)
    >>> batch = ErrorBatch(device_id="ab" * 32, batch_id="cd" * 16, iat=30, os_version="1.0.0",
    ...     boot_slot="a", group_id=None, records=(record,))
    >>> decode_batch(encode_batch(batch)) == batch
    True
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2

from bastion.crypto.cose import cbor_loads_exact
from bastion.crypto.errors import MalformedInput

__all__ = [
    "CATEGORIES",
    "EVENT_CLASSES",
    "FORMAT_VERSION",
    "MAX_BATCH_BYTES",
    "MAX_CAPABILITY_CHARS",
    "MAX_COUNT",
    "MAX_DESCRIPTION_CHARS",
    "MAX_EVENT_TYPE_CHARS",
    "MAX_EXCEPTION_CHARS",
    "MAX_FRAMES",
    "MAX_FRAME_TEXT_CHARS",
    "MAX_ID_CHARS",
    "MAX_INSTALLED",
    "MAX_LOG_PAYLOAD_BYTES",
    "MAX_LOG_TEXT_BYTES",
    "MAX_REASON_CHARS",
    "MAX_RECORDS",
    "MAX_STDERR_TAIL_CHARS",
    "MAX_TIME",
    "RECORD_KEYS",
    "RECORD_OPTIONAL_KEYS",
    "ErrorBatch",
    "ErrorRecord",
    "Frame",
    "LogUpload",
    "bounded_text",
    "decode_batch",
    "decode_batch_map",
    "decode_log",
    "encode_batch",
    "encode_log",
    "record_from_map",
    "record_to_map",
]

#: The payload format this module reads and writes (key ``v``).
FORMAT_VERSION = 1
#: Bound on a whole batch body (COSE_Sign1 included), and so on its payload.
MAX_BATCH_BYTES = 64 * 1024
#: Bound on the records of one batch (0 records: the check-in heartbeat).
MAX_RECORDS = 128
#: Bound on the installed components a batch lists.
MAX_INSTALLED = 64
#: Bound on component IDs, versions, the OS version, the group ID and the log request ID.
MAX_ID_CHARS = 64
#: Bound on ``event_type`` (also limited to ``[a-z0-9_]``).
MAX_EVENT_TYPE_CHARS = 48
#: Bound on a record's description.
MAX_DESCRIPTION_CHARS = 256
#: Bound on the exception type name of a Python crash.
MAX_EXCEPTION_CHARS = 128
#: Bound on the frames of one traceback (the innermost are kept).
MAX_FRAMES = 32
#: Bound on a frame's file and function.
MAX_FRAME_TEXT_CHARS = 128
#: Bound on the stderr tail of a record.
MAX_STDERR_TAIL_CHARS = 2048
#: Bound on the capability of a denial.
MAX_CAPABILITY_CHARS = 64
#: Bound on a free-form reason (attestation failure, boot reason, ...).
MAX_REASON_CHARS = 128
#: Largest count of one coalesced record.
MAX_COUNT = 2**32 - 1
#: Largest time (epoch seconds) and uptime accepted; also bounds ``dropped``.
MAX_TIME = 2**37
#: Bound on a line number and on the magnitude of an exit code.
MAX_LINE = 2**31 - 1
MAX_EXIT_CODE = 2**31 - 1
#: Largest signal number.
MAX_SIGNAL = 255
#: Bound on the text of one log upload (UTF-8 bytes).
MAX_LOG_TEXT_BYTES = 16 * 1024
#: Bound on a log upload payload.
MAX_LOG_PAYLOAD_BYTES = MAX_LOG_TEXT_BYTES + 1024

CATEGORIES = frozenset({"AppCrash", "AppExit", "Watchdog", "Security", "OS", "Update", "Attestation", "Certificate"})
EVENT_CLASSES = frozenset({"Error", "Warning", "Info"})
BOOT_SLOTS = frozenset({"a", "b"})

_DEVICE_ID_RE = re.compile(r"[0-9a-f]{64}")
_BATCH_ID_RE = re.compile(r"[0-9a-f]{32}")
_EVENT_TYPE_RE = re.compile(r"[a-z0-9_]{1,%d}" % MAX_EVENT_TYPE_CHARS)  # noqa: UP031 - a regex quantifier
_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,%d}" % MAX_ID_CHARS)  # noqa: UP031 - a regex quantifier

_BATCH_KEYS = frozenset(
    {"v", "device_id", "batch_id", "iat", "os_version", "boot_slot", "group_id", "installed", "dropped", "records"}
)
#: The keys every record has, and the optional ones (present, never ``null``, or absent).
RECORD_KEYS = frozenset(
    {"category", "event_class", "event_type", "component_id", "version", "count", "first_at", "last_at", "description"}
)
RECORD_OPTIONAL_KEYS = frozenset(
    {"exit_code", "signal", "uptime_s", "exception", "frames", "stderr_tail", "capability", "reason"}
)
_FRAME_KEYS = frozenset({"file", "function", "line"})
_INSTALLED_KEYS = frozenset({"component_id", "version"})
_LOG_KEYS = frozenset({"v", "device_id", "request_id", "component_id", "iat", "text", "truncated"})


def bounded_text(value: str, limit: int, *, keep: str = "head") -> str:
    """``value`` made fit for a payload: NUL and unencodable characters replaced, cut to ``limit`` characters.

    Device code passes every free text (descriptions, stderr, reasons) through
    this before it builds a record, so the codec's checks never refuse it.

    Args:
        value: any text.
        limit: the bound of the field.
        keep: ``"head"`` keeps the start, ``"tail"`` the end (stderr tails).
    """
    text = value.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    if len(text) <= limit:
        return text
    return text[:limit] if keep == "head" else text[len(text) - limit :]


@dataclass(frozen=True)
class Frame:
    """One traceback frame: app-relative file, function and line."""

    file: str
    function: str
    line: int


@dataclass(frozen=True)
class ErrorRecord:
    """One coalesced failure record: the same event ``count`` times between ``first_at`` and ``last_at``."""

    category: str
    event_class: str
    event_type: str
    component_id: str
    version: str
    count: int
    first_at: int
    last_at: int
    description: str
    exit_code: int | None = None
    signal: int | None = None
    uptime_s: int | None = None
    exception: str | None = None
    frames: tuple[Frame, ...] | None = None
    stderr_tail: str | None = None
    capability: str | None = None
    reason: str | None = None


@dataclass(frozen=True)
class ErrorBatch:
    """A sealed batch of records, acknowledged by the service by ``batch_id``."""

    device_id: str
    batch_id: str
    iat: int
    os_version: str
    boot_slot: str
    group_id: str | None
    installed: tuple[tuple[str, str], ...] = ()
    dropped: int = 0
    records: tuple[ErrorRecord, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class LogUpload:
    """An app's bounded log tail, sent in answer to an operator's log request."""

    device_id: str
    request_id: str
    component_id: str
    iat: int
    text: str
    truncated: bool


# -- checks --------------------------------------------------------------------------------------


def _text(value: Any, what: str, limit: int, *, min_len: int = 0) -> str:
    if not isinstance(value, str) or not min_len <= len(value) <= limit:
        raise MalformedInput(f"{what} must be a text string of {min_len}..{limit} characters")
    if "\x00" in value:
        raise MalformedInput(f"{what} must not contain NUL")
    return value


def _match(value: Any, what: str, pattern: re.Pattern[str]) -> str:
    if not isinstance(value, str) or pattern.fullmatch(value) is None:
        raise MalformedInput(f"{what} is not in its format")
    return value


def _int(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise MalformedInput(f"{what} must be an integer in {low}..{high}")
    return value


def _map(value: Any, what: str, required: frozenset[str], allowed: frozenset[str]) -> dict[str, Any]:
    """``value`` if it is a map with every ``required`` key and no key outside ``allowed``."""
    if not isinstance(value, dict):
        raise MalformedInput(f"{what} is not a map")
    keys = value.keys()
    if not keys >= required:
        raise MalformedInput(f"{what} lacks {sorted(required - keys)}")
    if not keys <= allowed:
        raise MalformedInput(f"{what} has unknown keys")
    return value


def _array(value: Any, what: str, limit: int) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise MalformedInput(f"{what} must be an array of at most {limit} items")
    return value


def _check_frame(value: Any) -> None:
    item = _map(value, "a frame", _FRAME_KEYS, _FRAME_KEYS)
    _text(item["file"], "frame file", MAX_FRAME_TEXT_CHARS)
    _text(item["function"], "frame function", MAX_FRAME_TEXT_CHARS)
    _int(item["line"], "frame line", 0, MAX_LINE)


def _check_frames(value: Any) -> None:
    for frame in _array(value, "frames", MAX_FRAMES):
        _check_frame(frame)


_OPTIONAL_CHECKS: dict[str, Callable[[Any], object]] = {
    "exit_code": lambda v: _int(v, "exit_code", -MAX_EXIT_CODE, MAX_EXIT_CODE),
    "signal": lambda v: _int(v, "signal", 1, MAX_SIGNAL),
    "uptime_s": lambda v: _int(v, "uptime_s", 0, MAX_TIME),
    "exception": lambda v: _text(v, "exception", MAX_EXCEPTION_CHARS, min_len=1),
    "frames": _check_frames,
    "stderr_tail": lambda v: _text(v, "stderr_tail", MAX_STDERR_TAIL_CHARS),
    "capability": lambda v: _text(v, "capability", MAX_CAPABILITY_CHARS, min_len=1),
    "reason": lambda v: _text(v, "reason", MAX_REASON_CHARS),
}
_RECORD_ALLOWED = RECORD_KEYS | RECORD_OPTIONAL_KEYS


def _check_record(value: Any) -> dict[str, Any]:
    """``value`` if it is a record map within the contract (its frames too); see the module docstring."""
    item = _map(value, "a record", RECORD_KEYS, _RECORD_ALLOWED)
    category, event_class = item["category"], item["event_class"]
    if not isinstance(category, str) or category not in CATEGORIES:
        raise MalformedInput("record category is not one of the known categories")
    if not isinstance(event_class, str) or event_class not in EVENT_CLASSES:
        raise MalformedInput("record event_class is not Error, Warning or Info")
    first_at = _int(item["first_at"], "first_at", 0, MAX_TIME)
    if _int(item["last_at"], "last_at", 0, MAX_TIME) < first_at:
        raise MalformedInput("record last_at is before first_at")
    _match(item["event_type"], "event_type", _EVENT_TYPE_RE)
    _text(item["component_id"], "component_id", MAX_ID_CHARS)
    _text(item["version"], "version", MAX_ID_CHARS)
    _int(item["count"], "count", 1, MAX_COUNT)
    _text(item["description"], "description", MAX_DESCRIPTION_CHARS)
    if len(item) > len(RECORD_KEYS):  # optional keys are present
        for key in item.keys() & RECORD_OPTIONAL_KEYS:
            _OPTIONAL_CHECKS[key](item[key])
    return item


def _record(value: Any) -> ErrorRecord:
    return _checked_record(_check_record(value))


def _checked_record(item: dict[str, Any]) -> ErrorRecord:
    frames = item.get("frames")
    fields = {key: item[key] for key in item if key != "frames"}
    if frames is not None:
        fields["frames"] = tuple(Frame(file=f["file"], function=f["function"], line=f["line"]) for f in frames)
    return ErrorRecord(**fields)


def _installed(value: Any) -> tuple[str, str]:
    item = _map(value, "an installed entry", _INSTALLED_KEYS, _INSTALLED_KEYS)
    return (
        _text(item["component_id"], "installed component_id", MAX_ID_CHARS, min_len=1),
        _text(item["version"], "installed version", MAX_ID_CHARS, min_len=1),
    )


def _version(value: Any) -> None:
    if type(value) is not int or value != FORMAT_VERSION:
        raise MalformedInput(f"unsupported payload version (this decoder reads v{FORMAT_VERSION})")


def _check_batch(value: Any) -> dict[str, Any]:
    """``value`` if it is a batch map within the contract (its records and installed list too)."""
    item = _map(value, "the batch", _BATCH_KEYS, _BATCH_KEYS)
    _version(item["v"])
    boot_slot, group_id = item["boot_slot"], item["group_id"]
    if not isinstance(boot_slot, str) or boot_slot not in BOOT_SLOTS:
        raise MalformedInput('boot_slot must be "a" or "b"')
    _match(item["device_id"], "device_id", _DEVICE_ID_RE)
    _match(item["batch_id"], "batch_id", _BATCH_ID_RE)
    _int(item["iat"], "iat", 0, MAX_TIME)
    _text(item["os_version"], "os_version", MAX_ID_CHARS, min_len=1)
    if group_id is not None:
        _text(group_id, "group_id", MAX_ID_CHARS, min_len=1)
    for entry in _array(item["installed"], "installed", MAX_INSTALLED):
        _installed(entry)
    _int(item["dropped"], "dropped", 0, MAX_TIME)
    for record in _array(item["records"], "records", MAX_RECORDS):
        _check_record(record)
    return item


def _batch(value: Any) -> ErrorBatch:
    return _checked_batch(_check_batch(value))


def _checked_batch(item: dict[str, Any]) -> ErrorBatch:
    return ErrorBatch(
        device_id=item["device_id"],
        batch_id=item["batch_id"],
        iat=item["iat"],
        os_version=item["os_version"],
        boot_slot=item["boot_slot"],
        group_id=item["group_id"],
        installed=tuple((i["component_id"], i["version"]) for i in item["installed"]),
        dropped=item["dropped"],
        records=tuple(_checked_record(r) for r in item["records"]),
    )


def _log(value: Any) -> LogUpload:
    item = _map(value, "the log upload", _LOG_KEYS, _LOG_KEYS)
    _version(item["v"])
    text, truncated = item["text"], item["truncated"]
    if not isinstance(text, str) or len(text) > MAX_LOG_TEXT_BYTES or len(text.encode()) > MAX_LOG_TEXT_BYTES:
        raise MalformedInput(f"text must be a text string of at most {MAX_LOG_TEXT_BYTES} UTF-8 bytes")
    if "\x00" in text:
        raise MalformedInput("text must not contain NUL")
    if not isinstance(truncated, bool):
        raise MalformedInput("truncated must be a boolean")
    return LogUpload(
        device_id=_match(item["device_id"], "device_id", _DEVICE_ID_RE),
        request_id=_match(item["request_id"], "request_id", _REQUEST_ID_RE),
        component_id=_text(item["component_id"], "component_id", MAX_ID_CHARS, min_len=1),
        iat=_int(item["iat"], "iat", 0, MAX_TIME),
        text=text,
        truncated=truncated,
    )


# -- maps ----------------------------------------------------------------------------------------


def _record_map(record: ErrorRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "category": record.category,
        "event_class": record.event_class,
        "event_type": record.event_type,
        "component_id": record.component_id,
        "version": record.version,
        "count": record.count,
        "first_at": record.first_at,
        "last_at": record.last_at,
        "description": record.description,
    }
    for key in sorted(RECORD_OPTIONAL_KEYS):
        value = getattr(record, key)
        if value is None:
            continue
        if key == "frames":
            value = [{"file": f.file, "function": f.function, "line": f.line} for f in value]
        out[key] = value
    return out


def _batch_map(batch: ErrorBatch) -> dict[str, Any]:
    return {
        "v": FORMAT_VERSION,
        "device_id": batch.device_id,
        "batch_id": batch.batch_id,
        "iat": batch.iat,
        "os_version": batch.os_version,
        "boot_slot": batch.boot_slot,
        "group_id": batch.group_id,
        "installed": [{"component_id": c, "version": v} for c, v in batch.installed],
        "dropped": batch.dropped,
        "records": [_record_map(r) for r in batch.records],
    }


def _log_map(upload: LogUpload) -> dict[str, Any]:
    return {
        "v": FORMAT_VERSION,
        "device_id": upload.device_id,
        "request_id": upload.request_id,
        "component_id": upload.component_id,
        "iat": upload.iat,
        "text": upload.text,
        "truncated": upload.truncated,
    }


def _dumps(value: Mapping[str, Any], *, canonical: bool = True) -> bytes:
    try:
        return cbor2.dumps(value, canonical=canonical)
    except (cbor2.CBOREncodeError, ValueError, TypeError) as exc:  # e.g. a lone surrogate in a text
        raise MalformedInput("the payload cannot be encoded as CBOR") from exc


def _loads(payload: bytes, limit: int, what: str) -> Any:
    if len(payload) > limit:
        raise MalformedInput(f"the {what} payload is larger than {limit} bytes")
    return cbor_loads_exact(payload)


#: Key orders seen to be deterministic (RFC 8949 section 4.2.1), one per set of keys: only
#: orders that pass are kept, and only of maps whose keys were checked, so it stays small.
_CANONICAL_ORDERS: set[tuple[Any, ...]] = set()
_MAX_CANONICAL_ORDERS = 4096


def _in_canonical_order(keys: tuple[Any, ...]) -> bool:
    if keys in _CANONICAL_ORDERS:
        return True
    template = dict.fromkeys(keys, 0)
    ok = cbor2.dumps(template, canonical=True) == cbor2.dumps(template)
    if ok and len(_CANONICAL_ORDERS) < _MAX_CANONICAL_ORDERS:
        _CANONICAL_ORDERS.add(keys)
    return ok


def _maps_in_canonical_order(value: Any) -> bool:
    """Every map in ``value`` (a checked batch or log payload) has its keys in deterministic order.

    Walks the maps where the contract has them, not every value (this runs for every batch).
    """
    ordered = _in_canonical_order
    if not ordered(tuple(value)):
        return False
    for record in value.get("records", ()):
        if not ordered(tuple(record)):
            return False
        for frame in record.get("frames", ()):
            if not ordered(tuple(frame)):
                return False
    return all(ordered(tuple(entry)) for entry in value.get("installed", ()))


def _deterministic(value: Any, payload: bytes, what: str) -> None:
    # RFC 8949 section 4.2: one meaning per payload. The decoded value encoded again, each map
    # in the order it was read, differs from the payload when it has duplicate keys, non-minimal
    # or indefinite lengths, or tags; then the maps' key orders are checked. (Floats, whose
    # shortest form only the canonical encoder would write, are refused by the field checks.)
    if _dumps(value, canonical=False) != payload or not _maps_in_canonical_order(value):
        raise MalformedInput(f"the {what} payload is not in deterministic CBOR encoding")


# -- public --------------------------------------------------------------------------------------


def encode_batch(batch: ErrorBatch) -> bytes:
    """The batch payload (deterministic CBOR).

    Raises:
        MalformedInput: a field breaks the rules :func:`decode_batch` enforces
            (use :func:`bounded_text` on free text), or the payload exceeds
            :data:`MAX_BATCH_BYTES`.
    """
    value = _batch_map(batch)
    payload = _dumps(value)
    _batch(value)
    if len(payload) > MAX_BATCH_BYTES:
        raise MalformedInput(f"the batch payload is larger than {MAX_BATCH_BYTES} bytes")
    return payload


def decode_batch(payload: bytes) -> ErrorBatch:
    """Decode and check a batch payload (after the COSE signature was verified).

    Raises:
        MalformedInput: too large, not CBOR, not deterministic, or a field out of its rules.
    """
    return _checked_batch(decode_batch_map(payload))


def decode_batch_map(payload: bytes) -> dict[str, Any]:
    """:func:`decode_batch`, but the checked map as decoded: records, frames and installed entries are maps.

    For a reader that builds its own objects (the service): the checks are the same,
    and no dataclass is built. Keys of the wire contract that are absent stay absent.

    Raises:
        MalformedInput: too large, not CBOR, not deterministic, or a field out of its rules.
    """
    value = _loads(payload, MAX_BATCH_BYTES, "batch")
    item = _check_batch(value)
    _deterministic(value, payload, "batch")
    return item


def encode_log(upload: LogUpload) -> bytes:
    """The log upload payload (deterministic CBOR).

    Raises:
        MalformedInput: a field breaks the rules :func:`decode_log` enforces.
    """
    value = _log_map(upload)
    payload = _dumps(value)
    _log(value)
    if len(payload) > MAX_LOG_PAYLOAD_BYTES:
        raise MalformedInput(f"the log payload is larger than {MAX_LOG_PAYLOAD_BYTES} bytes")
    return payload


def decode_log(payload: bytes) -> LogUpload:
    """Decode and check a log upload payload (after the COSE signature was verified).

    Raises:
        MalformedInput: too large, not CBOR, not deterministic, or a field out of its rules.
    """
    value = _loads(payload, MAX_LOG_PAYLOAD_BYTES, "log")
    upload = _log(value)
    _deterministic(value, payload, "log")
    return upload


def record_to_map(record: ErrorRecord) -> dict[str, Any]:
    """A record as its wire map (also the device queue's file form); checked as :func:`encode_batch` checks it.

    Raises:
        MalformedInput: the record is outside the wire contract's bounds.
    """
    value = _record_map(record)
    _record(value)
    return value


def record_from_map(value: Any) -> ErrorRecord:
    """A record read back from its wire map (a JSON or CBOR value); strict, as in :func:`decode_batch`.

    Raises:
        MalformedInput: not a record in the contract's bounds.
    """
    return _record(value)
