"""Server-side paging of console lists: bounded offset and limit, and the pager a template draws.

Example:
    >>> p = PageParams(offset=0, limit=2)
    >>> rows, pager = paginate(p, [1, 2, 3], "/console/devices", {"group": "g1"})
    >>> rows, pager.next_url
    ([1, 2], '/console/devices?group=g1&offset=2&limit=2')

A list query asks for ``params.limit + 1`` rows (:attr:`PageParams.fetch`); the
extra row only tells that a next page exists. Bad numbers in the query string
fall back to the defaults instead of failing: a page never answers 422 or 500
for ``?offset=abc``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, Request

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_FILTER_CHARS",
    "MAX_OFFSET",
    "MAX_PAGE_SIZE",
    "PageParams",
    "PageParamsDep",
    "Pager",
    "filter_value",
    "page_params",
    "paginate",
]

T = TypeVar("T")

#: Rows per page unless the query asks for fewer or more.
DEFAULT_PAGE_SIZE = 50
#: Most rows per page (a larger ``limit`` is capped).
MAX_PAGE_SIZE = 200
#: Largest offset honoured (a larger one is capped: beyond it there is nothing to page to).
MAX_OFFSET = 1_000_000
#: Bound on a filter value from the query string (a longer one is ignored).
MAX_FILTER_CHARS = 200


@dataclass(frozen=True)
class PageParams:
    """Which slice of a list to show."""

    offset: int = 0
    limit: int = DEFAULT_PAGE_SIZE

    @property
    def fetch(self) -> int:
        """How many rows to ask the database for: one more than shown, to know whether there is a next page."""
        return self.limit + 1


def _number(raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None or not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        return default
    return max(low, min(high, int(raw)))


def page_params(request: Request) -> PageParams:
    """``?offset=`` and ``?limit=`` of the request, bounded; malformed values are the defaults."""
    query = request.query_params
    return PageParams(
        offset=_number(query.get("offset"), 0, 0, MAX_OFFSET),
        limit=_number(query.get("limit"), DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE),
    )


PageParamsDep = Annotated[PageParams, Depends(page_params)]


def filter_value(request: Request, name: str) -> str | None:
    """A filter from the query string: None when absent, empty, too long or not printable."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if not raw or len(raw) > MAX_FILTER_CHARS or not raw.isprintable():
        return None
    return raw


@dataclass(frozen=True)
class Pager:
    """What the ``pager`` macro draws: the position and the links to the neighbouring pages."""

    offset: int
    limit: int
    shown: int
    prev_url: str | None
    next_url: str | None

    @property
    def first(self) -> int:
        """The 1-based number of the first row shown (0 when none)."""
        return self.offset + 1 if self.shown else 0

    @property
    def last(self) -> int:
        """The 1-based number of the last row shown."""
        return self.offset + self.shown


def _url(path: str, filters: Mapping[str, str | None], offset: int, limit: int) -> str:
    query = {k: v for k, v in filters.items() if v is not None}
    query["offset"] = str(offset)
    query["limit"] = str(limit)
    return f"{path}?{urlencode(query)}"


def paginate(
    params: PageParams, rows: Sequence[T], path: str, filters: Mapping[str, str | None]
) -> tuple[list[T], Pager]:
    """Cut a fetched list (``params.fetch`` rows at most) to the page, and build its pager."""
    shown = list(rows[: params.limit])
    has_next = len(rows) > params.limit
    prev_url = None
    if params.offset > 0:
        prev_url = _url(path, filters, max(0, params.offset - params.limit), params.limit)
    next_url = _url(path, filters, params.offset + params.limit, params.limit) if has_next else None
    return shown, Pager(
        offset=params.offset, limit=params.limit, shown=len(shown), prev_url=prev_url, next_url=next_url
    )
