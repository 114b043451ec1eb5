"""Helpers for the group-commit tests: devices, answers as strings, and batches sent through an IngestQueue."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from fleet_world import StatusDevice, make_status_device
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.eligibility.refusals import RefusalLog
from bastion.service.errorreports import ingest
from bastion.service.errorreports.ingest_queue import IngestBusyError, IngestQueue
from bastion.service.errorreports.limits import DEFAULT_ERROR_REPORT_SETTINGS
from bastion.service.errors import ServiceError
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock

Answer = ingest.Accepted | Exception


def statuses(answers: Sequence[Answer]) -> list[str]:
    """Each answer as its status, or the code of the ServiceError that refused it."""
    return [a.status if isinstance(a, ingest.Accepted) else getattr(a, "code", type(a).__name__) for a in answers]


def claimed_devices(
    sessions: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock, n: int, key: bytes
) -> list[StatusDevice]:
    """``n`` devices claimed by ``tenant``, each with its certificate."""
    return [make_status_device(sessions, owner_tenant=tenant.tenant_id, master_key=key, now=clock()) for _ in range(n)]


def count_rows(sessions: sessionmaker[Session], model: Any, *where: Any) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def new_queue(sessions: sessionmaker[Session]) -> IngestQueue:
    """A worker's queue with one thread, as on SQLite."""
    return IngestQueue(sessions, RefusalLog(), threads=1, pending_log_requests=ingest.no_log_requests)


def queue_statuses(queue: IngestQueue, bodies: Sequence[bytes], now: dt.datetime) -> list[str]:
    """The bodies submitted together on one event loop; each answer's status, refusal code, "busy",
    or "500 <exception type>" (what the endpoint turns into a 500)."""

    async def send(body: bytes) -> str:
        try:
            return (await queue.submit(body, now=now, settings=DEFAULT_ERROR_REPORT_SETTINGS)).status
        except ServiceError as exc:
            return exc.code
        except IngestBusyError:
            return "busy"
        except Exception as exc:  # noqa: BLE001 - reported, not raised: the test compares answers
            return f"500 {type(exc).__name__}"

    async def main() -> list[str]:
        return list(await asyncio.gather(*(send(b) for b in bodies)))

    return asyncio.run(main())
