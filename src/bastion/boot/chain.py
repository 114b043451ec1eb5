"""The boot chain as processes: the ROM in the caller's process, the bootloader stage in its own.

:func:`boot_device` is what ``bastion device run`` calls at every boot:

1. the **ROM** (:mod:`bastion.boot.rom`, host code: it models the chip's mask
   ROM) verifies and measures the bootloader image against the fuses, derives
   ``CDI_BL`` and the DeviceID key, and unpacks the verified payload (the boot
   stage's and the monitor's code) to ``DEV/run/bl-<measurement hex[:16]>/``;
2. the **bootloader stage** runs from that directory as its own process::

       python -P -m bastion.boot --input-fd N --result-fd M    (PYTHONPATH = DEV/run/bl-...)

   It is handed ``CDI_BL``, the DeviceID key and the fuses over the input pipe
   (never argv or the environment) and answers with the boot result or the boot
   error on the result pipe (:mod:`bastion.boot.handoff`);
3. any failure (a reported boot error, a crash, a hang past
   :data:`STAGE_TIMEOUT_S`, an answer out of protocol) writes the recovery
   record here, in the caller, naming the stage and the check.

The caller then starts the monitor from :attr:`BootResult.bootloader_runtime_dir`,
so the monitor's code is the measured code too.
"""

from __future__ import annotations

import datetime as dt
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

from bastion.boot.errors import BootError, BootStageError, ChipNotReadyError
from bastion.boot.handoff import MAX_STAGE_REPLY_BYTES, StageInput, decode_stage_reply, encode_stage_input
from bastion.boot.recovery import RecoveryState, clear_recovery, write_recovery
from bastion.boot.result import BootResult
from bastion.boot.rom import RomOutput, run_rom
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError

__all__ = ["STAGE_ENV_ALLOWLIST", "STAGE_TIMEOUT_S", "boot_device", "run_bootloader_stage", "stage_env"]

#: Bound on the bootloader stage's run (verifying and unpacking a large OS on its first boot included).
STAGE_TIMEOUT_S = 120.0
#: How long the stage may take to exit once it has answered.
STAGE_EXIT_GRACE_S = 5.0
#: Environment variables the stage may inherit; everything else is dropped.
STAGE_ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME")
_READ_CHUNK = 64 * 1024


def stage_env(pythonpath: Path) -> dict[str, str]:
    """A minimal environment for the stage: the allowlist, ``PYTHONPATH``, no bytecode writing.

    ``PYTHONDONTWRITEBYTECODE`` keeps the verified tree unmodified (its intact
    check allows no ``__pycache__``).
    """
    env = {name: os.environ[name] for name in STAGE_ENV_ALLOWLIST if name in os.environ}
    env["PYTHONPATH"] = str(pythonpath)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _exchange(to_stage: int, from_stage: int, message: bytearray) -> bytes:
    """Write ``message`` to the stage and read its answer to EOF, bounded in size and time; close ``to_stage``."""
    deadline = time.monotonic() + STAGE_TIMEOUT_S
    reply = bytearray()
    pending = memoryview(message)
    os.set_blocking(to_stage, False)
    with selectors.DefaultSelector() as selector:
        selector.register(to_stage, selectors.EVENT_WRITE)
        selector.register(from_stage, selectors.EVENT_READ)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BootStageError(
                        f"the bootloader stage did not answer within {STAGE_TIMEOUT_S:.0f} s", check="timeout"
                    )
                for key, _ in selector.select(remaining):
                    if key.fd == from_stage:
                        chunk = os.read(from_stage, _READ_CHUNK)
                        if not chunk:
                            return bytes(reply)
                        reply += chunk
                        if len(reply) > MAX_STAGE_REPLY_BYTES:
                            raise BootStageError(
                                f"the bootloader stage answered more than {MAX_STAGE_REPLY_BYTES} bytes",
                                check="handoff",
                            )
                        continue
                    try:
                        pending = pending[os.write(to_stage, pending) :]
                    except BrokenPipeError:
                        pending = pending[:0]  # it stopped reading: its answer or exit status tells why
                    if not pending:
                        selector.unregister(to_stage)
                        os.close(to_stage)  # EOF: the stage has its whole input
        finally:
            if to_stage in {key.fd for key in selector.get_map().values()}:
                selector.unregister(to_stage)
                os.close(to_stage)


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def run_bootloader_stage(rom: RomOutput, dev_dir: Path, *, now: dt.datetime) -> BootResult:
    """Run the bootloader stage from ``rom.runtime_dir`` as its own process and return its boot result.

    Raises:
        BootError: the class of boot error the stage reported.
        BootStageError: the stage could not start, crashed, hung or answered out of protocol.
    """
    message = encode_stage_input(StageInput(rom, dev_dir, now))
    in_read, in_write = os.pipe()
    out_read, out_write = os.pipe()
    try:
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    "-m",
                    "bastion.boot",
                    "--input-fd",
                    str(in_read),
                    "--result-fd",
                    str(out_write),
                ],
                pass_fds=(in_read, out_write),
                env=stage_env(rom.runtime_dir),
                cwd=dev_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        except OSError as exc:
            os.close(in_write)
            raise BootStageError(f"the bootloader stage cannot start ({exc.strerror})", check="stage") from exc
        finally:
            os.close(in_read)
            os.close(out_write)
        try:
            reply = _exchange(in_write, out_read, message)
            code = process.wait(STAGE_EXIT_GRACE_S)
        except subprocess.TimeoutExpired as exc:
            _kill(process)
            raise BootStageError("the bootloader stage did not exit after answering", check="stage") from exc
        except BaseException:  # a bound hit, or the supervisor itself stopping: no stage outlives it
            _kill(process)
            raise
    finally:
        message[:] = bytes(len(message))  # best effort: CDI_BL and the DeviceID key
        os.close(out_read)
    if not reply:
        raise BootStageError(f"the bootloader stage exited with status {code} without an answer", check="stage")
    result = decode_stage_reply(reply, dev_dir=dev_dir, bootloader_runtime_dir=rom.runtime_dir)
    if code != 0:
        raise BootStageError(f"the bootloader stage exited with status {code}", check="stage")
    return result


def boot_device(dev_dir: Path, *, now: dt.datetime) -> BootResult:
    """Boot the chip in ``dev_dir``: the ROM here, then the bootloader stage as its own process.

    On failure the chip enters recovery: ``DEV/recovery.json`` records the stage,
    the check and the reason, and the error is raised. A good boot clears it.

    Raises:
        BootError: a subclass naming the failed stage and check.
    """
    dev_dir = dev_dir.absolute()  # the OS process may run with another working directory
    try:
        chip = Chip.open(dev_dir)
    except HwError as exc:
        raise ChipNotReadyError(
            f"no chip in {dev_dir}: manufacture one with `bastion device manufacture`", check="chip"
        ) from exc
    try:
        result = run_bootloader_stage(run_rom(chip), dev_dir, now=now)
    except BootError as error:
        write_recovery(dev_dir, RecoveryState(error.stage, error.check, error.reason, now))
        raise
    clear_recovery(dev_dir)
    return result
