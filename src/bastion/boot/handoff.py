"""The pipes between the ROM (in the supervisor) and the bootloader stage process.

The ROM writes one deterministic CBOR map to the stage's input pipe and closes
it (never argv or the environment: it carries ``CDI_BL`` and the DeviceID key);
bound :data:`MAX_STAGE_INPUT_BYTES`::

    {"v": 1, "dev_dir": tstr, "now": tstr (ISO 8601, with offset),
     "fuses": {...fuses.json form...}, "config": bstr (boot-config.json),
     "measurement": bstr .size 32, "cdi": bstr .size 32,
     "device_id_key": bstr (PKCS#8 PEM), "runtime_dir": tstr}

The stage answers with one CBOR map on its result pipe, then exits; bound
:data:`MAX_STAGE_REPLY_BYTES`. Either a boot result::

    {"v": 1, "ok": true, "alias_key": bstr (PKCS#8 PEM), "chain": [bstr, bstr],
     "device_id": tstr, "measurements": [[tstr, bstr]], "boot_slot": "A" / "B",
     "os_version": tstr, "os_security_version": uint, "counters": {tstr: uint},
     "secboot": bool, "dbgstat": uint, "os_runtime_dir": tstr, "trial": bool,
     "trial_timeout_s": uint}

or the boot error that stopped it (the supervisor raises the same class and
writes the recovery record)::

    {"v": 1, "ok": false, "kind": "RollbackError", "stage": "bootloader",
     "check": "rollback", "reason": tstr}

Every field is type-checked and bounded on decoding; anything else is a
:class:`~bastion.boot.errors.BootStageError` (check ``handoff``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2

from bastion.boot.config import MAX_BOOT_CONFIG_BYTES, RUN_DIR, BootConfig
from bastion.boot.errors import (
    BootConfigError,
    BootError,
    BootloaderVerificationError,
    BootStageError,
    ChipNotReadyError,
    NoOsError,
    OsVerificationError,
    RollbackError,
)
from bastion.boot.result import BootResult
from bastion.boot.rom import RomOutput
from bastion.crypto import keys
from bastion.crypto.cose import cbor_loads_exact
from bastion.crypto.eat import DebugStatus, Measurement
from bastion.crypto.errors import CryptoError
from bastion.hw.errors import HwError
from bastion.hw.fuses import FuseState

__all__ = [
    "HANDOFF_VERSION",
    "MAX_STAGE_INPUT_BYTES",
    "MAX_STAGE_REPLY_BYTES",
    "StageInput",
    "decode_stage_input",
    "decode_stage_reply",
    "encode_stage_error",
    "encode_stage_input",
    "encode_stage_result",
]

HANDOFF_VERSION = 1
#: Bound on the ROM's message: the boot configuration, a key, a few fields.
MAX_STAGE_INPUT_BYTES = MAX_BOOT_CONFIG_BYTES + 16 * 1024
#: Bound on the stage's answer: a key, two certificates and the boot claims.
MAX_STAGE_REPLY_BYTES = 64 * 1024
#: Bounds on the text fields of an answer.
MAX_TEXT_CHARS = 4096
MAX_MEASUREMENTS = 8
MAX_COUNTERS = 16
_DIGEST_BYTES = 32
#: The boot errors a stage may report, by class name; any other name is reported as a plain BootError.
_ERRORS: dict[str, type[BootError]] = {
    cls.__name__: cls
    for cls in (
        ChipNotReadyError,
        BootloaderVerificationError,
        BootConfigError,
        BootStageError,
        NoOsError,
        OsVerificationError,
        RollbackError,
    )
}


def _bad(what: str) -> BootStageError:
    return BootStageError(f"the bootloader stage hand-off is invalid: {what}", check="handoff")


def _field(message: dict[Any, Any], name: str, kind: type) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"field {name!r} is missing or not a {kind.__name__}")
    return value


def _text(message: dict[Any, Any], name: str) -> str:
    value: str = _field(message, name, str)
    if len(value) > MAX_TEXT_CHARS:
        raise _bad(f"field {name!r} is longer than {MAX_TEXT_CHARS} characters")
    return value


def _uint(message: dict[Any, Any], name: str) -> int:
    value: int = _field(message, name, int)
    if value < 0:
        raise _bad(f"field {name!r} is negative")
    return value


def _digest(message: dict[Any, Any], name: str) -> bytes:
    value: bytes = _field(message, name, bytes)
    if len(value) != _DIGEST_BYTES:
        raise _bad(f"field {name!r} is not {_DIGEST_BYTES} bytes")
    return value


def _map(data: bytes | bytearray, bound: int) -> dict[Any, Any]:
    if len(data) > bound:
        raise _bad(f"the message is larger than {bound} bytes")
    try:
        message = cbor_loads_exact(bytes(data))
    except CryptoError as exc:
        raise _bad("not one CBOR item") from exc
    if not isinstance(message, dict) or _field(message, "v", int) != HANDOFF_VERSION:
        raise _bad("not a version 1 map")
    return message


@dataclass(frozen=True)
class StageInput:
    """What the bootloader stage process is handed: the ROM's output, the device directory, the boot time."""

    rom: RomOutput  # its repr leaves out CDI_BL and the DeviceID key
    dev_dir: Path
    now: dt.datetime


