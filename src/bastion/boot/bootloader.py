"""Boot stage 1, the bootloader: verify, measure and unpack the OS; issue the Alias cert.

This code runs in its own process, from the unpacked bootloader image that the
ROM verified and measured (``python -P -m bastion.boot``, see
:mod:`bastion.boot.__main__` and :mod:`bastion.boot.chain`), so the code that
chooses the slot and signs the Alias certificate is part of ``CDI_BL``.

First it chooses the slot (A/B, see :mod:`bastion.boot.slots`): if a trial is
armed with attempts left, it durably spends one attempt, then boots the trial
slot; if a trial is armed with none left, or the trial image fails any check
below, it rolls back (clears the trial, records a ``rollback`` event) and boots
the active slot. A non-trial boot of the active slot raises the ``os`` fuse
counter to that OS's security version if it is below (the catch-up after a
power cut between a confirmation and its counter burn).

Checks, in order (each failure is a :class:`BootError` naming the check):

1. the boot state names an active slot, and that slot holds an image;
2. the image verifies under a pinned OS-publisher key from the signed boot
   configuration (format, signature, payload digest) and is of type ``os``;
3. its security version is not below the fuse counter ``"os"`` (rollback);
4. its payload unpacks safely to ``DEV/run/os-<measurement hex[:16]>/`` (an
   existing, intact unpacking is reused); then the runtimes of OS images in
   neither slot and interrupted unpacks are removed (:mod:`bastion.boot.runtimes`).

Then ``CDI_OS = derive_cdi(CDI_BL, os measurement)``, the Alias key pair is
``derive_key_pair(CDI_OS)``, and the Alias certificate is issued by the DeviceID
key with a DiceTcbInfo whose fwids are [bootloader, OS] measurements.

:func:`bastion.boot.chain.boot_device` runs ROM and bootloader and keeps the recovery record.
"""

from __future__ import annotations

import datetime as dt
import hmac
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.boot.config import RUN_DIR
from bastion.boot.errors import ChipNotReadyError, NoOsError, OsVerificationError, RollbackError
from bastion.boot.result import BootResult
from bastion.boot.rom import RomOutput
from bastion.boot.runtimes import prune_runtimes
from bastion.boot.slots import (
    OS_COUNTER,
    OUTCOME_FAILED,
    OUTCOME_INTERRUPTED,
    catch_up_counter,
    roll_back,
    spend_trial_attempt,
)
from bastion.crypto import certs
from bastion.crypto.dice import derive_cdi, derive_key_pair
from bastion.crypto.eat import DebugStatus, Measurement
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import device_id_from_public_key, public_key_bytes
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError
from bastion.hw.flash import Slot
from bastion.images.errors import ImageError, ImagePayloadError, ImageSignatureError
from bastion.images.os_payload import read_os_manifest, runtime_is_intact, unpack_os_stream
from bastion.images.package import ImageHeader, ImageType, measure_stream, verify_image

__all__ = ["OS_COUNTER", "RUN_DIR", "run_bootloader"]

#: DiceTcbInfo fields of the Alias certificate.
TCB_VENDOR = "Bastion"
TCB_MODEL = "bastion-os"
ALIAS_LAYER = 1


def _active_slot(chip: Chip) -> Slot:
    try:
        slot = chip.flash.read_boot_state().active_slot
    except HwError as exc:
        raise NoOsError(f"the boot state is unreadable ({exc})", check="boot state") from exc
    if slot is None:
        raise NoOsError("no OS slot is active: flash an OS with `bastion device flash`", check="slot")
    if chip.flash.is_empty(slot.flash_partition):
        raise NoOsError(f"slot {slot.value} is empty: flash an OS with `bastion device flash`", check="slot")
    return slot


def _verify_os(stream: BinaryIO, rom: RomOutput, slot: Slot) -> ImageHeader:
    where = f"the OS image in slot {slot.value}"
    try:
        header = verify_image(stream, rom.config.os_publisher_keys)
    except ImageSignatureError as exc:
        raise OsVerificationError(f"{where} is not signed by a pinned OS-publisher key", check="signature") from exc
    except ImagePayloadError as exc:
        raise OsVerificationError(f"{where} has a corrupted payload ({exc})", check="payload") from exc
    except ImageError as exc:
        raise OsVerificationError(f"{where} is malformed ({exc})", check="format") from exc
    if header.image_type is not ImageType.OS:
        raise OsVerificationError(f"{where} is a {header.image_type.value} image, not an OS", check="type")
    minimum = rom.fuses.counters.get(OS_COUNTER, 0)
    if header.security_version < minimum:
        raise RollbackError(
            f"OS security version {header.security_version} is below the anti-rollback counter {minimum}",
            check="rollback",
        )
    return header


def _install_runtime(stream: BinaryIO, header: ImageHeader, runtime_dir: Path) -> None:
    try:
        stream.seek(0)
        manifest = read_os_manifest(stream)
        if (manifest.version, manifest.security_version) != (header.version, header.security_version):
            raise OsVerificationError("the OS manifest disagrees with its signed header", check="archive")
        if not runtime_is_intact(runtime_dir, manifest):
            stream.seek(0)
            unpack_os_stream(stream, runtime_dir)
    except ImageError as exc:
        raise OsVerificationError(f"the OS payload cannot be unpacked ({exc})", check="archive") from exc


