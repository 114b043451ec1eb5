"""The one runner of the service's periodic tasks (ADR 0026): interval, jitter, stop, errors logged and counted."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy.exc import OperationalError

from bastion.service import metrics
from bastion.service.errors import NotFound
from bastion.service.periodic import PeriodicTask, describe_failure, next_delay, periodic, run_periodically


async def _until(condition: Callable[[], bool]) -> None:
    """Poll (threads set these conditions, so no asyncio.Event can carry them) for at most 5 s."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


def _count(task: str, outcome: str) -> float:
    return metrics.PERIODIC_RUNS.labels(task=task, outcome=outcome)._value.get()  # type: ignore[attr-defined]


def test_a_failing_pass_is_logged_counted_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) % 2:
            raise RuntimeError("postgresql://admin:hunter2@db/prod")  # a message that must never reach the log
        return "did work"

    errors, oks = _count("flaky", "error"), _count("flaky", "ok")

    async def main() -> None:
        async with periodic(PeriodicTask("flaky", flaky, interval_s=0.01)):
            await _until(lambda: len(calls) >= 6)

    with caplog.at_level(logging.INFO, logger="bastion.service.periodic"):
        asyncio.run(main())
    assert len(calls) >= 6
    assert _count("flaky", "error") - errors >= 3
    assert _count("flaky", "ok") - oks >= 3
    text = caplog.text
    assert "periodic task flaky failed: RuntimeError" in text
    assert "periodic task flaky: did work" in text
    assert "hunter2" not in text


def test_the_first_pass_runs_at_once_and_none_is_a_task_that_is_off() -> None:
    ran = threading.Event()

    async def main() -> None:
        async with periodic(None, PeriodicTask("first", ran.set, interval_s=3600.0), None):
            for _ in range(500):
                if ran.is_set():
                    return
                await asyncio.sleep(0.01)

    started = time.monotonic()
    asyncio.run(main())
    assert ran.is_set()
    assert time.monotonic() - started < 5  # the hour-long interval did not hold the exit either


def test_shutdown_lets_a_pass_in_progress_finish_and_starts_no_other() -> None:
    entered, release = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow() -> None:
        entered.set()
        release.wait(5)
        finished.append("done")

    async def main() -> None:
        async with periodic(PeriodicTask("slow", slow, interval_s=0.01), grace_s=5):
            await _until(entered.is_set)
            threading.Timer(0.1, release.set).start()
        assert finished == ["done"]  # the exit waited for the pass (the engine is disposed of after this)

    asyncio.run(main())
    time.sleep(0.05)
    assert finished == ["done"]


def test_a_pass_that_outlives_the_grace_is_cancelled() -> None:
    release = threading.Event()

    async def main() -> float:
        async with periodic(PeriodicTask("stuck", lambda: release.wait(10), interval_s=0.01), grace_s=0.05):
            await asyncio.sleep(0.05)
            started = time.monotonic()
        waited = time.monotonic() - started
        release.set()  # the thread itself can not be killed; asyncio.run waits for it at the end
        return waited

    assert asyncio.run(main()) < 2


def test_run_periodically_stops_when_asked() -> None:
    calls: list[int] = []

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.create_task(run_periodically(PeriodicTask("stoppable", lambda: calls.append(1), 0.01), stop))
        await _until(lambda: len(calls) >= 2)
        stop.set()
        await asyncio.wait_for(loop, timeout=5)

    asyncio.run(main())


def test_jitter_spreads_the_wait_within_its_bounds() -> None:
    assert next_delay(60.0, 0.1, 0.0) == pytest.approx(54.0)
    assert next_delay(60.0, 0.1, 0.5) == pytest.approx(60.0)
    assert next_delay(60.0, 0.1, 0.999999) == pytest.approx(66.0, rel=1e-4)
    assert next_delay(60.0, 0.0, 0.9) == 60.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad Name", "interval_s": 1.0}, "name"),
        ({"name": "ok", "interval_s": 0.0}, "interval"),
        ({"name": "ok", "interval_s": float("nan")}, "interval"),
        ({"name": "ok", "interval_s": 1.0, "jitter": 1.0}, "jitter"),
    ],
)
def test_a_task_is_checked_when_made(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PeriodicTask(run=lambda: None, **kwargs)  # type: ignore[arg-type]


def test_failures_are_described_without_their_text() -> None:
    assert describe_failure(NotFound("no such group", code="group_not_found")) == "no such group (group_not_found)"
    db = OperationalError("SELECT secret FROM t WHERE pw = %(pw)s", {"pw": "hunter2"}, Exception("boom"))
    assert describe_failure(db) == "database error OperationalError"
    assert describe_failure(PermissionError(13, "Permission denied")) == "PermissionError: Permission denied"
    assert describe_failure(ValueError("token=abc")) == "ValueError"