def encode_stage_input(stage: StageInput) -> bytearray:
    """Serialize the stage's input; a ``bytearray`` so the caller can overwrite it once written."""
    rom = stage.rom
    message = {
        "v": HANDOFF_VERSION,
        "dev_dir": str(stage.dev_dir),
        "now": stage.now.isoformat(),
        "fuses": rom.fuses.to_json(),
        "config": rom.config.to_json(),
        "measurement": rom.measurement,
        "cdi": rom.cdi,
        "device_id_key": keys.private_key_pem(rom.device_id_key),
        "runtime_dir": str(rom.runtime_dir),
    }
    return bytearray(cbor2.dumps(message, canonical=True))


def decode_stage_input(data: bytes | bytearray) -> StageInput:
    """Parse the stage's input.

    Raises:
        BootStageError: oversized, not CBOR, a field missing or of the wrong type.
        BootConfigError: the boot configuration does not parse.
    """
    message = _map(data, MAX_STAGE_INPUT_BYTES)
    try:
        now = dt.datetime.fromisoformat(_text(message, "now"))
        fuses = FuseState.from_json(_field(message, "fuses", dict))
        device_id_key = keys.load_private_key_pem(_field(message, "device_id_key", bytes))
    except (ValueError, HwError, CryptoError) as exc:
        raise _bad("the time, fuses or DeviceID key is invalid") from exc
    if now.tzinfo is None:
        raise _bad("the time has no UTC offset")
    rom = RomOutput(
        fuses=fuses,
        config=BootConfig.from_json(_field(message, "config", bytes)),
        measurement=_digest(message, "measurement"),
        cdi=_digest(message, "cdi"),
        device_id_key=device_id_key,
        runtime_dir=Path(_text(message, "runtime_dir")),
    )
    return StageInput(rom, Path(_text(message, "dev_dir")), now)


def encode_stage_result(result: BootResult) -> bytearray:
    """Serialize a successful boot; a ``bytearray`` so the caller can overwrite it (it holds the Alias key)."""
    message = {
        "v": HANDOFF_VERSION,
        "ok": True,
        "alias_key": keys.private_key_pem(result.alias_key),
        "chain": list(result.cert_chain),
        "device_id": result.device_id,
        "measurements": [[m.component, m.digest] for m in result.measurements],
        "boot_slot": result.boot_slot,
        "os_version": result.os_version,
        "os_security_version": result.os_security_version,
        "counters": dict(result.rollback_counters),
        "secboot": result.secboot,
        "dbgstat": int(result.dbgstat),
        "os_runtime_dir": str(result.os_runtime_dir),
        "trial": result.trial,
        "trial_timeout_s": result.trial_timeout_s,
    }
    return bytearray(cbor2.dumps(message, canonical=True))


