"""Semantic version precedence (semver.org section 11), for choosing the newest image.

Example:
    >>> sorted(["1.10.0", "1.2.0", "1.2.0-rc.1"], key=semver_key)
    ['1.2.0-rc.1', '1.2.0', '1.10.0']
"""

from __future__ import annotations

import re

__all__ = ["semver_key"]

_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")

# A sort key: (major, minor, patch, is_release, prerelease identifiers).
_Key = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


def semver_key(version: str) -> _Key:
    """A key that sorts versions by semantic-version precedence.

    Build metadata is ignored; a pre-release sorts before its release; numeric
    identifiers sort numerically and before alphanumeric ones. A string that is
    not a semantic version sorts before every version (image headers are
    validated on upload, so this is only a safe default).
    """
    match = _SEMVER.fullmatch(version)
    if match is None:
        return (-1, -1, -1, 0, ())
    major, minor, patch, pre = match.groups()
    idents: tuple[tuple[int, int, str], ...] = ()
    if pre:
        idents = tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in pre.split("."))
    return (int(major), int(minor), int(patch), 0 if pre else 1, idents)
