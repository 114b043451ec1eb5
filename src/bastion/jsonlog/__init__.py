"""One JSON object per log line, shared by the service and the device OS.

Example:
    >>> import logging, sys
    >>> handler = logging.StreamHandler(sys.stderr)
    >>> handler.setFormatter(JsonFormatter(process="os"))
    >>> logging.getLogger().addHandler(handler)  # doctest: +SKIP

Each line carries ``ts`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
``msg``, the ``process`` role (``service``, ``os``, ``monitor``) and ``pid``, the
``request_id`` of the request being served (service side, from
:data:`REQUEST_ID`), any ``extra={...}`` fields a caller passed that are
JSON-safe scalars, and for an exception ``exc_type`` and ``exc`` (the
traceback text).

No secret in a log line: the message and the traceback pass through
:func:`redact`, which masks bearer tokens, ``Authorization`` values,
``key=``/``token=``/``password=``/``secret=`` pairs and query strings. Callers
still log ids and error codes, never credentials; redaction is the net under
that rule, not the rule.

This package depends on nothing else of Bastion (an import-linter contract),
so both the service and the device OS image (``images.os_build.OS_PACKAGES``)
carry it without breaking the layers.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import logging
import re
from typing import Any

import orjson

__all__ = ["MAX_LOG_FIELD_CHARS", "MAX_LOG_MESSAGE_CHARS", "REQUEST_ID", "JsonFormatter", "redact"]

#: The request id of the request this task serves ("" outside a request).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("bastion_request_id", default="")

#: Bound on a line's message (and on a traceback's text): a log line is not a data channel.
MAX_LOG_MESSAGE_CHARS = 8192
#: Bound on one ``extra`` string field.
MAX_LOG_FIELD_CHARS = 512

#: Attributes of every LogRecord: not caller-supplied extras.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of msg
}

#: Secret-shaped text: a bearer credential, an Authorization value, key=value pairs
#: whose name says secret, and a URL's query string (it may carry a credential).
_SECRET_PATTERNS = (
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(authorization|cookie|x-api-key)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}]+"),
    re.compile(r"(?i)\b([a-z_]*(?:token|secret|password|passwd|credential|key))(['\"]?\s*[:=]\s*['\"]?)[^\s'\",}&]+"),
    re.compile(r"(\?)[^\s'\"#]+"),
)
_REDACTED = "[redacted]"
#: Text that none of the patterns can match skips them (an access line, most messages): one search, not four.
_SUSPECT = re.compile(r"[?=:]|(?i:bearer|basic)")


def redact(text: str) -> str:
    """``text`` with secret-shaped substrings masked (see the module docstring)."""
    if not text or _SUSPECT.search(text) is None:
        return text
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)} {_REDACTED}", text)
    text = _SECRET_PATTERNS[1].sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
    text = _SECRET_PATTERNS[2].sub(lambda m: f"{m.group(1)}{m.group(2)}{_REDACTED}", text)
    return _SECRET_PATTERNS[3].sub(f"?{_REDACTED}", text)


def _iso(created: float) -> str:
    return dt.datetime.fromtimestamp(created, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring)."""

    def __init__(self, process: str = "service", **kwargs: Any) -> None:
        """Args: process: the role written in every line's ``process`` field."""
        super().__init__(**kwargs)
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object, no newline inside it."""
        message = record.getMessage()
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(message[:MAX_LOG_MESSAGE_CHARS]),
            "process": self._process,
            "pid": record.process,
        }
        request_id = REQUEST_ID.get()
        if request_id:
            out["request_id"] = request_id
        for name, value in record.__dict__.items():
            if name in _RESERVED or name in out or name.startswith("_"):
                continue
            if isinstance(value, str):
                out[name] = value[:MAX_LOG_FIELD_CHARS]
            elif value is None or isinstance(value, int | float | bool):
                out[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            out["exc_type"] = record.exc_info[0].__name__
            out["exc"] = redact(self.formatException(record.exc_info)[-MAX_LOG_MESSAGE_CHARS:])
        return orjson.dumps(out).decode()
