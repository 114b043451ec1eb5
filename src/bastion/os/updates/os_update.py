"""Stage an OS update: delta from the running image when possible, else the full image.

1. If the repository offers a delta whose ``from`` is the running image's
   measurement (SHA-256 of the whole package, as in the Alias certificate's
   DiceTcbInfo) and whose ``to`` is the OS target, download it (ngclient checks
   its length and hash), rebuild the full image with
   :func:`bastion.images.delta.apply_delta`, then check the result against the
   OS target's TUF length and hashes and the publisher signature.
2. If anything in step 1 fails, download the full image instead.
3. Either way the staged image under ``DEV/os-state/staging/`` has passed the TUF
   hash check and the signature check against the pinned OS-publisher keys, with
   the component, version and security version the target's custom data claims.

The monitor verifies the staged image again before it writes a slot.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PublicKey, load_public_key_bytes, load_public_key_pem
from bastion.hw.flash import PARTITION_SIZES, Partition
from bastion.images.errors import ImageError, ImagePayloadError, ImageSignatureError
from bastion.images.os_payload import BOOT_CONFIG_FILE, BOOTLOADER_RUNTIME, read_payload_file
from bastion.images.package import ImageHeader, ImageLimits, ImageType, verify_image
from bastion.os.updates.errors import UpdateError, UpdateFailedError, UpdateRefusedError
from bastion.os.updates.tuf_client import GroupRepository, Target

__all__ = ["RunningOs", "StagedOs", "pinned_os_keys", "stage_os_update", "verify_staged_image"]

_log = logging.getLogger("bastion.os.updates.os")
#: The bootloader partition's layout (bastion.boot.config): magic, u16 key length, SEC1 key, image.
_BL_MAGIC = b"BSTNBLP\x00"
_BL_PREFIX = struct.Struct(">8sH")
_SEC1_KEY_BYTES = 65
#: Bounds on the bootloader image (its payload fits the partition) and on its boot configuration
#: (as bastion.boot.config's).
_BOOTLOADER_LIMITS = ImageLimits(max_header_bytes=16 * 1024, max_payload_bytes=PARTITION_SIZES[Partition.BOOTLOADER])
_MAX_BOOT_CONFIG_BYTES = 64 * 1024


@dataclass(frozen=True)
class RunningOs:
    """The OS this process runs.

    Attributes:
        version: its version.
        security_version: its security version.
        boot_slot: ``"A"`` or ``"B"``.
        measurement: hex SHA-256 of its image package, if known.
        image_path: its slot image, read-only, as the supervisor gave it (the delta base), if any.
    """

    version: str
    security_version: int
    boot_slot: str
    measurement: str | None = None
    image_path: Path | None = None


@dataclass(frozen=True)
class StagedOs:
    """A verified OS image ready for the monitor's ``install_os``."""

    path: Path
    header: ImageHeader
    via_delta: bool
    delta_error: str | None = None


def pinned_os_keys(boot_config: Path | None) -> tuple[PublicKey, ...]:
    """The OS-publisher keys of the boot configuration in the bootloader partition.

    The ROM checked this partition against the fuses at boot; here it is read
    again only to check images before they are handed to the monitor (which
    checks them once more). ``boot_config`` is the partition file as the boot
    supervisor bound it into the OS's namespace (read-only, outside any
    ``flash/`` path). The layout is :mod:`bastion.boot.config`'s, decoded
    here because the OS image does not ship ``bastion.boot``.

    Raises:
        UpdateFailedError: no partition was given, or it is unreadable or does not verify.
    """
    if boot_config is None:
        raise UpdateFailedError("the OS was not given the bootloader partition")
    try:
        with boot_config.open("rb") as handle:
            data = handle.read(PARTITION_SIZES[Partition.BOOTLOADER] + 1)
        magic, key_length = _BL_PREFIX.unpack_from(data)
        if magic != _BL_MAGIC or key_length != _SEC1_KEY_BYTES:
            raise UpdateFailedError("the bootloader partition has a bad layout")
        boot_key = load_public_key_bytes(data[_BL_PREFIX.size : _BL_PREFIX.size + key_length])
        image = data[_BL_PREFIX.size + key_length :]
        verify_image(io.BytesIO(image), [boot_key], limits=_BOOTLOADER_LIMITS)
        _, config = read_payload_file(
            io.BytesIO(image),
            BOOT_CONFIG_FILE,
            max_bytes=_MAX_BOOT_CONFIG_BYTES,
            kind=BOOTLOADER_RUNTIME,
            image_limits=_BOOTLOADER_LIMITS,
        )
        value = json.loads(config)
        pems = value.get("os_publisher_keys") if isinstance(value, dict) else None
        if not isinstance(pems, list) or not pems or not all(isinstance(p, str) for p in pems):
            raise UpdateFailedError("the boot configuration pins no OS-publisher key")
        return tuple(load_public_key_pem(p.encode()) for p in pems)
    except (OSError, struct.error, ValueError, CryptoError, ImageError) as exc:
        raise UpdateFailedError(f"cannot read the pinned OS keys: {exc}") from exc


