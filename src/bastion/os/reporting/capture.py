"""What the device captures as failure records, and how each is made (docs/error-reports.md, "Device side").

Every source feeds one :class:`FailureReporter`:

- the app manager's exit hook (:meth:`FailureReporter.app_exited`): exit code or
  signal, uptime, and for a Python app the exception type and traceback frames
  read from the app's stderr tail (the sandboxed app is another process, so its
  standard traceback text is the one thing every Python app leaves);
- the update agent's and app manager's events (:meth:`FailureReporter.on_event`):
  watchdog kills, sandbox and applibs denials, updates applied, failed, rolled
  back or interrupted, an OS crash recorded by the boot process;
- the OS runtime: the boot and its reason, attestation refusals and failed
  certificate renewals.

Frames are normalised so that they carry no device data: a path inside the app
(``/app/...`` in the sandbox, or the app's version directory outside it) becomes
app-relative, and any other path keeps only its last component under ``<lib>/``.

Example:
    >>> exc, frames = parse_traceback(
    ...     'Traceback (most recent call last):\\n  File "/app/main.py", line 3, in <module>\\n'
    ...     "ZeroDivisionError: division by zero\\n")
    >>> exc, frames[0].file, frames[0].line
    ('ZeroDivisionError', 'main.py', 3)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bastion.crypto.error_report import (
    MAX_CAPABILITY_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_EXCEPTION_CHARS,
    MAX_FRAME_TEXT_CHARS,
    MAX_FRAMES,
    MAX_ID_CHARS,
    MAX_REASON_CHARS,
    MAX_SIGNAL,
    MAX_STDERR_TAIL_CHARS,
    ErrorRecord,
    Frame,
    bounded_text,
)
from bastion.crypto.errors import MalformedInput
from bastion.os.reporting.queue import ReportQueue
from bastion.os.updates.events import Event

__all__ = ["EVENT_RECORDS", "URGENT_CATEGORIES", "FailureReporter", "normalise_path", "parse_traceback"]

_log = logging.getLogger("bastion.os.reporting")

#: Event kind -> (category, event_class, event_type) of the record it becomes.
#: ``app_failed`` is absent: app exits come through :meth:`FailureReporter.app_exited` with more detail.
EVENT_RECORDS: dict[str, tuple[str, str, str]] = {
    "app_watchdog": ("Watchdog", "Error", "watchdog_kill"),
    "app_denied": ("Security", "Warning", "capability_denied"),
    "sandbox_violation": ("Security", "Error", "sandbox_violation"),
    "sandbox_unavailable": ("Security", "Error", "sandbox_unavailable"),
    "local_op_refused": ("Security", "Warning", "local_op_refused"),
    "sideload_refused": ("Security", "Warning", "sideload_refused"),
    "os_crashed": ("OS", "Error", "os_crash"),
    "app_installed": ("Update", "Info", "update_applied"),
    "os_confirmed": ("Update", "Info", "update_applied"),
    "update_failed": ("Update", "Error", "update_failed"),
    "update_refused": ("Update", "Warning", "update_refused"),
    "os_rolled_back": ("Update", "Error", "update_rolled_back"),
    "os_trial_interrupted": ("Update", "Warning", "update_interrupted"),
}
#: Kinds the boot process records into the status queue while the OS is not running.
BOOT_PROCESS_KINDS = frozenset({"os_crashed"})
#: A record of these categories asks for an upload soon, not at the next check-in.
URGENT_CATEGORIES = frozenset({"Security"})
#: An app crashing this many times within :data:`CRASH_LOOP_WINDOW_S` is a crash loop (urgent).
CRASH_LOOP_COUNT = 3
CRASH_LOOP_WINDOW_S = 300

_TRACEBACK_HEAD = "Traceback (most recent call last):"
_FRAME_LINE = re.compile(r'^\s*File "(?P<file>[^"]{1,1024})", line (?P<line>\d{1,9}), in (?P<function>\S{1,256})\s*$')
_EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]{0,200})(?::\s?(?P<message>.*))?$")
_APP_ROOTS = ("/app/",)
_DENIED_CAPABILITY = re.compile(r"\b(?:capability|needs|requires)\s+(?P<cap>[A-Za-z][\w.-]{0,63})")


def normalise_path(path: str, *, app_roots: Iterable[str] = ()) -> str:
    """A frame's file with no device data: app-relative inside the app, else ``<lib>/<name>``."""
    for root in (*_APP_ROOTS, *app_roots):
        prefix = root.rstrip("/") + "/"
        if path.startswith(prefix):
            return bounded_text(path[len(prefix) :], MAX_FRAME_TEXT_CHARS)
    if path.startswith("<") or "/" not in path:
        return bounded_text(path, MAX_FRAME_TEXT_CHARS)  # "<string>", "main.py"
    return bounded_text("<lib>/" + path.rsplit("/", 1)[1], MAX_FRAME_TEXT_CHARS)


