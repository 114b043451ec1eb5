"""Fleet overviews kept for a short while per process, refreshed behind the reader's back.

The overview is a pass over every device and a window of attestations: about
0.3 to 0.5 s at 100,000 devices (``benchmarks/console.py`` prints it). A page
view serves the last overview computed for its tenant and window while it is
younger than ``max_age``. An older one is still served, and one background
refresh is started for it; an overview older than ``max_stale`` (nobody looked
for a while) is computed again before the page is answered. The page says how
old its counts are.

Example:
    >>> cache = FleetSnapshots(max_age=dt.timedelta(seconds=30))  # doctest: +SKIP
    >>> snap = cache.get(("t1", "24h"), now=now, compute=lambda: fleet_overview(s, "t1", now=now))  # doctest: +SKIP
    >>> snap.computed_at  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from bastion.service.console.views.fleet import FleetOverview

__all__ = ["MAX_ENTRIES", "FleetSnapshot", "FleetSnapshots"]

_log = logging.getLogger(__name__)

#: Bound on the overviews kept (tenant x chart window); the least recently used goes first.
MAX_ENTRIES = 1024

Key = tuple[str, str]


@dataclass(frozen=True)
class FleetSnapshot:
    """An overview and the time it was computed at."""

    overview: FleetOverview
    computed_at: dt.datetime


class FleetSnapshots:
    """A bounded, thread-safe cache of fleet overviews with stale-while-refresh.

    Time is a parameter: ``get`` takes ``now``, and the refresh's ``compute``
    callback computes the overview at its own ``now``.
    """

    def __init__(
        self,
        *,
        max_age: dt.timedelta,
        max_stale: dt.timedelta | None = None,
        spawn: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self.max_age = max_age
        self.max_stale = max_stale if max_stale is not None else max_age * 10
        self._spawn = spawn or _spawn_daemon
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, FleetSnapshot] = OrderedDict()
        self._refreshing: set[Key] = set()

    def get(
        self,
        key: Key,
        *,
        now: dt.datetime,
        compute: Callable[[], FleetSnapshot],
        background: Callable[[], FleetSnapshot],
    ) -> FleetSnapshot:
        """The snapshot for ``key`` at ``now``.

        ``compute`` runs in the caller's thread (no snapshot, or one older than
        ``max_stale``); ``background`` runs in a refresh thread (a snapshot older
        than ``max_age``) and must open its own database session.
        """
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
        if found is None or now - found.computed_at > self.max_stale or self.max_age <= dt.timedelta(0):
            fresh = compute()
            self._store(key, fresh)
            return fresh
        if now - found.computed_at > self.max_age:
            self._refresh(key, background)
        return found

    def _store(self, key: Key, snapshot: FleetSnapshot) -> None:
        with self._lock:
            current = self._entries.get(key)
            if current is None or current.computed_at <= snapshot.computed_at:
                self._entries[key] = snapshot
                self._entries.move_to_end(key)
            while len(self._entries) > MAX_ENTRIES:
                self._entries.popitem(last=False)

    def _refresh(self, key: Key, background: Callable[[], FleetSnapshot]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)

        def run() -> None:
            try:
                self._store(key, background())
            except Exception as exc:  # noqa: BLE001 - a failed refresh keeps the old snapshot; the next view retries
                _log.warning("fleet overview refresh failed: %s", type(exc).__name__)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        self._spawn(run)


def _spawn_daemon(run: Callable[[], None]) -> None:
    threading.Thread(target=run, name="fleet-overview-refresh", daemon=True).start()