def encode_stage_error(error: BootError) -> bytes:
    """Serialize the boot error that stopped the stage (it carries no secret, see :mod:`bastion.boot.errors`)."""
    message = {
        "v": HANDOFF_VERSION,
        "ok": False,
        "kind": type(error).__name__,
        "stage": error.stage[:MAX_TEXT_CHARS],
        "check": error.check[:MAX_TEXT_CHARS],
        "reason": error.reason[:MAX_TEXT_CHARS],
    }
    return cbor2.dumps(message, canonical=True)


def _measurements(message: dict[Any, Any]) -> tuple[Measurement, ...]:
    raw = _field(message, "measurements", list)
    if len(raw) > MAX_MEASUREMENTS:
        raise _bad("too many measurements")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], bytes)):
            raise _bad("a measurement is not [component, digest]")
        if len(item[0]) > MAX_TEXT_CHARS or len(item[1]) != _DIGEST_BYTES:
            raise _bad("a measurement is out of bounds")
        out.append(Measurement(component=item[0], digest=item[1]))
    return tuple(out)


def _counters(message: dict[Any, Any]) -> dict[str, int]:
    counters: dict[Any, Any] = _field(message, "counters", dict)
    if len(counters) > MAX_COUNTERS or not all(
        isinstance(k, str) and len(k) <= MAX_TEXT_CHARS and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in counters.items()
    ):
        raise _bad("counters must map names to non-negative integers")
    return counters


def _os_runtime_dir(message: dict[Any, Any], dev_dir: Path) -> Path:
    path = Path(_text(message, "os_runtime_dir"))
    if path.parent != dev_dir / RUN_DIR or not path.name.startswith("os-"):
        raise _bad("the OS runtime directory is not DEV/run/os-*")
    return path


def decode_stage_reply(data: bytes | bytearray, *, dev_dir: Path, bootloader_runtime_dir: Path) -> BootResult:
    """Parse the stage's answer: return the boot result, or raise the boot error it reports.

    Args:
        data: the bytes read from the result pipe.
        dev_dir: the device directory (the OS runtime directory must be under its ``run/``).
        bootloader_runtime_dir: where the ROM unpacked the bootloader (the monitor runs from it).

    Raises:
        BootError: the error class the stage reported (any unknown kind as a plain BootError).
        BootStageError: the answer is out of protocol.
    """
    message = _map(data, MAX_STAGE_REPLY_BYTES)
    if not _field(message, "ok", bool):
        cls = _ERRORS.get(_text(message, "kind"), BootError)
        raise cls(_text(message, "reason"), check=_text(message, "check"), stage=_text(message, "stage"))
    chain = _field(message, "chain", list)
    if len(chain) != 2 or not all(isinstance(c, bytes) for c in chain):
        raise _bad("the chain must be two DER certificates")
    slot = _text(message, "boot_slot")
    if slot not in {"A", "B"}:
        raise _bad("the boot slot is not A or B")
    try:
        alias_key = keys.load_private_key_pem(_field(message, "alias_key", bytes))
        dbgstat = DebugStatus(_field(message, "dbgstat", int))
    except (CryptoError, ValueError) as exc:
        raise _bad("the Alias key or debug status is invalid") from exc
    return BootResult(
        alias_key=alias_key,
        cert_chain=(chain[0], chain[1]),
        device_id=_text(message, "device_id"),
        measurements=_measurements(message),
        boot_slot=slot,
        os_version=_text(message, "os_version"),
        os_security_version=_uint(message, "os_security_version"),
        rollback_counters=_counters(message),
        secboot=_field(message, "secboot", bool),
        dbgstat=dbgstat,
        os_runtime_dir=_os_runtime_dir(message, dev_dir),
        bootloader_runtime_dir=bootloader_runtime_dir,
        trial=_field(message, "trial", bool),
        trial_timeout_s=_uint(message, "trial_timeout_s"),
    )
