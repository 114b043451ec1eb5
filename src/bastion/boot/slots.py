"""The A/B OS slot state machine: install to the inactive slot, trial-boot, confirm, roll back.

The state lives in ``DEV/flash/bootstate.json`` (:class:`bastion.hw.flash.BootState`).
Every transition is one atomic write, in this order:

=================  ===========================  =====================================================
step               who                          boot state after (``active`` / ``trial`` / attempts)
=================  ===========================  =====================================================
install            monitor ``install_os``       A / - / 0; slot B rewritten (temp, fsync, rename)
arm                same op, after the write     A / B / ``trial_boot_limit``
trial boot         bootloader                   A / B / n-1, persisted *before* B is verified
roll back          bootloader (n == 0, or B     A / - / 0, ``last_event`` = rollback, outcome
                   fails verification)          ``interrupted`` (n == 0, no verdict) or ``failed``
fail trial         monitor ``fail_trial`` (the  A / - / 0, ``last_event`` = rollback, ``failed``
                   trial OS's health verdict)
confirm            monitor ``confirm_boot``     B / - / 0, *then* fuse counter ``os`` := svn(B)
catch-up           bootloader, non-trial boot   counter ``os`` raised to svn(active) if below
=================  ===========================  =====================================================

Invariant: the active slot always holds a verified OS whose security version is
at least the ``os`` counter, and the state file names it. The counter is burned
only *after* the state names the new slot active, so the fallback never becomes
unbootable while it is still the fallback. A power cut between the confirm's
state write and its counter burn leaves ``active`` = B with a lower counter; the
next non-trial boot of B burns it (:func:`catch_up_counter`), so the counter
converges without the OS having to confirm again.

Each durable write is followed by a call to an optional ``checkpoint(step)``
hook; tests raise from it to cut the power at that point.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from bastion.boot.config import BootConfig
from bastion.boot.errors import BootError, FlashImageError, SlotStateError, StagingPathError
from bastion.boot.rom import load_bootloader
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError
from bastion.hw.flash import (
    EVENT_ROLLBACK,
    MAX_EVENT_FIELD_CHARS,
    OUTCOME_FAILED,
    OUTCOME_INTERRUPTED,
    PARTITION_SIZES,
    BootEvent,
    BootState,
    Flash,
    Slot,
)
from bastion.images.errors import ImageError
from bastion.images.package import ImageHeader, ImageType, inspect_image, verify_image
from bastion.images.semver import is_newer

__all__ = [
    "OS_COUNTER",
    "OUTCOME_FAILED",
    "OUTCOME_INTERRUPTED",
    "STAGING_DIR",
    "STEP_ARMED",
    "STEP_CONFIRMED",
    "STEP_COUNTER_RAISED",
    "STEP_SLOT_WRITTEN",
    "Checkpoint",
    "InstallOutcome",
    "RunningOs",
    "ack_boot_event",
    "catch_up_counter",
    "confirm_trial",
    "fail_trial",
    "install_os",
    "open_staged_image",
    "roll_back",
    "spend_trial_attempt",
    "verify_os_image",
]

#: Name of the fuse counter that holds the OS's minimum security version.
OS_COUNTER = "os"
#: Where the OS stages images for ``install_os``, relative to the device directory.
STAGING_DIR = Path("os-state") / "staging"
#: Checkpoint names: the durable writes of an update, in order.
STEP_SLOT_WRITTEN = "slot-written"
STEP_ARMED = "armed"
STEP_CONFIRMED = "confirmed"
STEP_COUNTER_RAISED = "counter-raised"

Checkpoint = Callable[[str], None]


def _no_checkpoint(step: str) -> None:
    del step


@dataclass(frozen=True)
class RunningOs:
    """The OS of the current boot, as the boot stage vouched for it."""

    slot: Slot
    version: str
    security_version: int
    trial: bool


@dataclass(frozen=True)
class InstallOutcome:
    """What :func:`install_os` wrote and armed."""

    slot: Slot
    header: ImageHeader
    attempts: int


def verify_os_image(stream: BinaryIO, config: BootConfig, minimum: int, *, what: str) -> ImageHeader:
    """Verify an OS image fully: pinned publisher key, format, payload, type, anti-rollback.

    Raises:
        FlashImageError: any check fails; the message names ``what``.
    """
    try:
        header = verify_image(stream, config.os_publisher_keys)
    except ImageError as exc:
        raise FlashImageError(f"{what} is refused: {exc}") from exc
    if header.image_type is not ImageType.OS:
        raise FlashImageError(f"{what} is a {header.image_type.value} image, not an OS image")
    if header.security_version < minimum:
        raise FlashImageError(
            f"{what}: OS security version {header.security_version} is below the anti-rollback counter {minimum}"
        )
    return header


def open_staged_image(dev_dir: Path, path: str) -> BinaryIO:
    """Open a staged image that must be a regular file inside ``DEV/os-state/staging``.

    The path is resolved (symlinks and ``..`` included) before the check, and the
    final component is opened without following a link. What is read is then
    verified in full, so a file swapped after the check gains nothing.

    Raises:
        StagingPathError: outside the staging directory, missing, not a regular
            file, or larger than an OS slot.
    """
    staging = (dev_dir / STAGING_DIR).resolve()
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise StagingPathError("the staged image does not exist") from exc
    if not resolved.is_relative_to(staging) or resolved == staging:
        raise StagingPathError("the staged image is not inside the staging directory")
    try:  # O_NONBLOCK: opening a FIFO the OS planted there must not hang the monitor
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise StagingPathError("the staged image cannot be opened") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > PARTITION_SIZES[Slot.A.flash_partition]:
        os.close(fd)
        raise StagingPathError("the staged image is not a regular file of a slot's size")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _load(chip: Chip) -> tuple[int, BootConfig]:
    try:
        fuses, config, _, _ = load_bootloader(chip)
    except BootError as exc:
        raise FlashImageError(f"the device cannot take an OS: {exc}") from exc
    return fuses.counters.get(OS_COUNTER, 0), config


def _check_can_install(state: BootState, running: RunningOs) -> None:
    if running.trial:
        raise SlotStateError("this boot is a trial: confirm it (or let it roll back) before installing")
    if state.trial_slot is not None:
        raise SlotStateError(f"a trial of slot {state.trial_slot.value} is already armed")
    if state.active_slot is not running.slot:
        raise SlotStateError("the running slot is not the active slot")


def install_os(
    chip: Chip, image: BinaryIO, running: RunningOs, *, checkpoint: Checkpoint = _no_checkpoint
) -> InstallOutcome:
    """Verify ``image``, write it to the inactive slot, then arm a trial boot of it.

    The image must verify under a pinned OS key, be at or above the ``os``
    counter, and be strictly newer (SemVer) than the running OS. The slot is
    written atomically (temp, fsync, rename) and verified again from flash before
    the trial is armed, so a staged file rewritten in between is caught.

    Raises:
        SlotStateError: a trial is armed or running, or the running slot is not active.
        FlashImageError: the image is refused.
        HwError: the flash or boot state cannot be written.
    """
    _check_can_install(chip.flash.read_boot_state(), running)
    minimum, config = _load(chip)
    header = verify_os_image(image, config, minimum, what="the staged OS image")
    try:
        newer = is_newer(header.version, running.version)
    except ValueError as exc:
        raise FlashImageError("the OS versions are not semantic versions") from exc
    if not newer:
        raise FlashImageError(f"OS {header.version} is not newer than the running OS {running.version}")
    target = running.slot.other
    partition = target.flash_partition
    chip.flash.remove_stale_writes(partition)
    image.seek(0)
    chip.flash.write_stream(partition, image)
    checkpoint(STEP_SLOT_WRITTEN)
    with chip.flash.open(partition) as written:
        if verify_os_image(written, config, minimum, what=f"slot {target.value}") != header:
            raise FlashImageError("the staged image changed while it was written")

    def arm(state: BootState) -> BootState:
        _check_can_install(state, running)
        return replace(state, trial_slot=target, attempts_left=config.trial_boot_limit)

    chip.flash.update_boot_state(arm)
    checkpoint(STEP_ARMED)
    return InstallOutcome(target, header, config.trial_boot_limit)


def confirm_trial(chip: Chip, running: RunningOs, *, checkpoint: Checkpoint = _no_checkpoint) -> int:
    """Make the running trial slot active, then raise the ``os`` counter to its security version.

    Returns:
        The ``os`` counter after the burn.

    Raises:
        SlotStateError: this boot is not a trial, or the state no longer names it.
        HwError: the boot state or the fuses cannot be written.
    """
    if not running.trial:
        raise SlotStateError("this boot is not a trial; there is nothing to confirm")

    def confirm(state: BootState) -> BootState:
        if state.trial_slot is running.slot:
            return replace(state, active_slot=running.slot, trial_slot=None, attempts_left=0)
        if state.active_slot is running.slot and state.trial_slot is None:
            return state  # confirmed already (a retry after a lost answer)
        raise SlotStateError("the boot state no longer names this trial slot")

    chip.flash.update_boot_state(confirm)
    checkpoint(STEP_CONFIRMED)
    counter = catch_up_counter(chip, running.security_version)
    checkpoint(STEP_COUNTER_RAISED)
    return counter


def catch_up_counter(chip: Chip, security_version: int) -> int:
    """Raise the ``os`` counter to ``security_version`` if it is below (idempotent).

    Call it only for the confirmed active slot's OS. Returns the counter after.
    """
    current = chip.fuses.counter(OS_COUNTER)
    if current < security_version:
        chip.fuses.burn_counter(OS_COUNTER, security_version)
        return security_version
    return current


def ack_boot_event(flash: Flash) -> None:
    """Clear the recorded boot event once the OS has reported it."""
    flash.update_boot_state(lambda state: replace(state, last_event=None))


def spend_trial_attempt(flash: Flash) -> Slot | None:
    """If a trial is armed with attempts left, durably spend one and return its slot.

    The decrement is written before the trial slot is even verified, so a trial
    that hangs, crashes or loses power cannot be retried for ever.
    """
    spent: list[Slot] = []

    def spend(state: BootState) -> BootState:
        if state.trial_slot is None or state.attempts_left == 0:
            return state
        spent.append(state.trial_slot)
        return replace(state, attempts_left=state.attempts_left - 1)

    flash.update_boot_state(spend)
    return spent[0] if spent else None


def _slot_version(flash: Flash, slot: Slot | None) -> str:
    """The version in a slot's (unverified) header, for the event record only."""
    if slot is None:
        return "unknown"
    try:
        with flash.open(slot.flash_partition) as stream:
            return inspect_image(stream).version[:MAX_EVENT_FIELD_CHARS]
    except (HwError, ImageError):
        return "unknown"


