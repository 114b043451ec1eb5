"""Dialect-aware SQL pieces the console's views share (time buckets on SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import func, literal_column
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

__all__ = ["Step", "bucket_expr", "bucket_key", "bucket_keys"]


class Step(enum.StrEnum):
    """The width of one time bucket of a chart."""

    HOUR = "hour"
    DAY = "day"


_SQLITE_FORMAT = {Step.HOUR: "%Y-%m-%d %H", Step.DAY: "%Y-%m-%d"}
_SQLITE_PREFIX = {Step.HOUR: 13, Step.DAY: 10}


def bucket_expr(session: Session, column: Any, step: Step) -> ColumnElement[Any]:
    """A text key of the UTC hour or day ``column`` falls in (``2026-01-15 12`` / ``2026-01-15``).

    SQLite stores the UTC time as ``YYYY-MM-DD HH:MM:SS.ffffff`` text (``UTCDateTime``), so the key
    is a prefix of it (``substr`` costs far less per row than ``strftime``); PostgreSQL has ``timestamptz``.
    """
    if session.get_bind().dialect.name == "postgresql":
        # date_trunc groups on a timestamp (no text, no collation sort); bucket_key makes the text key.
        utc = func.timezone(literal_column("'UTC'"), column)
        return func.date_trunc(step.value, utc)
    return func.substr(column, 1, _SQLITE_PREFIX[step])


def bucket_key(value: object, step: Step) -> str:
    """The text key of a :func:`bucket_expr` value (SQLite gives the key, PostgreSQL a naive UTC timestamp)."""
    if isinstance(value, dt.datetime):
        return value.strftime(_SQLITE_FORMAT[step])
    return str(value)


def _floor(when: dt.datetime, step: Step) -> dt.datetime:
    when = when.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return when.replace(hour=0) if step is Step.DAY else when


def bucket_keys(now: dt.datetime, step: Step, count: int) -> list[tuple[str, dt.datetime]]:
    """The ``count`` bucket keys ending with the one holding ``now``, oldest first, with their starts."""
    width = dt.timedelta(hours=1) if step is Step.HOUR else dt.timedelta(days=1)
    last = _floor(now, step)
    starts = [last - width * i for i in range(count - 1, -1, -1)]
    return [(s.strftime(_SQLITE_FORMAT[step]), s) for s in starts]