def parse_traceback(text: str, *, app_roots: Iterable[str] = ()) -> tuple[str | None, tuple[Frame, ...]]:
    """The exception type and frames (innermost last) of the last Python traceback in ``text``.

    Returns ``(None, ())`` when ``text`` holds no traceback. A chained traceback
    ("During handling of ...") gives the last one, the one that ended the app.
    Frames before the app's first frame (the launcher's) are left out.
    """
    lines = text.splitlines()
    start = max((i for i, line in enumerate(lines) if line.strip() == _TRACEBACK_HEAD), default=None)
    if start is None:
        return None, ()
    frames: list[Frame] = []
    exception: str | None = None
    for line in lines[start + 1 :]:
        match = _FRAME_LINE.match(line)
        if match:
            frames.append(
                Frame(
                    file=normalise_path(match["file"], app_roots=app_roots),
                    function=bounded_text(match["function"], MAX_FRAME_TEXT_CHARS),
                    line=int(match["line"]),
                )
            )
            continue
        if line.startswith((" ", "\t")) or not line.strip():
            continue  # source lines and carets under a frame
        found = _EXCEPTION_LINE.match(line.strip())
        if found:
            exception = found["type"].rsplit(".", 1)[-1][:MAX_EXCEPTION_CHARS]
        break
    # The launcher's frames (its shim, runpy) come before the app's first frame and are the same
    # for every app: leave them out when the traceback reaches the app at all.
    first_app = next((i for i, f in enumerate(frames) if not f.file.startswith("<")), 0)
    return exception, tuple(frames[first_app:][-MAX_FRAMES:])


@dataclass(frozen=True)
class AppExit:
    """How one app process ended, as the app manager saw it."""

    component_id: str
    version: str
    code: int  # the process's code: < 0 a signal; sandboxed 128 + n a signal n
    sandboxed: bool
    uptime_s: int | None
    stderr_tail: str
    app_root: str | None = None  # the app's directory outside the sandbox (insecure-no-sandbox)


