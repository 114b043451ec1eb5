"""The bootloader image: the boot stage's and the monitor's code, with the boot configuration.

The payload is a runtime archive of the OS image format
(:data:`~bastion.images.os_payload.BOOTLOADER_RUNTIME`), built by the one
deterministic archive builder (:func:`bastion.images.os_build.build_runtime_payload`)::

    bastion-bootloader.json      manifest: version, security version, SHA-256 of every file
    bastion/__init__.py          the sources of bastion.{boot,monitor,hw,images,crypto}
    bastion/boot/...
    boot-config.json             the boot configuration (:class:`BootConfig`)

The ROM verifies the package against the fused boot key and measures all of
it, so one changed byte of the boot stage or the monitor changes ``CDI_BL``,
the Alias key and the DiceTcbInfo's first FWID. It then unpacks the payload to
``DEV/run/bl-<measurement hex[:16]>/``; the bootloader stage and the monitor run
from there (``python -P`` with ``PYTHONPATH`` = that directory).

Bootloader images made before the image carried its code hold a bare boot
configuration (JSON) as the payload. They are refused with an error that names
re-provisioning (ADR 0006).

Example::

    header = build_bootloader_image(out, BootConfig((os_pub,)), boot_key, version="1.0.0", security_version=1)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from bastion.boot.config import (
    BOOT_CONFIG_FILE,
    BOOTLOADER_ARCHIVE_LIMITS,
    BOOTLOADER_COMPONENT_ID,
    BOOTLOADER_LIMITS,
    BOOTLOADER_PACKAGES,
    MAX_BOOT_CONFIG_BYTES,
    BootConfig,
)
from bastion.boot.errors import BootloaderVerificationError
from bastion.crypto.keys import PrivateKey
from bastion.images.errors import ImageError
from bastion.images.os_build import build_runtime_payload
from bastion.images.os_payload import (
    BOOTLOADER_RUNTIME,
    OsManifest,
    read_os_manifest,
    read_payload_file,
    runtime_is_intact,
    unpack_os_stream,
)
from bastion.images.package import ImageHeader, ImageType, build_image

__all__ = [
    "LEGACY_BOOTLOADER_HINT",
    "build_bootloader_image",
    "build_bootloader_payload",
    "install_bootloader_runtime",
    "read_boot_config",
]

#: What to do about a bootloader image that predates measured boot code.
LEGACY_BOOTLOADER_HINT = (
    "this bootloader image holds only a boot configuration (it was made before the bootloader "
    "carried its own code); re-provision: `bastion vendor init --force --dir VENDOR`, then "
    "`bastion device manufacture --dir NEW_DEV --vendor VENDOR` and `bastion device flash`"
)


def build_bootloader_payload(
    config: BootConfig, *, version: str, security_version: int, source_root: Path | None = None
) -> tuple[bytes, OsManifest]:
    """Return the deterministic bootloader archive and its manifest.

    Args:
        config: the boot configuration to carry.
        version: the bootloader version (semantic version), also in the manifest.
        security_version: its anti-rollback security version.
        source_root: the ``bastion`` package directory (default: the installed one).

    Raises:
        ImageBuildError: sources missing.
    """
    return build_runtime_payload(
        BOOTLOADER_RUNTIME,
        version,
        security_version,
        BOOTLOADER_PACKAGES,
        extra_files={BOOT_CONFIG_FILE: config.to_json()},
        source_root=source_root,
    )


def build_bootloader_image(
    out: BinaryIO,
    config: BootConfig,
    key: PrivateKey,
    *,
    version: str,
    security_version: int,
    source_root: Path | None = None,
) -> ImageHeader:
    """Write a bootloader image package signed by the boot key ``key`` to ``out``.

    The same sources, configuration, version and key give a byte-identical image
    (deterministic archive, RFC 6979 signature), so its measurement can be rebuilt.

    Raises:
        ImageBuildError: bad version, sources missing, or the payload is over its bound.
    """
    payload, _ = build_bootloader_payload(
        config, version=version, security_version=security_version, source_root=source_root
    )
    return build_image(
        out,
        io.BytesIO(payload),
        image_type=ImageType.BOOTLOADER,
        component_id=BOOTLOADER_COMPONENT_ID,
        version=version,
        security_version=security_version,
        key=key,
        limits=BOOTLOADER_LIMITS,
    )


def _check_manifest(manifest: OsManifest, header: ImageHeader) -> None:
    if (manifest.version, manifest.security_version) != (header.version, header.security_version):
        raise BootloaderVerificationError("the bootloader manifest disagrees with its signed header", check="archive")


def read_boot_config(image: bytes, header: ImageHeader) -> BootConfig:
    """Return the boot configuration of a verified bootloader image.

    Raises:
        BootloaderVerificationError: a legacy image (check ``format``), or the
            archive is malformed or disagrees with its header (check ``archive``).
        BootConfigError: the boot configuration is unusable.
    """
    payload_start = len(image) - header.payload_size
    if image[payload_start : payload_start + 1] == b"{":
        raise BootloaderVerificationError(LEGACY_BOOTLOADER_HINT, check="format")
    try:
        manifest, data = read_payload_file(
            io.BytesIO(image),
            BOOT_CONFIG_FILE,
            max_bytes=MAX_BOOT_CONFIG_BYTES,
            kind=BOOTLOADER_RUNTIME,
            limits=BOOTLOADER_ARCHIVE_LIMITS,
            image_limits=BOOTLOADER_LIMITS,
        )
    except ImageError as exc:
        raise BootloaderVerificationError(f"the bootloader payload is invalid ({exc})", check="archive") from exc
    _check_manifest(manifest, header)
    return BootConfig.from_json(data)


def install_bootloader_runtime(image: bytes, header: ImageHeader, runtime_dir: Path) -> None:
    """Unpack a verified bootloader image's payload to ``runtime_dir``, unless an intact copy is there.

    The intact check hashes every file against the manifest and allows nothing
    else, not even a ``__pycache__`` (the stage and the monitor run with bytecode
    writing off, so one there was planted). A tampered tree is replaced.

    Raises:
        BootloaderVerificationError: the archive is malformed or unsafe, or
            disagrees with its header (check ``archive``).
    """
    try:
        manifest = read_os_manifest(io.BytesIO(image), image_limits=BOOTLOADER_LIMITS, kind=BOOTLOADER_RUNTIME)
        _check_manifest(manifest, header)
        if not runtime_is_intact(runtime_dir, manifest, kind=BOOTLOADER_RUNTIME, allow_pycache=False):
            unpack_os_stream(
                io.BytesIO(image),
                runtime_dir,
                limits=BOOTLOADER_ARCHIVE_LIMITS,
                image_limits=BOOTLOADER_LIMITS,
                kind=BOOTLOADER_RUNTIME,
            )
    except ImageError as exc:
        raise BootloaderVerificationError(
            f"the bootloader payload cannot be unpacked ({exc})", check="archive"
        ) from exc
