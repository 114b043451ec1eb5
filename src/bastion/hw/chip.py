"""The emulated chip, persisted in a device directory.

Layout of ``DEV``::

    chip/uds                   32 random bytes, 0600 (the Unique Device Secret)
    chip/fuses.json            the fuse bank (see bastion.hw.fuses)
    chip/device_id_cert.der    the vendor-endorsed DeviceID certificate (write-once)
    chip/model.json            the chip model (see bastion.hw.chipmodel), written at manufacture;
                               a chip without one is the default model
    flash/<partition>.bin      flash partitions (see bastion.hw.flash)
    flash/bootstate.json       the active OS slot

The emulated chip models the process boundary only: a local root user can read
these files (see docs/design.md, "Honest limits").

Example:
    >>> import tempfile, pathlib
    >>> dev = pathlib.Path(tempfile.mkdtemp()) / "dev"
    >>> chip = Chip.manufacture(dev)
    >>> len(Chip.open(dev).read_uds())
    32
"""

from __future__ import annotations

import os
from pathlib import Path

from bastion.hw._statefile import read_json, write_json
from bastion.hw.atomic import atomic_write_bytes
from bastion.hw.chipmodel import DEFAULT_MODEL, ChipModel, get_model
from bastion.hw.errors import (
    ChipExistsError,
    ChipNotFoundError,
    FuseWriteError,
    StateCorruptError,
    UnknownPeripheralError,
)
from bastion.hw.flash import Flash
from bastion.hw.fuses import FuseBank
from bastion.hw.trng import OsTrng, Trng

__all__ = ["MAX_DEVICE_ID_CERT_BYTES", "MODEL_FILE", "UDS_SIZE", "Chip"]

UDS_SIZE = 32
#: Bound on the stored DeviceID certificate.
MAX_DEVICE_ID_CERT_BYTES = 16 * 1024
#: The chip model record, under ``chip/``.
MODEL_FILE = "model.json"
MAX_MODEL_FILE_BYTES = 1024


class Chip:
    """One emulated chip: UDS, fuses, ROM-like certificate storage, flash and TRNG."""

    def __init__(self, dev_dir: Path, *, trng: Trng | None = None) -> None:
        """Bind to a device directory; use :meth:`open` or :meth:`manufacture`."""
        self.dev_dir = dev_dir
        self.chip_dir = dev_dir / "chip"
        self.fuses = FuseBank(self.chip_dir / "fuses.json")
        self.flash = Flash(dev_dir / "flash")
        self.trng: Trng = trng if trng is not None else OsTrng()

    @classmethod
    def exists(cls, dev_dir: Path) -> bool:
        """Return whether ``dev_dir`` holds a chip."""
        return (dev_dir / "chip" / "uds").exists()

    @classmethod
    def open(cls, dev_dir: Path, *, trng: Trng | None = None) -> Chip:
        """Open the chip in ``dev_dir``.

        Raises:
            ChipNotFoundError: there is no manufactured chip in ``dev_dir``.
        """
        if not cls.exists(dev_dir):
            raise ChipNotFoundError(f"no chip in {dev_dir}")
        return cls(dev_dir, trng=trng)

    @classmethod
    def manufacture(cls, dev_dir: Path, *, trng: Trng | None = None, model: str = DEFAULT_MODEL) -> Chip:
        """Create a blank chip of ``model``: a fresh UDS from the TRNG, blank fuses, erased flash.

        Raises:
            ChipExistsError: ``dev_dir`` already holds a chip.
            UnknownPeripheralError: there is no such chip model.
        """
        if cls.exists(dev_dir):
            raise ChipExistsError(f"{dev_dir} already holds a chip")
        get_model(model)
        chip = cls(dev_dir, trng=trng)
        chip.chip_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        uds = chip.trng.read(UDS_SIZE)
        if len(uds) != UDS_SIZE:
            raise StateCorruptError("the TRNG returned too few bytes")
        FuseBank.create(chip.fuses.path)
        Flash.create(chip.flash.flash_dir)
        write_json(chip.chip_dir / MODEL_FILE, {"model": model})
        atomic_write_bytes(chip.chip_dir / "uds", uds, mode=0o600)
        return chip

    def read_uds(self) -> bytes:
        """Return the Unique Device Secret (only the boot ROM calls this).

        Raises:
            StateCorruptError: the UDS file is missing or has the wrong size.
        """
        try:
            with (self.chip_dir / "uds").open("rb") as handle:
                uds = handle.read(UDS_SIZE + 1)
        except OSError as exc:
            raise StateCorruptError("cannot read the UDS") from exc
        if len(uds) != UDS_SIZE:
            raise StateCorruptError("the UDS has the wrong size")
        return uds

    def model(self) -> ChipModel:
        """The chip's model, as recorded at manufacture (the default model if none was).

        Raises:
            StateCorruptError: the record is unreadable or names an unknown model.
        """
        path = self.chip_dir / MODEL_FILE
        if not path.exists():
            return get_model(DEFAULT_MODEL)
        name = read_json(path, max_bytes=MAX_MODEL_FILE_BYTES).get("model")
        if not isinstance(name, str):
            raise StateCorruptError(f"{MODEL_FILE} names no model")
        try:
            return get_model(name)
        except UnknownPeripheralError as exc:
            raise StateCorruptError(f"{MODEL_FILE}: {exc}") from exc

    @property
    def _cert_path(self) -> Path:
        return self.chip_dir / "device_id_cert.der"

    def read_device_id_cert(self) -> bytes:
        """Return the DER DeviceID certificate stored at manufacture.

        Raises:
            StateCorruptError: it is missing or over its size bound.
        """
        try:
            with self._cert_path.open("rb") as handle:
                der = handle.read(MAX_DEVICE_ID_CERT_BYTES + 1)
        except OSError as exc:
            raise StateCorruptError("the chip holds no DeviceID certificate") from exc
        if not der or len(der) > MAX_DEVICE_ID_CERT_BYTES:
            raise StateCorruptError("the DeviceID certificate has an impossible size")
        return der

    def store_device_id_cert(self, der: bytes) -> None:
        """Store the DeviceID certificate (write-once, like ROM-programmed storage).

        Raises:
            FuseWriteError: a certificate is already stored, or it is too large.
        """
        if self._cert_path.exists():
            raise FuseWriteError("the DeviceID certificate is already stored (write-once)")
        if not der or len(der) > MAX_DEVICE_ID_CERT_BYTES:
            raise FuseWriteError("the DeviceID certificate has an impossible size")
        atomic_write_bytes(self._cert_path, der)

    def __repr__(self) -> str:
        """Name the device directory (never secrets)."""
        return f"Chip({os.fspath(self.dev_dir)!r})"
