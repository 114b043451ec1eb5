"""Entry point of the bootloader stage process: ``python -P -m bastion.boot --input-fd N --result-fd M``.

The ROM (:mod:`bastion.boot.chain`) starts it from the unpacked bootloader
image with two inherited descriptors: the read end of the input pipe (the ROM's
output: ``CDI_BL``, the DeviceID key, the fuses, the boot configuration) and
the write end of the result pipe (:mod:`bastion.boot.handoff`). Neither argv
nor the environment holds a secret. The stage runs
:func:`bastion.boot.bootloader.run_bootloader`, writes the boot result or the
boot error to the result pipe and exits 0; exit status 2 means its input was
unusable (it still answers with the error).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from bastion.boot.bootloader import run_bootloader
from bastion.boot.errors import BootError, BootStageError, ChipNotReadyError
from bastion.boot.handoff import MAX_STAGE_INPUT_BYTES, decode_stage_input, encode_stage_error, encode_stage_result
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
_READ_CHUNK = 64 * 1024


def _read_input(fd: int) -> bytearray:
    data = bytearray()
    try:
        while chunk := os.read(fd, _READ_CHUNK):
            data += chunk
            if len(data) > MAX_STAGE_INPUT_BYTES:
                raise BootStageError(f"the stage input is larger than {MAX_STAGE_INPUT_BYTES} bytes", check="handoff")
    finally:
        os.close(fd)
    return data


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    finally:
        view.release()
        os.close(fd)


def _boot(raw: bytearray) -> bytearray | bytes:
    stage = decode_stage_input(raw)
    try:
        chip = Chip.open(stage.dev_dir)
    except HwError as exc:
        raise ChipNotReadyError(f"no chip in {stage.dev_dir}", check="chip") from exc
    return encode_stage_result(run_bootloader(chip, stage.rom, now=stage.now))


def main(argv: list[str] | None = None) -> int:
    """Run the bootloader stage; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="bastion.boot")
    parser.add_argument("--input-fd", type=int, required=True)
    parser.add_argument("--result-fd", type=int, required=True)
    args = parser.parse_args(argv)
    raw = bytearray()
    status = EXIT_OK
    reply: bytearray | bytes
    try:
        raw = _read_input(args.input_fd)
        reply = _boot(raw)
    except BootStageError as error:
        reply, status = encode_stage_error(error), EXIT_BAD_INPUT
    except BootError as error:
        reply = encode_stage_error(error)
    except Exception as exc:  # noqa: BLE001 - a bug must still end in recovery naming the stage
        traceback.print_exc(file=sys.stderr)
        reply = encode_stage_error(
            BootStageError(f"the bootloader stage failed ({type(exc).__name__})", check="internal")
        )
    finally:
        raw[:] = bytes(len(raw))  # best effort: CDI_BL and the DeviceID key
    try:
        _write_all(args.result_fd, reply)
    finally:
        if isinstance(reply, bytearray):
            reply[:] = bytes(len(reply))  # the Alias key
    return status


if __name__ == "__main__":
    sys.exit(main())