def _device_id_cert(chip: Chip, rom: RomOutput) -> tuple[bytes, x509.Certificate]:
    try:
        der = chip.read_device_id_cert()
        cert = certs.load_certificate_der(der)
    except (HwError, CryptoError) as exc:
        raise ChipNotReadyError("the DeviceID certificate is missing or invalid", check="identity") from exc
    cert_key = cert.public_key()
    ours = public_key_bytes(rom.device_id_key.public_key())
    if not isinstance(cert_key, ec.EllipticCurvePublicKey) or not hmac.compare_digest(public_key_bytes(cert_key), ours):
        raise ChipNotReadyError("the DeviceID certificate is not for this chip's UDS", check="identity")
    return der, cert


def _state_error(exc: HwError) -> NoOsError:
    return NoOsError(f"the boot state cannot be updated ({exc})", check="boot state")


def run_bootloader(chip: Chip, rom: RomOutput, *, now: dt.datetime) -> BootResult:
    """Run the bootloader stage: choose the slot (trial or active), then verify and boot it.

    Raises:
        NoOsError, OsVerificationError, RollbackError, ChipNotReadyError.
    """
    active = _active_slot(chip)
    try:
        trial = spend_trial_attempt(chip.flash)  # persisted before the trial slot is touched
        if trial is None:
            # No-op unless a trial ran out of attempts with no verdict: a power cut or a whole-device
            # crash during it, not a failure of the image (a failed verdict rolled back already).
            roll_back(chip.flash, now=int(now.timestamp()), outcome=OUTCOME_INTERRUPTED)
    except HwError as exc:
        raise _state_error(exc) from exc
    if trial is not None:
        try:
            return _pruned(chip, _boot_slot(chip, rom, trial, now=now, trial=True))
        except (NoOsError, OsVerificationError):
            try:  # the trial image is bad: do not wait for another boot to return to the active slot
                roll_back(chip.flash, now=int(now.timestamp()), outcome=OUTCOME_FAILED)
            except HwError as exc:
                raise _state_error(exc) from exc
    result = _boot_slot(chip, rom, active, now=now, trial=False)
    try:
        counter = catch_up_counter(chip, result.os_security_version)
    except HwError as exc:
        raise ChipNotReadyError(f"the anti-rollback counter cannot be raised ({exc})", check="fuses") from exc
    return _pruned(chip, replace(result, rollback_counters={**result.rollback_counters, OS_COUNTER: counter}))


def _slot_runtime_name(chip: Chip, slot: Slot) -> str | None:
    """The runtime directory name of the image in ``slot`` (its measurement), or None if empty or unreadable."""
    try:
        if chip.flash.is_empty(slot.flash_partition):
            return None
        with chip.flash.open(slot.flash_partition) as stream:
            return f"os-{measure_stream(stream).hex()[:16]}"
    except (HwError, ImageError, OSError):
        return None


def _pruned(chip: Chip, result: BootResult) -> BootResult:
    """Remove the runtimes of OS versions in neither slot, and interrupted unpacks (bounded disk)."""
    other = _slot_runtime_name(chip, Slot(result.boot_slot).other)
    keep = {result.os_runtime_dir.name} | ({other} if other else set())
    prune_runtimes(chip.dev_dir / RUN_DIR, keep=keep)
    return result


def _boot_slot(chip: Chip, rom: RomOutput, slot: Slot, *, now: dt.datetime, trial: bool) -> BootResult:
    if chip.flash.is_empty(slot.flash_partition):
        raise NoOsError(f"slot {slot.value} is empty", check="slot")
    try:
        stream = chip.flash.open(slot.flash_partition)
    except HwError as exc:
        raise NoOsError(f"slot {slot.value} cannot be read ({exc})", check="slot") from exc
    # One open file for every pass: a rewrite of the slot (an atomic rename)
    # cannot swap the bytes between verification, measurement and unpacking.
    with stream:
        header = _verify_os(stream, rom, slot)
        stream.seek(0)
        os_measurement = measure_stream(stream)
        runtime_dir = chip.dev_dir / RUN_DIR / f"os-{os_measurement.hex()[:16]}"
        _install_runtime(stream, header, runtime_dir)
    device_id_der, device_id_cert = _device_id_cert(chip, rom)
    alias_key = derive_key_pair(derive_cdi(rom.cdi, os_measurement))
    tcb = certs.TcbInfo(
        vendor=TCB_VENDOR,
        model=TCB_MODEL,
        version=header.version,
        svn=header.security_version,
        layer=ALIAS_LAYER,
        fwids=(certs.Fwid(certs.OID_SHA256, rom.measurement), certs.Fwid(certs.OID_SHA256, os_measurement)),
    )
    alias_cert = certs.issue_alias_cert(rom.device_id_key, device_id_cert, alias_key.public_key(), tcb, now=now)
    return BootResult(
        alias_key=alias_key,
        cert_chain=(certs.certificate_der(alias_cert), device_id_der),
        device_id=device_id_from_public_key(rom.device_id_key.public_key()),
        measurements=(Measurement("bootloader", rom.measurement), Measurement("os", os_measurement)),
        boot_slot=slot.value,
        os_version=header.version,
        os_security_version=header.security_version,
        rollback_counters=dict(rom.fuses.counters),
        secboot=True,
        dbgstat=DebugStatus.DISABLED_PERMANENTLY if rom.fuses.debug_locked else DebugStatus.ENABLED,
        os_runtime_dir=runtime_dir,
        bootloader_runtime_dir=rom.runtime_dir,
        trial=trial,
        trial_timeout_s=rom.config.trial_timeout_s,
    )