class FailureReporter:
    """Turns what the device sees into coalesced records in the queue.

    Args:
        queue: the persistent queue.
        on_urgent: called (with no argument) when a record should be uploaded soon.
    """

    def __init__(self, queue: ReportQueue, *, on_urgent: Callable[[], None] | None = None) -> None:
        self.queue = queue
        self._on_urgent = on_urgent
        self._crashes: dict[str, list[int]] = {}
        #: The OS version the records of OS-wide events carry.
        self.os_version = ""

    def _add(self, record: ErrorRecord, *, urgent: bool = False) -> None:
        try:
            self.queue.add(record)
        except (MalformedInput, OSError) as exc:  # never let reporting break what it reports on
            _log.error("failure record not queued: %s", exc)
            return
        if (urgent or record.category in URGENT_CATEGORIES) and self._on_urgent is not None:
            self._on_urgent()

    def app_exited(self, ended: AppExit, at: int) -> None:
        """An app process ended (the manager restarts it with backoff)."""
        signal = _signal_of(ended.code, sandboxed=ended.sandboxed)
        tail = bounded_text(ended.stderr_tail, MAX_STDERR_TAIL_CHARS, keep="tail")
        roots = (ended.app_root,) if ended.app_root else ()
        exception, frames = parse_traceback(ended.stderr_tail, app_roots=roots)
        base = {
            "component_id": ended.component_id[:MAX_ID_CHARS],
            "version": ended.version[:MAX_ID_CHARS],
            "count": 1,
            "first_at": at,
            "last_at": at,
            "uptime_s": ended.uptime_s,
            "stderr_tail": tail or None,
        }
        if signal is not None:
            record = ErrorRecord(
                category="AppCrash",
                event_class="Error",
                event_type="signal",
                description=f"killed by signal {signal}",
                signal=signal,
                **base,  # type: ignore[arg-type]
            )
        elif exception is not None:
            message = _exception_message(ended.stderr_tail)
            record = ErrorRecord(
                category="AppCrash",
                event_class="Error",
                event_type="python_exception",
                description=bounded_text(f"{exception}: {message}" if message else exception, MAX_DESCRIPTION_CHARS),
                exit_code=ended.code,
                exception=exception,
                frames=frames,
                **base,  # type: ignore[arg-type]
            )
        else:
            record = ErrorRecord(
                category="AppExit",
                event_class="Info" if ended.code == 0 else "Warning",
                event_type="exit_code",
                description=f"exited with code {ended.code}",
                exit_code=ended.code,
                **base,  # type: ignore[arg-type]
            )
        self._add(record, urgent=record.category == "AppCrash" and self._crash_loop(ended.component_id, at))

    def _crash_loop(self, component_id: str, at: int) -> bool:
        recent = [t for t in self._crashes.get(component_id, []) if at - t < CRASH_LOOP_WINDOW_S] + [at]
        self._crashes[component_id] = recent[-CRASH_LOOP_COUNT:]
        return len(recent) >= CRASH_LOOP_COUNT

    def on_event(self, event: Event) -> None:
        """An update or app event (the status queue's listener): recorded when it is a failure or an update."""
        mapped = EVENT_RECORDS.get(event.kind)
        if mapped is None:
            return
        category, event_class, event_type = mapped
        capability = None
        if category == "Security":
            found = _DENIED_CAPABILITY.search(event.detail)
            capability = found["cap"][:MAX_CAPABILITY_CHARS] if found else None
        os_wide = category in ("OS",) or (category == "Update" and event.kind.startswith("os_"))
        self._add(
            ErrorRecord(
                category=category,
                event_class=event_class,
                event_type=event_type,
                component_id="" if os_wide and not event.component_id else event.component_id[:MAX_ID_CHARS],
                version=(event.version or self.os_version)[:MAX_ID_CHARS],
                count=1,
                first_at=event.at,
                last_at=event.at,
                description=bounded_text(event.detail or event.kind, MAX_DESCRIPTION_CHARS),
                capability=capability,
                reason=_reason(event),
            )
        )

    def import_boot_events(self, events: Iterable[Event]) -> int:
        """Record the events the boot process queued while no OS ran (an OS crash), once each; how many."""
        newest, imported = self.queue.imported_until, 0
        for event in events:
            if event.kind in BOOT_PROCESS_KINDS and event.at > self.queue.imported_until:
                self.on_event(event)
                newest, imported = max(newest, event.at), imported + 1
        self.queue.mark_imported(newest)
        return imported

    def booted(self, *, at: int, reason: str) -> None:
        """The OS started (``reason``: cold, trial, rollback, after_os_crash)."""
        self._add(
            ErrorRecord(
                category="OS",
                event_class="Info",
                event_type="boot",
                component_id="",
                version=self.os_version[:MAX_ID_CHARS],
                count=1,
                first_at=at,
                last_at=at,
                description=f"OS {self.os_version} booted ({reason})",
                reason=reason[:MAX_REASON_CHARS],
            )
        )

    def attestation_failed(self, *, at: int, reason: str, renewal: bool) -> None:
        """The service refused an attestation (``renewal``: the device held a certificate it wanted renewed)."""
        self._add(
            ErrorRecord(
                category="Certificate" if renewal else "Attestation",
                event_class="Error",
                event_type="renewal_failed" if renewal else "attestation_failed",
                component_id="",
                version=self.os_version[:MAX_ID_CHARS],
                count=1,
                first_at=at,
                last_at=at,
                description=bounded_text(f"attestation refused: {reason}", MAX_DESCRIPTION_CHARS),
                reason=bounded_text(reason, MAX_REASON_CHARS),
            )
        )


def _signal_of(code: int, *, sandboxed: bool) -> int | None:
    if code < 0 and -code <= MAX_SIGNAL:
        return -code
    if sandboxed and 128 < code <= 128 + MAX_SIGNAL:
        return code - 128  # bubblewrap's init exits with 128 + signal
    return None


def _exception_message(text: str) -> str:
    for line in reversed(text.splitlines()):
        found = _EXCEPTION_LINE.match(line.strip())
        if found and not line.startswith((" ", "\t")):
            return (found["message"] or "").strip()
    return ""


def _reason(event: Event) -> str | None:
    if event.kind == "os_rolled_back":
        return "failed"
    if event.kind == "os_trial_interrupted":
        return "interrupted"
    return None
