"""Exceptions raised by :mod:`bastion.images`.

The tree::

    ImageError
    ├── ImageFormatError      not an image package: bad magic, unsupported format
    │                         version, header malformed or over its bound, payload
    │                         size over its bound, wrong image type
    ├── ImageSignatureError   not signed by a trusted key, or the signature fails
    ├── ImagePayloadError     payload shorter or longer than the header says, or
    │                         its digest differs
    ├── ImageArchiveError     an OS or app payload archive that is malformed or
    │                         unsafe (links, absolute paths, "..", over its bounds)
    ├── ImageBuildError       an image cannot be built (missing sources, bad input)
    ├── ManifestError         an app manifest with errors, each with its JSON path
    │                         (bastion.images.manifest)
    ├── DeltaError            a delta patch that cannot be made or applied, or whose
    │                         result has another digest (bastion.images.delta)
    └── CapabilityError       a device capability file that is malformed, not signed
                              by a trusted key, for another device or tenant, or
                              outside its validity (bastion.images.capability);
                              ``reason`` names the check

Each message names the check that failed; none carries key material.
"""

from __future__ import annotations

__all__ = [
    "CapabilityError",
    "ImageArchiveError",
    "ImageBuildError",
    "ImageError",
    "ImageFormatError",
    "ImagePayloadError",
    "ImageSignatureError",
]


class ImageError(Exception):
    """Root of all errors raised by :mod:`bastion.images`."""


class ImageFormatError(ImageError):
    """The bytes are not a well-formed image package within its bounds."""


class ImageSignatureError(ImageError):
    """The image is not signed by a trusted key, or its signature does not verify."""


class ImagePayloadError(ImageError):
    """The payload does not match the size or digest in the signed header."""


class ImageArchiveError(ImageError):
    """An OS payload archive is malformed or unsafe to extract."""


class ImageBuildError(ImageError):
    """An image could not be built."""


class CapabilityError(ImageError):
    """A device capability file failed a check.

    Attributes:
        reason: the stable name of the failed check, one of ``malformed``,
            ``unknown_signer``, ``bad_signature``, ``wrong_device``,
            ``wrong_tenant``, ``not_yet_valid``, ``expired`` (see
            :mod:`bastion.images.capability`). Callers record it; the message
            is for people.
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason
