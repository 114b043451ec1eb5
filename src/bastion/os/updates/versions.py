"""Semantic version precedence (SemVer 2.0.0, section 11), for "is this target newer?".

The same rules as :mod:`bastion.boot.semver`, which the OS image does not ship
(the image holds only the packages in ``bastion.images.os_build.OS_PACKAGES``).
TODO: move one copy to :mod:`bastion.images` and use it from boot, os and service.

Example:
    >>> compare_versions("1.10.0", "1.9.0")
    1
    >>> compare_versions("1.0.0-rc.1", "1.0.0")
    -1
"""

from __future__ import annotations

import re

__all__ = ["MAX_VERSION_CHARS", "compare_versions", "is_newer"]

#: Bound on a version string (as the image header's).
MAX_VERSION_CHARS = 64
_SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)
_Key = tuple[int, int, int, tuple[tuple[int, int, str], ...] | None]


def _key(version: str) -> _Key:
    if len(version) > MAX_VERSION_CHARS:
        raise ValueError("version string is too long")
    match = _SEMVER.match(version)
    if match is None:
        raise ValueError(f"{version!r} is not a semantic version")
    major, minor, patch, pre = match.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), None)
    # 11.4: numeric identifiers sort numerically and below alphanumeric ones.
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), ids)


def compare_versions(left: str, right: str) -> int:
    """Return -1, 0 or 1 as ``left`` precedes, equals or follows ``right`` (build metadata ignored).

    Raises:
        ValueError: either string is not a semantic version.
    """
    a, b = _key(left), _key(right)
    if a[:3] != b[:3]:
        return -1 if a[:3] < b[:3] else 1
    # 11.3: a pre-release precedes its release.
    if a[3] == b[3]:
        return 0
    if a[3] is None:
        return 1
    if b[3] is None:
        return -1
    return -1 if a[3] < b[3] else 1


def is_newer(candidate: str, running: str) -> bool:
    """Whether ``candidate`` strictly follows ``running``.

    Raises:
        ValueError: either string is not a semantic version.
    """
    return compare_versions(candidate, running) > 0