def roll_back(flash: Flash, *, now: int, outcome: str = OUTCOME_FAILED) -> BootState:
    """Abandon the armed trial: clear it and record a rollback event (idempotent).

    Args:
        flash: the chip's flash.
        now: seconds since the epoch, recorded in the event.
        outcome: :data:`OUTCOME_FAILED` when the trial ran to a failed verdict or did
            not verify; :data:`OUTCOME_INTERRUPTED` when its attempts ran out with no
            verdict (ADR 0018: only a failure counts against the image).
    """

    def undo(state: BootState) -> BootState:
        if state.trial_slot is None:
            return state
        event = BootEvent(
            EVENT_ROLLBACK,
            _slot_version(flash, state.trial_slot),
            _slot_version(flash, state.active_slot),
            now,
            outcome,
        )
        return replace(state, trial_slot=None, attempts_left=0, last_event=event)

    return flash.update_boot_state(undo)


def fail_trial(flash: Flash, slot: Slot, *, now: int, spent_only: bool = False) -> bool:
    """Record the failed verdict of the trial of ``slot``: roll back now, outcome failed.

    The running trial OS calls it (through the monitor) when it fails its health
    check; ``device run`` calls it with ``spent_only`` when a trial OS it
    supervised exited with an error or did not confirm in time and has no attempt
    left. Returns whether a rollback was recorded (False: no such trial is armed).
    """
    state = flash.read_boot_state()
    if state.trial_slot is not slot or (spent_only and state.attempts_left > 0):
        return False
    roll_back(flash, now=now, outcome=OUTCOME_FAILED)
    return True
