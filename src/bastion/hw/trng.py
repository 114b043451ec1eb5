"""The chip's true random number generator, behind a one-method interface.

Tests inject a deterministic :class:`Trng`; the chip uses :class:`OsTrng`.
"""

from __future__ import annotations

import os
from typing import Protocol

__all__ = ["OsTrng", "Trng"]


class Trng(Protocol):
    """A source of random bytes."""

    def read(self, size: int) -> bytes:
        """Return ``size`` random bytes."""
        ...


class OsTrng:
    """The emulated TRNG: the operating system's CSPRNG."""

    def read(self, size: int) -> bytes:
        """Return ``size`` bytes from ``os.urandom``."""
        return os.urandom(size)
