"""The ``logging.config.dictConfig`` of a served process: JSON lines on stderr, our access log, not uvicorn's.

Example:
    >>> uvicorn.run(..., log_config=log_config("warning", access_log=True), access_log=False)  # doctest: +SKIP

uvicorn applies the dictionary in every worker it starts, so each worker
writes the same format. uvicorn's own access logger stays quiet (its line
would repeat ours and carries the raw path with its query string).
"""

from __future__ import annotations

from typing import Any

__all__ = ["ACCESS_LOGGER", "log_config"]

#: The access log's logger name (its level turns the access log on or off).
ACCESS_LOGGER = "bastion.access"


def log_config(level: str, *, access_log: bool) -> dict[str, Any]:
    """The logging configuration: ``level`` for everything, the access log at INFO when on."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "bastion.jsonlog.JsonFormatter", "process": "service"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
            # Pre-built lines, written once per event-loop turn (observability/accesslog.py).
            "access": {
                "()": "bastion.service.observability.accesslog.AccessLogHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"level": level},
            "uvicorn.access": {"handlers": [], "level": "CRITICAL", "propagate": False},
            ACCESS_LOGGER: {"handlers": ["access"], "level": "INFO" if access_log else "WARNING", "propagate": False},
        },
        "root": {"handlers": ["stderr"], "level": level},
    }
