"""TUF repositories of device groups: publish, refresh, and serve them as static files.

Example:
    >>> from bastion.service.tuf import TargetSpec, publish_group     # doctest: +SKIP
    >>> publish_group(settings, group_id, [TargetSpec(path, sha, size, custom)], now=now)  # doctest: +SKIP

See docs/updates.md, "TUF repositories".
"""

from __future__ import annotations

from bastion.service.tuf.errors import (
    CorruptRepository,
    InvalidGroupId,
    InvalidTarget,
    TufError,
    TufKeyError,
    UnknownGroup,
)
from bastion.service.tuf.repository import (
    PublishResult,
    TargetSpec,
    group_root,
    list_groups,
    publish_group,
    publish_lock,
    published_targets,
    refresh_all,
    refresh_group,
    remove_group,
)

__all__ = [
    "CorruptRepository",
    "InvalidGroupId",
    "InvalidTarget",
    "PublishResult",
    "TargetSpec",
    "TufError",
    "TufKeyError",
    "UnknownGroup",
    "group_root",
    "list_groups",
    "publish_group",
    "publish_lock",
    "published_targets",
    "refresh_all",
    "refresh_group",
    "remove_group",
]
