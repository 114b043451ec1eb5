"""The batches waiting in one worker process, taken by its ingest threads a group at a time (ADR 0028).

A request hands its body to :meth:`IngestQueue.submit` and awaits its answer. While
fewer than ``threads`` groups are in work, a new one starts at once with every batch
waiting (up to :data:`store.MAX_GROUP`): a lone batch is stored alone, with no added
wait; under load, the batches that arrive while a group is being written make up
the next group. One thread checks a group's batches one after the other and stores
them in one transaction (:func:`ingest.accept_group`): on SQLite a second thread of
the process would only share its GIL with the writer-lock holder.

A queue belongs to one event loop (the one its requests run on).
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import functools
from dataclasses import dataclass, field

import anyio.to_thread
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.cose import decode_sign1
from bastion.crypto.errors import CryptoError
from bastion.service import metrics
from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports import ingest
from bastion.service.errorreports.limits import ErrorReportSettings
from bastion.service.errorreports.store import MAX_GROUP

__all__ = [
    "BUSY_RETRY_AFTER_S",
    "INGEST_THREADS",
    "MAX_WAITING",
    "MAX_WAITING_MALFORMED",
    "IngestBusyError",
    "IngestQueue",
]

#: Groups in work at once per worker process. On SQLite one: writers take turns on one lock
#: (db.writer_lock), and parallelism comes from worker processes, each with its own GIL.
#: PostgreSQL's writers do not queue on one lock, and a few threads keep its round trips overlapped.
INGEST_THREADS = {"sqlite": 1, "postgresql": 4}
#: Batches that may wait in one worker process (each body at most 64 KiB: 32 MiB at most). Past it, a
#: batch is answered 503 with ``Retry-After``; the device keeps it and retries later (it is idempotent).
MAX_WAITING = 512
#: Bodies that are not even a COSE_Sign1 within the size bound (looked at on the event loop, no lookup)
#: wait apart, at most this many: anonymous junk must not take devices' places. They are refused,
#: and recorded, by the same checks as every batch.
MAX_WAITING_MALFORMED = 32
#: Seconds a device is told to wait when the queue is full.
BUSY_RETRY_AFTER_S = 5


class IngestBusyError(Exception):
    """The worker's queue of batches is full: answer 503 with ``Retry-After``, store nothing."""


@dataclass
class _Waiting:
    body: bytes
    now: dt.datetime
    settings: ErrorReportSettings
    answer: asyncio.Future[ingest.Accepted] = field(repr=False)
    #: Not a COSE_Sign1 within the size bound (it waits in the malformed bodies' count).
    malformed: bool = False


def _malformed(body: bytes, settings: ErrorReportSettings) -> bool:
    """Whether ``body`` is refusable without a lookup: over the size bound, or not a COSE_Sign1."""
    try:
        decode_sign1(body, max_size=settings.max_batch_bytes)
    except CryptoError:
        return True
    return False


class IngestQueue:
    """Error-report batches of one event loop, stored a group at a time by at most ``threads`` threads."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        refusals: RefusalLog,
        *,
        threads: int,
        pending_log_requests: ingest.PendingLogRequests,
    ) -> None:
        self._factory, self._refusals, self._threads = factory, refusals, threads
        self._pending_log_requests = pending_log_requests
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._malformed = 0  # of those waiting
        self._working = 0  # counted here, not by the tasks' done callbacks: those run a loop turn late
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, body: bytes, *, now: dt.datetime, settings: ErrorReportSettings) -> ingest.Accepted:
        """The batch's answer once its group is stored.

        Raises:
            ServiceError: the batch was refused (as :func:`ingest.accept_batch` raises it).
            IngestBusyError: :data:`MAX_WAITING` batches (or :data:`MAX_WAITING_MALFORMED` malformed
                bodies, for a malformed one) wait already; nothing was stored.
        """
        malformed = _malformed(body, settings)
        if malformed and self._malformed >= MAX_WAITING_MALFORMED:
            raise IngestBusyError
        if not malformed and len(self._waiting) - self._malformed >= MAX_WAITING:
            raise IngestBusyError
        answer: asyncio.Future[ingest.Accepted] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiting(body, now, settings, answer, malformed))
        self._malformed += malformed
        if self._working < self._threads:
            self._working += 1
            task = asyncio.create_task(self._work())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await answer

    async def _work(self) -> None:
        try:
            await self._groups()
        finally:
            self._working -= 1  # with no await after the last look at the queue: no batch is left behind

    async def _groups(self) -> None:
        while self._waiting:
            group = [self._waiting.popleft() for _ in range(min(MAX_GROUP, len(self._waiting)))]
            self._malformed -= sum(w.malformed for w in group)
            metrics.ERROR_REPORT_GROUP_SIZE.observe(len(group))
            # The settings are the app's (one object for every request of this loop).
            try:
                answers = await anyio.to_thread.run_sync(
                    functools.partial(self._accept, [(w.body, w.now) for w in group], group[0].settings)
                )
            except BaseException as exc:  # a fault of the store itself: every batch of the group gets it
                for waiting in group:
                    if not waiting.answer.done():
                        waiting.answer.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
                if not isinstance(exc, Exception):
                    raise
                continue
            for waiting, answer in zip(group, answers, strict=True):
                if waiting.answer.done():  # the client went away meanwhile
                    continue
                if isinstance(answer, Exception):  # a refusal (ServiceError), or a fault of that batch alone
                    waiting.answer.set_exception(answer)
                else:
                    waiting.answer.set_result(answer)

    def _accept(
        self, bodies: list[tuple[bytes, dt.datetime]], settings: ErrorReportSettings
    ) -> list[ingest.Accepted | Exception]:
        """:func:`ingest.accept_group` in a session of its own, opened and closed in the calling (worker) thread."""
        with self._factory() as session:
            return ingest.accept_group(
                session,
                bodies,
                refusals=self._refusals,
                settings=settings,
                pending_log_requests=self._pending_log_requests,
            )
