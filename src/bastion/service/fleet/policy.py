"""Update policies, OS feeds, maintenance windows and the default device groups of a product.

Example:
    >>> parse_window("02:30", 90)
    ('02:30', 90)
    >>> [g.name for g in DEFAULT_GROUPS][0]
    'Development'
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from bastion.service.errors import InvalidRequest

__all__ = [
    "DEFAULT_GROUPS",
    "MAX_NAME_CHARS",
    "MAX_WINDOW_MINUTES",
    "DefaultGroup",
    "OsFeed",
    "UpdatePolicy",
    "parse_feed",
    "parse_name",
    "parse_policy",
    "parse_window",
]

#: Bound on product and device group names.
MAX_NAME_CHARS = 100
#: A maintenance window lasts at most one day.
MAX_WINDOW_MINUTES = 24 * 60
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)", re.ASCII)  # \d of a str pattern is any script's digit


class UpdatePolicy(enum.StrEnum):
    """What a device group receives (Azure Sphere's names)."""

    UPDATE_ALL = "UpdateAll"
    NO_3RD_PARTY_APP_UPDATES = "No3rdPartyAppUpdates"
    NO_UPDATES = "NoUpdates"


class OsFeed(enum.StrEnum):
    """The OS feed a group follows. ``retail-eval`` sees evaluation images ahead of ``retail``."""

    RETAIL = "retail"
    RETAIL_EVAL = "retail-eval"


@dataclass(frozen=True)
class DefaultGroup:
    """One of the device groups every new product gets."""

    name: str
    policy: UpdatePolicy
    feed: OsFeed


#: docs/updates.md "Fleet model": the five groups created with a product.
DEFAULT_GROUPS: tuple[DefaultGroup, ...] = (
    DefaultGroup("Development", UpdatePolicy.NO_3RD_PARTY_APP_UPDATES, OsFeed.RETAIL),
    DefaultGroup("Field Test", UpdatePolicy.UPDATE_ALL, OsFeed.RETAIL),
    DefaultGroup("Production", UpdatePolicy.UPDATE_ALL, OsFeed.RETAIL),
    DefaultGroup("Field Test OS Evaluation", UpdatePolicy.UPDATE_ALL, OsFeed.RETAIL_EVAL),
    DefaultGroup("Production OS Evaluation", UpdatePolicy.UPDATE_ALL, OsFeed.RETAIL_EVAL),
)


def parse_policy(value: str) -> UpdatePolicy:
    """Return the policy named ``value``.

    Raises:
        InvalidRequest: not one of the three policies (the detail lists them).
    """
    try:
        return UpdatePolicy(value)
    except ValueError:
        names = ", ".join(p.value for p in UpdatePolicy)
        raise InvalidRequest(
            f"unknown update policy {value[:40]!r}; use one of {names}", code="invalid_policy"
        ) from None


def parse_feed(value: str) -> OsFeed:
    """Return the OS feed named ``value``.

    Raises:
        InvalidRequest: not ``retail`` or ``retail-eval``.
    """
    try:
        return OsFeed(value)
    except ValueError:
        names = ", ".join(f.value for f in OsFeed)
        raise InvalidRequest(f"unknown OS feed {value[:40]!r}; use one of {names}", code="invalid_feed") from None


def parse_name(value: str, what: str) -> str:
    """Return a trimmed, non-empty name of at most :data:`MAX_NAME_CHARS` printable characters.

    Raises:
        InvalidRequest: empty, too long, contains ``/`` or control characters.
    """
    name = value.strip()
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable() or "/" in name:
        raise InvalidRequest(
            f"a {what} name is 1 to {MAX_NAME_CHARS} printable characters without '/'", code="invalid_name"
        )
    return name


def parse_window(start: str | None, duration_minutes: int | None) -> tuple[str | None, int | None]:
    """Validate a maintenance window: both parts or neither (``None`` = updates at any time).

    Raises:
        InvalidRequest: only one part given, ``start`` not ``HH:MM`` (UTC), or the
            duration outside 1..1440 minutes.
    """
    if start is None and duration_minutes is None:
        return None, None
    if start is None or duration_minutes is None:
        raise InvalidRequest(
            "a maintenance window needs both a start (HH:MM, UTC) and a duration in minutes", code="invalid_window"
        )
    if not _HHMM.fullmatch(start):
        raise InvalidRequest(f"window start {start[:20]!r} is not HH:MM (24-hour, UTC)", code="invalid_window")
    if not 1 <= duration_minutes <= MAX_WINDOW_MINUTES:
        raise InvalidRequest(
            f"window duration must be 1 to {MAX_WINDOW_MINUTES} minutes; got {duration_minutes}", code="invalid_window"
        )
    return start, duration_minutes
