"""Install one app target: download (TUF-checked), verify the publisher, unpack beside the old version.

The image must be signed by one of the device's pinned app-signing keys (config
``app_signing_keys``), so an image pushed by someone holding only the service's
online TUF keys is refused (``signature``). Its header must name the component
and version its target claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bastion.crypto.keys import PublicKey
from bastion.images.errors import ImageError, ImagePayloadError, ImageSignatureError
from bastion.images.package import ImageHeader, ImageType, verify_image
from bastion.os.apps.store import AppStore, InstalledApp, check_component_id, check_version
from bastion.os.updates.errors import UpdateFailedError, UpdateRefusedError
from bastion.os.updates.tuf_client import GroupRepository, Target

__all__ = ["install_app_target", "target_identity", "verify_app_image"]


def target_identity(target: Target) -> tuple[str, str, str]:
    """``(image_type, component_id, version)`` from a target's ``custom.bastion``.

    Raises:
        UpdateRefusedError: (``component``) the custom data is missing or malformed.
    """
    meta: Any = target.custom.get("bastion")
    if not isinstance(meta, dict):
        raise UpdateRefusedError("component", f"{target.path} has no bastion custom data")
    kind, cid, version = meta.get("image_type"), meta.get("component_id"), meta.get("version")
    if not all(isinstance(v, str) for v in (kind, cid, version)):
        raise UpdateRefusedError("component", f"{target.path} has malformed bastion custom data")
    return str(kind), str(cid), str(version)


def verify_app_image(path: Path, keys: Sequence[PublicKey], *, component_id: str, version: str) -> ImageHeader:
    """Verify an app image against the pinned keys and the identity its target claims.

    Raises:
        UpdateRefusedError: ``signature``, ``hash``, ``format``, ``component`` or ``version``.
    """
    if not keys:
        raise UpdateRefusedError("signature", "no app-signing key is pinned on this device")
    try:
        with path.open("rb") as stream:
            header = verify_image(stream, keys)
    except ImageSignatureError as exc:
        raise UpdateRefusedError("signature", str(exc)) from exc
    except ImagePayloadError as exc:
        raise UpdateRefusedError("hash", str(exc)) from exc
    except ImageError as exc:
        raise UpdateRefusedError("format", str(exc)) from exc
    except OSError as exc:
        raise UpdateFailedError(f"cannot read the downloaded image: {exc.strerror or exc}") from exc
    if header.image_type is not ImageType.APP:
        raise UpdateRefusedError("component", f"the image is a {header.image_type.value} image, not an app")
    if header.component_id != component_id:
        raise UpdateRefusedError("component", "the image's component differs from its target's")
    if header.version != version:
        raise UpdateRefusedError("version", "the image's version differs from its target's")
    return header


def install_app_target(
    repo: GroupRepository, target: Target, *, keys: Sequence[PublicKey], store: AppStore, staging_dir: Path
) -> InstalledApp:
    """Download, verify and install one app target (its ``current`` link switched atomically).

    Raises:
        UpdateRefusedError: the target or image failed a check.
        UpdateUnavailableError: the download failed.
        UpdateFailedError: unpacking or writing flash failed.
    """
    _, component_id, version = target_identity(target)
    check_component_id(component_id)
    check_version(version)
    staging_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = staging_dir / f"app-{target.sha256[:16]}.img"
    try:
        repo.download(target, path)
        verify_app_image(path, keys, component_id=component_id, version=version)
        return store.install(path, component_id=component_id, version=version)
    finally:
        path.unlink(missing_ok=True)
