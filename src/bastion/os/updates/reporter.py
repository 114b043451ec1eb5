"""Signed device status reports: ``POST /api/v1/device/status`` (docs/updates.md).

The payload is a CBOR map (installed images, each app with a one-line summary
of its active sandbox layers, OS version, slot, group and the queued events),
signed as a COSE_Sign1 by the device key that attestation certified, with
``x5chain`` = [device certificate DER]. Events leave the queue only once the
service has accepted the report, so a report lost in transit is sent again at
the next check-in.

Example:
    >>> reporter = StatusReporter(http, queue, credentials=lambda: (key, cert_der))  # doctest: +SKIP
    >>> reporter.send(status, now=now)                                                # doctest: +SKIP
    True
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import httpx

from bastion.crypto.cose import sign1
from bastion.crypto.keys import PrivateKey
from bastion.hw.atomic import atomic_write_bytes
from bastion.os.updates.events import Event, EventQueue

__all__ = [
    "MAX_EVENTS_PER_REPORT",
    "MAX_REPORT_BYTES",
    "STATUS_CONTENT_TYPE",
    "STATUS_PATH",
    "DeviceStatus",
    "StatusReporter",
    "build_payload",
    "sign_report",
]

STATUS_PATH = "/api/v1/device/status"
STATUS_CONTENT_TYPE = "application/cose"
#: Bounds of one report (the service enforces the same).
MAX_EVENTS_PER_REPORT = 64
MAX_REPORT_BYTES = 16 * 1024
#: How many times a report refused as a replay is sent again at once, with a later iat.
MAX_REPLAY_RETRIES = 3
#: Bound on the file that keeps the last accepted iat.
MAX_IAT_FILE_BYTES = 32

Credentials = Callable[[], tuple[PrivateKey, bytes] | None]

_log = logging.getLogger("bastion.os.updates.reporter")


@dataclass(frozen=True)
class DeviceStatus:
    """What the device says about itself in a report."""

    device_id: str
    os_version: str
    boot_slot: str
    group_id: str | None
    installed: Sequence[tuple[str, str]] = field(default_factory=tuple)
    #: Component ID -> one line of its active sandbox layers (``bastion.os.sandbox.layers.summarize``).
    sandbox: Mapping[str, str] = field(default_factory=dict)


def build_payload(status: DeviceStatus, events: Sequence[Event], *, iat: int) -> bytes:
    """Encode the report payload (deterministic CBOR)."""
    return cbor2.dumps(
        {
            "device_id": status.device_id,
            "iat": iat,
            "os_version": status.os_version,
            "boot_slot": status.boot_slot,
            "group_id": status.group_id,
            "installed": [_installed(c, v, status.sandbox.get(c)) for c, v in status.installed],
            "events": [e.to_json() for e in events],
        },
        canonical=True,
    )


def _installed(component_id: str, version: str, sandbox: str | None) -> dict[str, str]:
    item = {"component_id": component_id, "version": version}
    if sandbox:
        item["sandbox"] = sandbox
    return item


def sign_report(payload: bytes, key: PrivateKey, cert_der: bytes) -> bytes:
    """Sign a report: COSE_Sign1 by the certified device key, ``x5chain`` = [device cert]."""
    return sign1(payload, key, x5chain=[cert_der])


class StatusReporter:
    """Sends status reports with the queued events.

    Args:
        http: client whose ``base_url`` is the service.
        queue: the persistent event queue.
        credentials: returns the device key and its certificate DER, or ``None``
            when the device holds no valid certificate yet.
    """

    def __init__(
        self, http: httpx.Client, queue: EventQueue, *, credentials: Credentials, iat_path: Path | None = None
    ) -> None:
        self._http = http
        self._queue = queue
        self._credentials = credentials
        # The service refuses a report whose iat is not later than the last one it
        # accepted, also across reboots: keep the last accepted iat on flash.
        self._iat_path = iat_path
        self._last_iat = self._load_iat()
        #: The outcome of the last attempt: "accepted", "refused", "unreachable" or "no-credentials".
        self.last_result: str | None = None

    def _encode(self, status: DeviceStatus, key: PrivateKey, cert: bytes, iat: int) -> tuple[bytes, list[Event]]:
        events = self._queue.peek(MAX_EVENTS_PER_REPORT)
        while True:
            body = sign_report(build_payload(status, events, iat=iat), key, cert)
            if len(body) <= MAX_REPORT_BYTES:
                return body, events
            if events:
                events = events[: len(events) // 2]
            elif status.sandbox:  # the per-app layer lines are the last thing to give up
                status = dataclasses.replace(status, sandbox={})
            else:
                return body, events

    def _load_iat(self) -> int:
        if self._iat_path is None:
            return 0
        try:
            text = self._iat_path.read_bytes()[:MAX_IAT_FILE_BYTES].decode("ascii").strip()
        except (OSError, UnicodeDecodeError):
            return 0
        return int(text) if text.isdigit() else 0

    def _save_iat(self, iat: int) -> None:
        self._last_iat = iat
        if self._iat_path is not None:
            atomic_write_bytes(self._iat_path, f"{iat}\n".encode())

    def send(self, status: DeviceStatus, *, now: dt.datetime) -> bool:
        """Send one report; on acceptance, drop the events it carried.

        A report refused as a replay (the service accepted one with the same or a
        later ``iat``, e.g. in the same second) is sent again at once with a later
        ``iat``, up to :data:`MAX_REPLAY_RETRIES` times.

        Returns:
            Whether the service accepted it. Failures are logged and kept for next time.
        """
        for _ in range(MAX_REPLAY_RETRIES + 1):
            accepted, replayed = self._send_once(status, now=now)
            if not replayed:
                return accepted
        return False

    def _send_once(self, status: DeviceStatus, *, now: dt.datetime) -> tuple[bool, bool]:
        credentials = self._credentials()
        if credentials is None:
            self.last_result = "no-credentials"
            return False, False
        key, cert = credentials
        iat = max(int(now.timestamp()), self._last_iat + 1)  # the service refuses a non-increasing iat
        body, events = self._encode(status, key, cert, iat)
        try:
            response = self._http.post(STATUS_PATH, content=body, headers={"Content-Type": STATUS_CONTENT_TYPE})
        except httpx.HTTPError as exc:
            self.last_result = "unreachable"
            _log.warning("status report not sent: %s", type(exc).__name__)
            return False, False
        if response.status_code == 409 and _error_code(response) == "replayed_report":
            self._save_iat(iat)  # the service holds this iat or a later one: go past it
            self.last_result = "refused"
            return False, True
        if response.status_code >= 300:
            self.last_result = "unreachable" if response.status_code >= 500 else "refused"
            _log.warning("status report refused with HTTP %d", response.status_code)
            return False, False
        self._save_iat(iat)
        self._queue.remove(events)
        self.last_result = "accepted"
        _log.info("status report accepted (%d events)", len(events))
        return True, False


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("error") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None
