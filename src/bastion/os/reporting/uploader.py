"""Uploads the failure queue as signed batches, and app log tails on request (docs/error-reports.md).

At each update check-in the device sends the sealed batch, or seals one (an empty
batch is the heartbeat that tells the service which releases the device runs and
fetches the operator's log requests). After an urgent record (a crash loop, a
security denial) it sends soon, at most once per :attr:`UploadSettings.urgent_min_gap_s`.
Failures back off exponentially with jitter, within bounds.

Both bodies are COSE_Sign1 by the device key that attestation certified, with
``x5chain`` = [device certificate], as status reports are
(:func:`bastion.os.updates.reporter.sign_report`).

Example:
    >>> uploader = ErrorReportUploader(http, queue, credentials=creds, status=agent.status,  # doctest: +SKIP
    ...                                log_dir=state.app_log_dir)
    >>> uploader.upload(now)                                                                  # doctest: +SKIP
    'accepted'
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bastion.crypto.error_report import (
    MAX_LOG_TEXT_BYTES,
    ErrorBatch,
    LogUpload,
    bounded_text,
    encode_batch,
    encode_log,
)
from bastion.crypto.errors import MalformedInput
from bastion.os.reporting.queue import ReportQueue
from bastion.os.updates.reporter import STATUS_CONTENT_TYPE, Credentials, DeviceStatus, sign_report

__all__ = ["ERROR_REPORTS_PATH", "LOGS_PATH", "ErrorReportUploader", "UploadSettings"]

ERROR_REPORTS_PATH = "/api/v1/device/error-reports"
LOGS_PATH = "/api/v1/device/logs"
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")

_log = logging.getLogger("bastion.os.reporting")


@dataclass(frozen=True)
class UploadSettings:
    """Bounds and timings of the uploader (STYLE 3)."""

    #: Delay after an urgent record before the upload (lets a burst coalesce).
    urgent_delay_s: float = 5.0
    #: At most one urgent upload per this many seconds.
    urgent_min_gap_s: float = 30.0
    #: First retry delay after a failed upload, doubled per failure up to ``max_backoff_s``.
    base_backoff_s: float = 10.0
    max_backoff_s: float = 3600.0
    #: When nothing is due, the job looks again after this long (check-ins upload anyway).
    idle_interval_s: float = 3600.0
    #: Batches sent in one upload (the queue may hold more than one batch's worth).
    max_batches_per_upload: int = 4
    #: Log requests served from one answer.
    max_log_requests: int = 4


class ErrorReportUploader:
    """Sends the queue's batches and answers log requests.

    Args:
        http: client whose ``base_url`` is the service.
        queue: the failure queue.
        credentials: the device key and certificate DER, or None before the first attestation.
        status: what the device runs now (OS version, slot, group, installed apps).
        log_dir: where the app manager keeps each app's log (``<component_id>.log``).
        settings: bounds and timings.
        jitter: returns a float in [0, 1) (tests pass a fixed one).
    """

    def __init__(
        self,
        http: httpx.Client,
        queue: ReportQueue,
        *,
        credentials: Credentials,
        status: Callable[[], DeviceStatus],
        log_dir: Path,
        settings: UploadSettings | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._http = http
        self.queue = queue
        self._credentials = credentials
        self._status = status
        self._log_dir = log_dir
        self.settings = settings or UploadSettings()
        self._jitter = jitter
        self._failures = 0
        self.retry_at: dt.datetime | None = None
        self.urgent_at: dt.datetime | None = None
        self._last_urgent: dt.datetime | None = None
        #: Batches the service refused as malformed or too large (dropped, never retried).
        self.discarded = 0
        #: The outcome of the last attempt.
        self.last_result: str | None = None

    def has_credentials(self) -> bool:
        """Whether the device holds a certificate (so an attestation now is a renewal)."""
        return self._credentials() is not None

    # -- scheduling ---------------------------------------------------------------------------

    def request_urgent(self, now: dt.datetime) -> dt.datetime:
        """Ask for an upload soon; returns when it will run (rate limited)."""
        at = now + dt.timedelta(seconds=self.settings.urgent_delay_s)
        if self._last_urgent is not None:
            at = max(at, self._last_urgent + dt.timedelta(seconds=self.settings.urgent_min_gap_s))
        if self.urgent_at is None or at < self.urgent_at:
            self.urgent_at = at
        return self.urgent_at

    def next_due(self, now: dt.datetime) -> dt.datetime:
        """When the job should run next."""
        candidates = [t for t in (self.urgent_at, self.retry_at if self.queue.pending() else None) if t is not None]
        return min(candidates) if candidates else now + dt.timedelta(seconds=self.settings.idle_interval_s)

    def job(self, now: dt.datetime) -> dt.datetime:
        """Scheduler job: upload when an urgent record or a retry is due; say when to run next."""
        urgent_due = self.urgent_at is not None and self.urgent_at <= now
        retry_due = self.retry_at is not None and self.retry_at <= now and self.queue.pending() > 0
        if urgent_due or retry_due:
            if urgent_due:
                self._last_urgent, self.urgent_at = now, None
            self.upload(now)
        return self.next_due(now)

    # -- upload -------------------------------------------------------------------------------

    def upload(self, now: dt.datetime) -> str:
        """Send the sealed batch (sealing one, maybe empty, if none); then more while records wait.

        Returns:
            ``accepted``, ``duplicate``, ``discarded``, ``refused``, ``unreachable`` or ``no-credentials``.
        """
        result = "accepted"
        for index in range(self.settings.max_batches_per_upload):
            if index and not self.queue.pending():
                break
            result = self._send_one(now)
            if result not in ("accepted", "duplicate", "discarded"):
                break
        self.last_result = result
        return result

    def _send_one(self, now: dt.datetime) -> str:
        credentials = self._credentials()
        if credentials is None:
            return "no-credentials"
        key, cert = credentials
        sealed = self.queue.seal(iat=int(now.timestamp()))
        status = self._status()
        batch = ErrorBatch(
            device_id=status.device_id,
            batch_id=sealed.batch_id,
            iat=sealed.iat,
            os_version=status.os_version,
            boot_slot=status.boot_slot.lower(),  # the runtime says "A"/"B"; the wire says "a"/"b"
            group_id=status.group_id,
            installed=tuple(status.installed)[:64],
            dropped=sealed.dropped,
            records=sealed.records,
        )
        try:
            body = sign_report(encode_batch(batch), key, cert)
        except MalformedInput as exc:  # cannot happen for records the queue checked; never loop on it
            _log.error("error-report batch cannot be encoded, dropped: %s", exc)
            self.queue.ack(sealed.batch_id)
            self.discarded += 1
            return "discarded"
        try:
            response = self._http.post(ERROR_REPORTS_PATH, content=body, headers={"Content-Type": STATUS_CONTENT_TYPE})
        except httpx.HTTPError as exc:
            _log.info("error-report batch not sent: %s", type(exc).__name__)
            return self._failed(now, "unreachable")
        if response.status_code in (400, 413):
            # The service will never take this batch: keeping it would block every later one.
            _log.warning("error-report batch refused as %s (HTTP %d); dropped", _code(response), response.status_code)
            self.queue.ack(sealed.batch_id)
            self.discarded += 1
            self._failures, self.retry_at = 0, None
            return "discarded"
        if response.status_code != 200:
            _log.warning("error-report batch refused with HTTP %d (%s)", response.status_code, _code(response))
            return self._failed(now, "unreachable" if response.status_code >= 500 else "refused")
        answer = _json(response)
        self.queue.ack(sealed.batch_id)
        self._failures, self.retry_at = 0, None
        requests = answer.get("log_requests")
        if isinstance(requests, list):
            for request in requests[: self.settings.max_log_requests]:
                self._answer_log_request(request, status, key, cert, now)
        return "duplicate" if answer.get("status") == "duplicate" else "accepted"

    def _failed(self, now: dt.datetime, result: str) -> str:
        self._failures += 1
        delay = min(self.settings.base_backoff_s * 2 ** min(self._failures - 1, 30), self.settings.max_backoff_s)
        self.retry_at = now + dt.timedelta(seconds=delay * (0.5 + 0.5 * self._jitter()))
        return result

    # -- log requests -------------------------------------------------------------------------

    def _answer_log_request(self, request: Any, status: DeviceStatus, key: Any, cert: bytes, now: dt.datetime) -> None:
        if not isinstance(request, dict):
            return
        request_id, component_id, max_bytes = (request.get(k) for k in ("request_id", "component_id", "max_bytes"))
        installed = {cid for cid, _ in status.installed}
        if not (isinstance(request_id, str) and _REQUEST_ID.fullmatch(request_id)):
            return
        # Only an installed app's own log, named by a plain component id: never a path the service picks.
        if not (isinstance(component_id, str) and _COMPONENT.fullmatch(component_id) and component_id in installed):
            _log.warning("log request %s names no installed app; ignored", request_id)
            return
        limit = max_bytes if isinstance(max_bytes, int) and 0 < max_bytes <= MAX_LOG_TEXT_BYTES else MAX_LOG_TEXT_BYTES
        text, truncated = _tail(self._log_dir / f"{component_id}.log", limit)
        upload = LogUpload(
            device_id=status.device_id,
            request_id=request_id,
            component_id=component_id,
            iat=int(now.timestamp()),
            text=text,
            truncated=truncated,
        )
        try:
            body = sign_report(encode_log(upload), key, cert)
            response = self._http.post(LOGS_PATH, content=body, headers={"Content-Type": STATUS_CONTENT_TYPE})
        except (MalformedInput, httpx.HTTPError) as exc:
            _log.info("log upload for request %s not sent: %s", request_id, type(exc).__name__)
            return
        if response.status_code != 200:
            _log.warning("log upload for request %s refused with HTTP %d", request_id, response.status_code)


def _tail(path: Path, limit: int) -> tuple[str, bool]:
    """The last ``limit`` bytes of a log (whole UTF-8 characters), and whether older text was left out."""
    # The app's own log file only: not a symlink an app planted to another file (the device key),
    # nor a FIFO or device node that would block or never end.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return "", False
    try:
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return "", False
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(size - limit, 0))
            data = handle.read(limit)
    except OSError:
        return "", False
    text = data.decode("utf-8", "replace")
    while len(text.encode()) > limit:  # replacement characters can grow the text
        text = text[1:]
    return bounded_text(text, limit, keep="tail"), size > limit


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _code(response: httpx.Response) -> str:
    code = _json(response).get("error")
    return code if isinstance(code, str) else "?"
