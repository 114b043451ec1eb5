"""Helpers for error-report tests: signed batches of a claimed, certified device."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Sequence
from typing import Any

import cbor2
from fleet_world import StatusDevice

from bastion.crypto.certs import certificate_der
from bastion.crypto.cose import sign1
from bastion.crypto.keys import PrivateKey

COSE = {"Content-Type": "application/cose"}
ENDPOINT = "/api/v1/device/error-reports"


def crash(
    at: dt.datetime,
    *,
    component: str = "app1",
    version: str = "1.0.0",
    exception: str = "ZeroDivisionError",
    function: str = "run",
    line: int = 3,
    count: int = 1,
) -> dict[str, Any]:
    """A Python crash record."""
    return {
        "category": "AppCrash",
        "event_class": "Error",
        "event_type": "python_exception",
        "component_id": component,
        "version": version,
        "count": count,
        "first_at": int(at.timestamp()),
        "last_at": int(at.timestamp()),
        "description": f"{exception} in {function}",
        "exception": exception,
        "frames": [
            {"file": "lib/python3.11/runpy.py", "function": "_run_module", "line": 88},
            {"file": "main.py", "function": function, "line": line},
        ],
    }


def batch(
    device: StatusDevice,
    *,
    iat: dt.datetime,
    records: Sequence[dict[str, Any]] = (),
    installed: Sequence[tuple[str, str]] = (("app1", "1.0.0"),),
    os_version: str = "1.0.0",
    batch_id: str | None = None,
    device_id: str | None = None,
    key: PrivateKey | None = None,
    dropped: int = 0,
    override: dict[str, Any] | None = None,
) -> bytes:
    """A signed batch (the wire contract's payload)."""
    payload: dict[str, Any] = {
        "v": 1,
        "device_id": device_id or device.device_id,
        "batch_id": batch_id or secrets.token_hex(16),
        "iat": int(iat.timestamp()),
        "os_version": os_version,
        "boot_slot": "a",
        "group_id": None,
        "installed": [{"component_id": c, "version": v} for c, v in installed],
        "dropped": dropped,
        "records": list(records),
        **(override or {}),
    }
    return sign1(cbor2.dumps(payload, canonical=True), key or device.key, x5chain=[certificate_der(device.cert)])
