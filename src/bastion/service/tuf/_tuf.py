"""The python-tuf and securesystemslib names this package uses, imported in one place.

Both libraries re-export these names from private modules without ``__all__``,
which ``mypy --strict`` (no implicit re-export) flags; the ignores live here only.
"""

from __future__ import annotations

from securesystemslib.signer import CryptoSigner, SSlibKey  # type: ignore[attr-defined]
from tuf.api.metadata import (  # type: ignore[attr-defined]
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

__all__ = [
    "CryptoSigner",
    "MetaFile",
    "Metadata",
    "Root",
    "SSlibKey",
    "Signed",
    "Snapshot",
    "TargetFile",
    "Targets",
    "Timestamp",
]
