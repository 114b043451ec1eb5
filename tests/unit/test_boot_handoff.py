"""The ROM <-> bootloader stage pipe protocol: round trips, and every bad message refused with a BootStageError."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import cbor2
import pytest

from bastion.boot.config import BootConfig
from bastion.boot.errors import BootError, BootStageError, NoOsError, RollbackError
from bastion.boot.handoff import (
    MAX_STAGE_INPUT_BYTES,
    MAX_STAGE_REPLY_BYTES,
    StageInput,
    decode_stage_input,
    decode_stage_reply,
    encode_stage_error,
    encode_stage_input,
    encode_stage_result,
)
from bastion.boot.result import BootResult
from bastion.boot.rom import RomOutput
from bastion.crypto.eat import DebugStatus, Measurement
from bastion.crypto.keys import generate_private_key, public_key_bytes
from bastion.hw.fuses import FuseState, Lifecycle

DEV = Path("/devices/one")
NOW = dt.datetime(2026, 3, 1, 12, 0, 30, 123456, tzinfo=dt.UTC)
BL_DIR = DEV / "run" / "bl-0011223344556677"


def _rom() -> RomOutput:
    key = generate_private_key()
    return RomOutput(
        fuses=FuseState(Lifecycle.SECURED, b"\x01" * 32, True, {"os": 2, "bootloader": 1}),
        config=BootConfig((key.public_key(),), 2, 30),
        measurement=b"\x02" * 32,
        cdi=b"\x03" * 32,
        device_id_key=generate_private_key(),
        runtime_dir=BL_DIR,
    )


def _result() -> BootResult:
    return BootResult(
        alias_key=generate_private_key(),
        cert_chain=(b"alias-der", b"device-id-der"),
        device_id="ab" * 32,
        measurements=(Measurement("bootloader", b"\x02" * 32), Measurement("os", b"\x04" * 32)),
        boot_slot="B",
        os_version="1.1.0",
        os_security_version=2,
        rollback_counters={"os": 2},
        secboot=True,
        dbgstat=DebugStatus.DISABLED_PERMANENTLY,
        os_runtime_dir=DEV / "run" / "os-8899aabbccddeeff",
        bootloader_runtime_dir=BL_DIR,
        trial=True,
        trial_timeout_s=30,
    )


def test_stage_input_round_trips_and_hides_its_secrets() -> None:
    rom = _rom()
    decoded = decode_stage_input(encode_stage_input(StageInput(rom, DEV, NOW)))
    assert (decoded.dev_dir, decoded.now) == (DEV, NOW)
    got = decoded.rom
    assert (got.fuses, got.config, got.measurement, got.cdi, got.runtime_dir) == (
        rom.fuses,
        rom.config,
        rom.measurement,
        rom.cdi,
        rom.runtime_dir,
    )
    assert public_key_bytes(got.device_id_key.public_key()) == public_key_bytes(rom.device_id_key.public_key())
    shown = repr(decoded)
    assert rom.cdi.hex() not in shown
    assert "PRIVATE" not in shown


def test_stage_result_round_trips() -> None:
    result = _result()
    decoded = decode_stage_reply(encode_stage_result(result), dev_dir=DEV, bootloader_runtime_dir=BL_DIR)
    assert public_key_bytes(decoded.alias_key.public_key()) == public_key_bytes(result.alias_key.public_key())
    assert dataclasses.replace(decoded, alias_key=result.alias_key) == result


def test_reported_errors_are_raised_as_their_class() -> None:
    for error in (RollbackError("below the counter", check="rollback"), NoOsError("empty", check="slot")):
        with pytest.raises(type(error)) as info:
            decode_stage_reply(encode_stage_error(error), dev_dir=DEV, bootloader_runtime_dir=BL_DIR)
        assert (info.value.stage, info.value.check, info.value.reason) == (error.stage, error.check, error.reason)
    unknown = cbor2.dumps({"v": 1, "ok": False, "kind": "Evil", "stage": "rom", "check": "x", "reason": "y"})
    with pytest.raises(BootError) as plain:
        decode_stage_reply(unknown, dev_dir=DEV, bootloader_runtime_dir=BL_DIR)
    assert type(plain.value) is BootError
    assert plain.value.stage == "rom"


def _reply(**changes: Any) -> bytes:
    message = cbor2.loads(bytes(encode_stage_result(_result())))
    message.update(changes)
    return cbor2.dumps({k: v for k, v in message.items() if v is not None}, canonical=True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbor2.dumps([1, 2]),
        cbor2.dumps({"v": 2, "ok": True}),
        _reply(ok=None),
        _reply(ok=1),
        _reply(alias_key=b"not a key"),
        _reply(chain=[b"one"]),
        _reply(boot_slot="C"),
        _reply(os_security_version=-1),
        _reply(os_security_version=True),
        _reply(counters={"os": "2"}),
        _reply(measurements=[["os", b"short"]]),
        _reply(measurements=[["os", b"\x00" * 32]] * 9),
        _reply(dbgstat=99),
        _reply(os_runtime_dir="/etc"),
        _reply(os_runtime_dir=str(DEV / "run" / "bl-0011223344556677")),
        _reply(device_id="x" * 5000),
        _reply() + b"\x00",
    ],
)
def test_bad_replies_are_stage_errors(data: bytes) -> None:
    with pytest.raises(BootStageError) as info:
        decode_stage_reply(data, dev_dir=DEV, bootloader_runtime_dir=BL_DIR)
    assert (info.value.stage, info.value.check) == ("bootloader", "handoff")


def test_oversized_messages_are_refused() -> None:
    with pytest.raises(BootStageError, match="larger than"):
        decode_stage_reply(b"\x00" * (MAX_STAGE_REPLY_BYTES + 1), dev_dir=DEV, bootloader_runtime_dir=BL_DIR)
    with pytest.raises(BootStageError, match="larger than"):
        decode_stage_input(b"\x00" * (MAX_STAGE_INPUT_BYTES + 1))


def _input(**changes: Any) -> bytes:
    message = cbor2.loads(bytes(encode_stage_input(StageInput(_rom(), DEV, NOW))))
    message.update(changes)
    return cbor2.dumps(message, canonical=True)


@pytest.mark.parametrize(
    "data",
    [
        _input(now="2026-03-01T12:00:00"),  # no offset
        _input(now="yesterday"),
        _input(cdi=b"\x00" * 31),
        _input(measurement="00" * 32),
        _input(device_id_key=b"nope"),
        _input(fuses={"lifecycle": "SECURED"}),
        _input(dev_dir=7),
        _input(v=0),
    ],
)
def test_bad_inputs_are_stage_errors(data: bytes) -> None:
    with pytest.raises(BootStageError):
        decode_stage_input(data)


def test_a_bad_boot_config_in_the_input_is_a_config_error() -> None:
    from bastion.boot.errors import BootConfigError

    with pytest.raises(BootConfigError):
        decode_stage_input(_input(config=b"{}"))


def test_the_stage_entry_point_answers_a_bad_input_with_a_stage_error() -> None:
    import os

    from bastion.boot.__main__ import EXIT_BAD_INPUT, main

    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    os.write(in_write, b"\xa1\x61v\x01")  # {"v": 1} and nothing else
    os.close(in_write)
    assert main(["--input-fd", str(in_read), "--result-fd", str(out_write)]) == EXIT_BAD_INPUT
    with os.fdopen(out_read, "rb") as answer:
        reply = answer.read()
    with pytest.raises(BootStageError, match="hand-off is invalid") as info:
        decode_stage_reply(reply, dev_dir=DEV, bootloader_runtime_dir=BL_DIR)
    assert info.value.check == "handoff"
