"""Exceptions raised by :mod:`bastion.os.sandbox`.

The tree::

    SandboxError
    ├── SandboxUnavailableError   a feature the sandbox needs is missing (names it and the fix)
    └── SandboxStartError         bubblewrap could not set the sandbox up for one app

Messages carry paths and feature names, never secrets.
"""

from __future__ import annotations

__all__ = ["SandboxError", "SandboxStartError", "SandboxUnavailableError"]


class SandboxError(Exception):
    """Root of the sandbox errors."""


class SandboxUnavailableError(SandboxError):
    """The host lacks something the app sandbox needs; apps do not start.

    Attributes:
        missing: what is missing, e.g. ``bubblewrap (bwrap) is not on PATH``.
        fix: the command or setting that provides it, e.g. ``apt-get install bubblewrap``.
    """

    def __init__(self, missing: str, fix: str) -> None:
        super().__init__(f"the app sandbox is unavailable: {missing} (fix: {fix})")
        self.missing = missing
        self.fix = fix


class SandboxStartError(SandboxError):
    """Bubblewrap failed before the app ran (its own message is carried, bounded)."""
