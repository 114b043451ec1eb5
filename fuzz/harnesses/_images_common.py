"""Shared helpers of the image harnesses: a fixed signing key, tiny archives and packages."""

from __future__ import annotations

import io
import tarfile

from cryptography.hazmat.primitives.asymmetric import ec

from bastion.images.package import ImageType, build_image

KEY = ec.derive_private_key(0xB457_3001, ec.SECP256R1())
PUBLIC = KEY.public_key()
OS_COMPONENT = "6f0b3a52-5f0e-4d55-9d38-2a3f3b1f5e01"
APP_COMPONENT = "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10"


def tar(files: list[tuple[str, bytes]]) -> bytes:
    """A ustar archive of regular files, in order, without the padding to a 10 KiB record (small seeds)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))
        end = archive.offset
    return buffer.getvalue()[:end] + bytes(2 * tarfile.BLOCKSIZE)  # the two zero blocks that end an archive


def package(payload: bytes, image_type: ImageType, *, component: str = OS_COMPONENT, version: str = "1.0.0") -> bytes:
    """A signed image package of ``payload``."""
    out = io.BytesIO()
    build_image(
        out,
        io.BytesIO(payload),
        image_type=image_type,
        component_id=component,
        version=version,
        security_version=1,
        key=KEY,
    )
    return out.getvalue()
