"""A tiny single-threaded scheduler for the OS's periodic jobs.

Each job is a callable that takes ``now`` and returns when it wants to run next.
Attestation is the first job; the update agent and the error-report uploader
join it later. The scheduler sleeps on a ``threading.Event`` so a signal
handler can stop it promptly.

Example:
    >>> import threading, datetime as dt
    >>> stop = threading.Event()
    >>> sched = Scheduler(clock=lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC), stop=stop)
    >>> def once(now):
    ...     stop.set()
    ...     return now + dt.timedelta(hours=1)
    >>> sched.add("demo", once, first_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    >>> sched.run()
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["MAX_SLEEP_S", "WAKE_POLL_S", "Job", "Scheduler"]

#: Longest single sleep; the clock is re-read at least this often (wall-clock jumps).
MAX_SLEEP_S = 60.0
#: How soon a sleeping scheduler notices :meth:`Scheduler.wake` from another thread.
WAKE_POLL_S = 0.2
#: A job that asks to run again sooner than this is a poll (the app supervisor every
#: second): its "next run" is logged at debug, so an idle device writes no line a second.
QUIET_RESCHEDULE_S = 60.0

Job = Callable[[dt.datetime], dt.datetime]

_log = logging.getLogger("bastion.os.scheduler")


@dataclass
class _Entry:
    name: str
    job: Job
    due: dt.datetime
    running: bool = False
    #: A reschedule that came while the job ran (it wins over the job's own answer if earlier).
    requested: dt.datetime | None = None


class Scheduler:
    """Runs jobs when they are due until ``stop`` is set.

    Args:
        clock: returns the current time (timezone-aware).
        stop: set it to end :meth:`run`.
    """

    def __init__(self, *, clock: Callable[[], dt.datetime], stop: threading.Event) -> None:
        self._clock = clock
        self._stop = stop
        self._entries: list[_Entry] = []
        self._wake = threading.Event()
        self._lock = threading.Lock()

    def add(self, name: str, job: Job, *, first_at: dt.datetime) -> None:
        """Register ``job`` to run first at ``first_at``."""
        self._entries.append(_Entry(name=name, job=job, due=first_at))

    def reschedule(self, name: str, at: dt.datetime) -> None:
        """Move job ``name`` to run at ``at`` (e.g. run the update check right after attestation).

        Safe from another thread: a reschedule that arrives while the job runs
        is kept, and applies if it is earlier than the time the job asks for.
        """
        with self._lock:
            for entry in self._entries:
                if entry.name != name:
                    continue
                if entry.running:
                    entry.requested = at if entry.requested is None else min(at, entry.requested)
                else:
                    entry.due = at

    def wake(self) -> None:
        """End the current sleep soon (another thread rescheduled a job), within :data:`WAKE_POLL_S`."""
        self._wake.set()

    def _sleep(self, seconds: float) -> None:
        # The stop event ends the sleep at once; a wake within one poll interval.
        remaining = seconds
        while remaining > 0 and not self._wake.is_set():
            if self._stop.wait(min(remaining, WAKE_POLL_S)):
                return
            remaining -= WAKE_POLL_S
        self._wake.clear()

    def due_times(self) -> dict[str, dt.datetime]:
        """When each job runs next (for status and tests)."""
        return {entry.name: entry.due for entry in self._entries}

    def run_due(self) -> None:
        """Run every job that is due now, and reschedule it."""
        for entry in self._entries:
            now = self._clock()
            with self._lock:
                if entry.due > now:
                    continue
                entry.running = True
            try:
                answer = entry.job(now)
            except BaseException:
                with self._lock:
                    entry.running, entry.requested = False, None
                raise
            with self._lock:
                entry.running = False
                requested, entry.requested = entry.requested, None
                entry.due = answer if requested is None else min(answer, requested)
            level = logging.DEBUG if (entry.due - now).total_seconds() < QUIET_RESCHEDULE_S else logging.INFO
            _log.log(level, "%s: next run at %s", entry.name, entry.due.isoformat(timespec="seconds"))

    def run(self) -> None:
        """Run jobs until ``stop`` is set. A job's exception ends the loop."""
        while not self._stop.is_set():
            self.run_due()
            if not self._entries:
                return
            wait = (min(entry.due for entry in self._entries) - self._clock()).total_seconds()
            self._sleep(min(max(wait, 0.0), MAX_SLEEP_S))
