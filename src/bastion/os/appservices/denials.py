"""An app start's refusals go into the event queue one by one, up to a bound; the rest are counted.

Every refusal at the choke point is a security event (``app_denied``), and the
event queue is bounded (oldest dropped). Without a bound of its own, an app
that sends a few hundred refused requests would push every older event out of
the queue (another app's ``sandbox_violation``, an ``os_rolled_back``), its own
first refusal included, and rewrite the queue file on flash for each. So each
app start records each distinct refusal once (all unknown ops count as one),
at most :data:`MAX_RECORDED_DENIALS` of them, and counts the rest; when the
start ends one more event says how many were not recorded one by one.

Example::

    denials = DenialBudget(ctx.record)
    ctx = dataclasses.replace(ctx, record=denials.record)
    ...
    denials.close()                      # at the end of the app start
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["DENIED_EVENT", "MAX_RECORDED_DENIALS", "DenialBudget"]

#: The event kind of a refused request.
DENIED_EVENT = "app_denied"
#: Distinct refusals one app start records one by one: room for one per capability op of the
#: table (43 today) and more, still a quarter of the event queue.
MAX_RECORDED_DENIALS = 64
#: How the choke point words a request for an op that is not in the table.
_UNKNOWN_OP = ": no such operation"


class DenialBudget:
    """Passes events to ``record``, bounding the ``app_denied`` ones of one app start.

    Args:
        record: writes an event: ``record(kind, detail)``.
        max_recorded: distinct refusals recorded one by one.
    """

    def __init__(self, record: Callable[[str, str], None], *, max_recorded: int = MAX_RECORDED_DENIALS) -> None:
        self._record = record
        self._max = max_recorded
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._closed = False
        #: Refusals not recorded one by one (repeats, and distinct ones past the bound).
        self.unrecorded = 0

    def record(self, kind: str, detail: str) -> None:
        """Record an event; an ``app_denied`` only if it is new and within the bound."""
        if kind == DENIED_EVENT:
            key = _UNKNOWN_OP if detail.endswith(_UNKNOWN_OP) else detail
            with self._lock:
                if key in self._seen or len(self._seen) >= self._max:
                    self.unrecorded += 1
                    return
                self._seen.add(key)
        self._record(kind, detail)

    def close(self) -> None:
        """Say how many refusals were not recorded one by one (once, at the end of the start)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            count = self.unrecorded
        if count:
            self._record(DENIED_EVENT, f"{count} more refusals of this app start were not recorded one by one")