def verify_staged_image(path: Path, target: Target, keys: Sequence[PublicKey], running: RunningOs) -> ImageHeader:
    """Check a staged OS image: TUF length and hashes, publisher signature, claims.

    Raises:
        UpdateRefusedError: ``hash``, ``length``, ``signature``, ``component`` or ``version``.
    """
    from tuf.api import exceptions as tuf_exceptions

    try:
        with path.open("rb") as stream:
            target.info.verify_length_and_hashes(stream)  # TUF 5.7.3: the target's signed length and hashes
            stream.seek(0)
            header = verify_image(stream, keys)
    except tuf_exceptions.LengthOrHashMismatchError as exc:
        raise UpdateRefusedError("hash", f"{target.path}: {exc}") from exc
    except ImageSignatureError as exc:
        raise UpdateRefusedError("signature", f"{target.path}: {exc}") from exc
    except ImagePayloadError as exc:
        raise UpdateRefusedError("hash", f"{target.path}: {exc}") from exc
    except ImageError as exc:
        raise UpdateRefusedError("format", f"{target.path}: {exc}") from exc
    except OSError as exc:
        raise UpdateFailedError(f"cannot read the staged image: {exc.strerror or exc}") from exc
    meta = target.custom.get("bastion", {})
    if header.image_type is not ImageType.OS:
        raise UpdateRefusedError("component", f"{target.path} is a {header.image_type.value} image, not an OS")
    if not isinstance(meta, dict) or header.component_id != meta.get("component_id"):
        raise UpdateRefusedError("component", f"{target.path}: the image's component differs from the target's")
    if header.version != meta.get("version"):
        raise UpdateRefusedError("version", f"{target.path}: the image's version differs from the target's")
    if header.security_version < running.security_version:
        raise UpdateRefusedError("version", f"{target.path}: security version below the running OS's")
    return header


def _from_delta(
    *,
    repo: GroupRepository,
    full: Target,
    delta: Target,
    running: RunningOs,
    keys: Sequence[PublicKey],
    out: Path,
) -> ImageHeader:
    from bastion.images.delta import DeltaError, DeltaMethod, apply_delta

    spec = delta.custom.get("delta", {})
    if running.image_path is None:
        raise UpdateFailedError("the running image is not readable")
    patch = repo.download(delta, out.with_suffix(".patch"))
    try:
        try:
            method = DeltaMethod(spec.get("method"))
            apply_delta(running.image_path, patch, out, method=method, expected_sha256=full.sha256)
        except (DeltaError, ImageError, ValueError) as exc:
            raise UpdateFailedError(f"the delta does not apply: {exc}") from exc
        return verify_staged_image(out, full, keys, running)
    finally:
        patch.unlink(missing_ok=True)


def stage_os_update(
    repo: GroupRepository,
    full: Target,
    deltas: Sequence[Target],
    running: RunningOs,
    *,
    keys: Sequence[PublicKey],
    staging_dir: Path,
) -> StagedOs:
    """Stage ``full`` (an OS target) under ``staging_dir``, through a matching delta if any.

    Raises:
        UpdateRefusedError: the full image failed a check.
        UpdateUnavailableError: the full image could not be downloaded.
        UpdateFailedError: staging failed locally.
    """
    staging_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    meta = full.custom.get("bastion", {})
    version = str(meta.get("version", "unknown")) if isinstance(meta, dict) else "unknown"
    out = staging_dir / f"os-{full.sha256[:16]}.img"
    delta_error: str | None = None
    for delta in deltas:
        spec = delta.custom.get("delta")
        if not (isinstance(spec, dict) and spec.get("to") == full.path and spec.get("from") == running.measurement):
            continue
        try:
            header = _from_delta(repo=repo, full=full, delta=delta, running=running, keys=keys, out=out)
        except UpdateError as exc:
            delta_error = str(exc)
            _log.warning("delta %s failed (%s); falling back to the full image", delta.path, exc)
            out.unlink(missing_ok=True)
            break
        _log.info("OS %s rebuilt from delta %s (%d bytes)", version, delta.path, delta.length)
        return StagedOs(out, header, via_delta=True)
    try:
        repo.download(full, out)
        header = verify_staged_image(out, full, keys, running)
    except BaseException:
        with contextlib.suppress(OSError):
            out.unlink(missing_ok=True)
        raise
    _log.info("OS %s downloaded in full (%d bytes)", version, full.length)
    return StagedOs(out, header, via_delta=False, delta_error=delta_error)
