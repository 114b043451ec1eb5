"""Semantic version precedence (SemVer 2.0.0, section 11), shared by the device and the service.

Image headers carry semantic versions; the bootloader and the monitor ask "is
this OS newer?", the update agent compares app versions, and the service picks
the newest image of a feed. One implementation serves them all.

Example:
    >>> compare_versions("1.10.0", "1.9.0")
    1
    >>> compare_versions("1.0.0-rc.1", "1.0.0")
    -1
    >>> sorted(["1.10.0", "1.2.0", "1.2.0-rc.1"], key=semver_key)
    ['1.2.0-rc.1', '1.2.0', '1.10.0']
"""

from __future__ import annotations

import functools
import re

__all__ = ["MAX_VERSION_CHARS", "compare_versions", "is_newer", "lenient_semver_key", "semver_key"]

#: Bound on a version string (as the image header's).
MAX_VERSION_CHARS = 64
_SEMVER = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?"
)
#: (major, minor, patch, 1 for a release / 0 for a pre-release, pre-release identifiers)
SemverKey = tuple[int, int, int, int, tuple[tuple[int, int, str], ...]]


@functools.lru_cache(maxsize=1024)
def semver_key(version: str) -> SemverKey:
    """A key whose order is semantic-version precedence (build metadata ignored; memoized, bounded).

    Raises:
        ValueError: ``version`` is not a semantic version, or is too long.
    """
    if len(version) > MAX_VERSION_CHARS:
        raise ValueError("version string is too long")
    match = _SEMVER.fullmatch(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    # 11.3: a pre-release precedes its release; 11.4: numeric identifiers sort
    # numerically and below alphanumeric ones, and a longer list follows its prefix.
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, ids)


@functools.lru_cache(maxsize=1024)
def lenient_semver_key(version: str) -> SemverKey:
    """Like :func:`semver_key`, but a string that is not a version sorts before every version."""
    try:
        return semver_key(version)
    except ValueError:
        return (-1, -1, -1, 0, ())


def compare_versions(left: str, right: str) -> int:
    """Return -1, 0 or 1 as ``left`` precedes, equals or follows ``right``.

    Raises:
        ValueError: either string is not a semantic version.
    """
    a, b = semver_key(left), semver_key(right)
    return (a > b) - (a < b)


def is_newer(candidate: str, running: str) -> bool:
    """Whether ``candidate`` strictly follows ``running``.

    Raises:
        ValueError: either string is not a semantic version.
    """
    return compare_versions(candidate, running) > 0
