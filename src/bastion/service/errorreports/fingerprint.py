"""Fingerprint v1: which bucket an error record belongs to (pure; docs/adr/0015).

Like Sentry's grouping (STYLE 24), most specific evidence first:

- a Python crash (``exception`` given): the exception type and the top in-app
  frames (file and function, never the line: an unrelated edit must not split a bucket);
- a signal crash (``signal`` given): the signal, the component and the version;
- a security denial (category ``Security``): the capability and the component;
- anything else: category, event type, component (and ``reason`` when given).

The algorithm is versioned (:data:`ALGORITHM`); a bucket records the version
that made it, and a new algorithm gets new fingerprints, so an upgrade never
regroups history.

Example:
    >>> fp = fingerprint("AppCrash", "python_exception", "app1", "1.0.0",
    ...     {"exception": "ZeroDivisionError", "frames": [{"file": "main.py", "function": "run", "line": 3}]})
    >>> fp.title, len(bucket_id("tenant-1", fp.fingerprint))
    ('ZeroDivisionError in run (main.py)', 17)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ALGORITHM", "MAX_IN_APP_FRAMES", "Fingerprint", "bucket_id", "fingerprint"]

#: The grouping algorithm of this module.
ALGORITHM = 1
#: Frames (innermost first) that identify a Python crash.
MAX_IN_APP_FRAMES = 3
#: Path prefixes of frames that are not the app's own code (the runtime, the standard library).
_NOT_IN_APP = ("<", "/usr/", "lib/python", "site-packages/", "bastion/applibs/")


@dataclass(frozen=True)
class Fingerprint:
    """A record's grouping key: ``fingerprint`` (hex SHA-256) and a human title."""

    fingerprint: str
    title: str


def bucket_id(tenant_id: str, fingerprint: str) -> str:
    """The bucket's ID: ``"b"`` + 16 hex, per tenant (two tenants never share a bucket)."""
    return "b" + hashlib.sha256(f"{tenant_id}:{fingerprint}".encode()).hexdigest()[:16]


def _in_app(frames: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """The top in-app frames, innermost first (the device sends innermost last)."""
    own = [
        (str(f.get("file", "")), str(f.get("function", "")))
        for f in frames
        if not any(part in str(f.get("file", "")) for part in _NOT_IN_APP)
    ]
    chosen = own or [(str(f.get("file", "")), str(f.get("function", ""))) for f in frames]
    return list(reversed(chosen))[:MAX_IN_APP_FRAMES]


def fingerprint(
    category: str, event_type: str, component_id: str, version: str, detail: Mapping[str, Any]
) -> Fingerprint:
    """The v1 fingerprint of one record (see the module docstring for the rules)."""
    exception = detail.get("exception")
    frames = detail.get("frames")
    key: list[Any]
    if category == "AppCrash" and isinstance(exception, str) and exception:
        top = _in_app(frames if isinstance(frames, list) else [])
        key = ["python", component_id, exception, top]
        where = f" in {top[0][1]} ({top[0][0]})" if top else ""
        title = f"{exception}{where}"
    elif isinstance(detail.get("signal"), int) and category in ("AppCrash", "Watchdog", "OS"):
        signal = detail["signal"]
        key = ["signal", category, component_id, version, signal]
        title = f"signal {signal} in {component_id or 'the OS'} {version}"
    elif category == "Security":
        capability = str(detail.get("capability", ""))
        key = ["security", component_id, capability, event_type]
        title = f"{event_type} {capability or '(no capability)'} by {component_id or 'the OS'}"
    else:
        reason = str(detail.get("reason", ""))
        key = ["event", category, event_type, component_id, reason]
        title = f"{category} {event_type} in {component_id or 'the OS'}" + (f": {reason}" if reason else "")
    digest = hashlib.sha256(json.dumps([ALGORITHM, *key], separators=(",", ":")).encode()).hexdigest()
    return Fingerprint(fingerprint=digest, title=title[:256])
