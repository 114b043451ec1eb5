"""The silicon vendor's material: CA, boot-signing key, OS-publisher key, bootloader.

``bastion vendor init`` creates a vendor directory::

    ca.key               vendor CA private key (0600)
    ca.pem               vendor CA certificate (the service trusts it)
    boot-signing.key     boot-signing private key (0600); its public key's hash is fused
    boot-signing.pub.pem
    os-signing.key       OS-publisher signing private key (0600), for `bastion os build`
    os-signing.pub.pem   pinned by the bootloader's boot configuration
    bootloader.img       bootloader image package signed by the boot key: the boot stage's
                         and the monitor's code plus the boot configuration
                         (:mod:`bastion.boot.bootloader_image`)
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from bastion.boot.bootloader_image import build_bootloader_image, read_boot_config
from bastion.boot.config import (
    BOOTLOADER_LIMITS,
    DEFAULT_TRIAL_BOOT_LIMIT,
    DEFAULT_TRIAL_TIMEOUT_S,
    BootConfig,
)
from bastion.boot.errors import BootConfigError, BootError, VendorError
from bastion.crypto import certs
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import (
    PrivateKey,
    PublicKey,
    generate_private_key,
    load_private_key_pem,
    load_public_key_pem,
    private_key_pem,
    public_key_pem,
)
from bastion.hw.atomic import atomic_write_bytes
from bastion.images.errors import ImageError
from bastion.images.fileio import FileTooLargeError, read_bounded
from bastion.images.package import ImageHeader, ImageType, verify_image

__all__ = [
    "BOOTLOADER_SECURITY_VERSION",
    "BOOTLOADER_VERSION",
    "VENDOR_CA_LIFETIME",
    "Vendor",
    "VendorPaths",
    "init_vendor",
    "load_vendor",
]

#: Lifetime of the vendor root: longer than any DeviceID certificate it issues.
VENDOR_CA_LIFETIME = certs.DEVICE_ID_CERT_LIFETIME + dt.timedelta(days=365 * 5)

BOOTLOADER_VERSION = "1.0.0"
BOOTLOADER_SECURITY_VERSION = 1
DEFAULT_VENDOR_NAME = "Bastion Emulated Silicon"
#: Bound on any vendor file read back.
MAX_VENDOR_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class VendorPaths:
    """The files of a vendor directory."""

    root: Path

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def boot_key(self) -> Path:
        return self.root / "boot-signing.key"

    @property
    def boot_pub(self) -> Path:
        return self.root / "boot-signing.pub.pem"

    @property
    def os_key(self) -> Path:
        return self.root / "os-signing.key"

    @property
    def os_pub(self) -> Path:
        return self.root / "os-signing.pub.pem"

    @property
    def bootloader(self) -> Path:
        return self.root / "bootloader.img"


@dataclass(frozen=True)
class Vendor:
    """A loaded vendor directory (what manufacture needs)."""

    paths: VendorPaths
    ca_key: PrivateKey
    ca_cert: x509.Certificate
    boot_public_key: PublicKey
    bootloader_image: bytes
    bootloader_header: ImageHeader


def init_vendor(
    root: Path,
    *,
    now: dt.datetime,
    name: str = DEFAULT_VENDOR_NAME,
    force: bool = False,
    trial_boot_limit: int = DEFAULT_TRIAL_BOOT_LIMIT,
    trial_timeout_s: int = DEFAULT_TRIAL_TIMEOUT_S,
    source_root: Path | None = None,
) -> VendorPaths:
    """Create the vendor's keys, CA and signed bootloader in ``root``.

    ``trial_boot_limit`` and ``trial_timeout_s`` go into the signed boot
    configuration (see :mod:`bastion.boot.config`); tests shorten the timeout.
    The bootloader carries the boot stage's and the monitor's code from
    ``source_root`` (default: the installed ``bastion`` package).

    Raises:
        VendorError: ``root`` already holds a vendor and ``force`` is False, a
            trial limit is out of range, or the sources are missing.
    """
    paths = VendorPaths(root)
    if paths.ca_cert.exists() and not force:
        raise VendorError(f"{root} already holds a vendor")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca_key, boot_key, os_key = generate_private_key(), generate_private_key(), generate_private_key()
    # The root must outlive every DeviceID certificate it endorses, or the whole
    # fleet's chains would expire with it.
    ca_cert = certs.make_ca(f"{name} Root CA", ca_key, now=now, organization=name, lifetime=VENDOR_CA_LIFETIME)
    config = BootConfig((os_key.public_key(),), trial_boot_limit, trial_timeout_s)
    try:
        BootConfig.from_json(config.to_json())  # refuse out-of-range limits before writing anything
    except BootConfigError as exc:
        raise VendorError(f"the boot configuration is invalid: {exc.reason}") from exc
    image = io.BytesIO()
    try:
        build_bootloader_image(
            image,
            config,
            boot_key,
            version=BOOTLOADER_VERSION,
            security_version=BOOTLOADER_SECURITY_VERSION,
            source_root=source_root,
        )
    except ImageError as exc:
        raise VendorError(f"the bootloader image cannot be built: {exc}") from exc
    for path, key in ((paths.ca_key, ca_key), (paths.boot_key, boot_key), (paths.os_key, os_key)):
        atomic_write_bytes(path, private_key_pem(key), mode=0o600)
    atomic_write_bytes(paths.boot_pub, public_key_pem(boot_key.public_key()))
    atomic_write_bytes(paths.os_pub, public_key_pem(os_key.public_key()))
    atomic_write_bytes(paths.bootloader, image.getvalue())
    atomic_write_bytes(paths.ca_cert, certs.certificate_pem(ca_cert))  # last: marks the vendor complete
    return paths


def _read(path: Path) -> bytes:
    try:
        return read_bounded(path, MAX_VENDOR_FILE_BYTES)
    except OSError as exc:
        raise VendorError(f"cannot read {path}: {exc.strerror}") from exc
    except FileTooLargeError as exc:
        raise VendorError(f"{path} is larger than {MAX_VENDOR_FILE_BYTES} bytes") from exc


def load_vendor(root: Path) -> Vendor:
    """Load and check a vendor directory.

    Raises:
        VendorError: missing or unreadable files, the bootloader is not
            signed by the vendor's boot key, or it predates measured boot code
            (the error says how to re-provision).
    """
    paths = VendorPaths(root)
    if not paths.ca_cert.exists():
        raise VendorError(f"{root} holds no vendor")
    try:
        ca_key = load_private_key_pem(_read(paths.ca_key))
        ca_cert = certs.load_certificate_pem(_read(paths.ca_cert))
        boot_pub = load_public_key_pem(_read(paths.boot_pub))
    except CryptoError as exc:
        raise VendorError(f"the vendor files in {root} are invalid: {exc}") from exc
    image = _read(paths.bootloader)
    try:
        header = verify_image(io.BytesIO(image), [boot_pub], limits=BOOTLOADER_LIMITS)
    except ImageError as exc:
        raise VendorError(f"{paths.bootloader} is not signed by the vendor boot key: {exc}") from exc
    if header.image_type is not ImageType.BOOTLOADER:
        raise VendorError(f"{paths.bootloader} is not a bootloader image")
    try:
        read_boot_config(image, header)
    except BootError as exc:
        raise VendorError(f"{paths.bootloader}: {exc.reason}") from exc
    return Vendor(paths, ca_key, ca_cert, boot_pub, image, header)
