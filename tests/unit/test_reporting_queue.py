"""The device's failure queue (bastion.os.reporting.queue): coalescing, sealing, bounds, and kill -9 safety."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from bastion.crypto.error_report import ErrorRecord
from bastion.os.reporting.queue import ReportQueue


def _record(kind: int = 0, at: int = 10) -> ErrorRecord:
    return ErrorRecord("AppExit", "Warning", "exit_code", f"app{kind}", "1.0.0", 1, at, at, "exit 3", exit_code=3)


def test_repeats_coalesce_into_one_record(tmp_path: Path) -> None:
    queue = ReportQueue(tmp_path / "q.json")
    for at in (5, 9, 7):
        queue.add(_record(at=at))
    (only,) = queue.open_records()
    assert (only.count, only.first_at, only.last_at) == (3, 5, 9)


def test_a_sealed_batch_is_resent_unchanged_until_acknowledged(tmp_path: Path) -> None:
    queue = ReportQueue(tmp_path / "q.json")
    queue.add(_record())
    batch = queue.seal(iat=20)
    queue.add(_record())  # a repeat after sealing goes into a new open record
    again = ReportQueue(tmp_path / "q.json").seal(iat=99)  # e.g. after a reboot
    assert again == batch
    assert [r.count for r in batch.records] == [1]
    assert not queue.ack("0" * 32)
    assert queue.ack(batch.batch_id)
    assert [r.count for r in ReportQueue(tmp_path / "q.json").open_records()] == [1]


def test_an_empty_seal_is_the_heartbeat(tmp_path: Path) -> None:
    queue = ReportQueue(tmp_path / "q.json")
    batch = queue.seal(iat=1)
    assert batch.records == ()
    assert len(batch.batch_id) == 32


def test_when_full_the_oldest_go_and_are_counted(tmp_path: Path) -> None:
    queue = ReportQueue(tmp_path / "q.json", max_records=4)
    for kind in range(6):
        queue.add(_record(kind))
    assert [r.component_id for r in queue.open_records()] == ["app2", "app3", "app4", "app5"]
    batch = queue.seal(iat=1)
    assert batch.dropped == 2
    queue.ack(batch.batch_id)
    assert queue.seal(iat=2).dropped == 0


def test_a_damaged_file_starts_empty_and_bad_records_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_bytes(b"\xff{not json")
    assert ReportQueue(path).pending() == 0
    good = ReportQueue(path)
    good.add(_record())
    body = json.loads(path.read_text())
    body["open"].append({"category": "Nope"})
    path.write_text(json.dumps(body))
    assert ReportQueue(path).pending() == 1
    path.write_bytes(b" " * (2 * 1024 * 1024))
    assert ReportQueue(path).pending() == 0


class QueueMachine(RuleBasedStateMachine):
    """The queue against a model: counts add up across seal, ack and reload."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.path = Path(tempfile.mkdtemp()) / "q.json"
        self.queue = ReportQueue(self.path, max_records=8)
        self.recorded = 0
        self.acked = 0
        self.dropped_acked = 0

    @rule(kind=st.integers(0, 11))
    def add(self, kind: int) -> None:
        self.queue.add(_record(kind))
        self.recorded += 1

    @rule()
    def seal_and_ack(self) -> None:
        batch = self.queue.seal(iat=1)
        assert self.queue.ack(batch.batch_id)
        self.acked += sum(r.count for r in batch.records)
        self.dropped_acked += batch.dropped

    @rule()
    def reload(self) -> None:
        self.queue = ReportQueue(self.path, max_records=8)

    @invariant()
    def nothing_lost_silently(self) -> None:
        queued = sum(r.count for r in self.queue.open_records())
        sealed = self.queue.sealed()
        queued += sum(r.count for r in sealed.records) if sealed else 0
        # Every recorded event is acknowledged, queued, or inside a dropped record (counted as a record).
        assert self.acked + queued <= self.recorded
        if self.dropped_acked + self.queue.dropped == 0:
            assert self.acked + queued == self.recorded


TestQueueMachine = QueueMachine.TestCase
TestQueueMachine.settings = settings(max_examples=30, stateful_step_count=30, deadline=None)


#: How many times the worker is killed (each run re-imports the queue: about 1 s apiece on 2 cores).
KILLS = 12

_WORKER = r"""
import json, os, sys
from pathlib import Path
from bastion.crypto.error_report import ErrorRecord
from bastion.os.reporting.queue import ReportQueue

root = Path(sys.argv[1])
server = root / "server.json"          # what the fake service acknowledged: batch_id -> count
journal = root / "journal"             # one line per record() that returned
queue = ReportQueue(root / "q.json")
seen = json.loads(server.read_text()) if server.exists() else {}
(root / "ready").touch()
i = 0
while True:
    i += 1
    if i % 5 == 0:
        batch = queue.seal(iat=i)
        total = sum(r.count for r in batch.records)
        if batch.batch_id in seen:
            assert seen[batch.batch_id] == total, "a resent batch changed"
        else:
            seen[batch.batch_id] = total  # the service counts it once
            tmp = root / "server.tmp"
            tmp.write_text(json.dumps(seen))
            os.replace(tmp, server)
        queue.ack(batch.batch_id)
    else:
        queue.add(ErrorRecord("AppExit", "Warning", "exit_code", f"app{i % 3}", "1.0.0", 1, i, i, "x", exit_code=1))
        with journal.open("a") as handle:
            handle.write("r\n")
"""


def test_kill_9_at_random_points_loses_and_doubles_nothing(tmp_path: Path) -> None:
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    rng = random.Random(7)  # noqa: S311 - kill timing, not crypto
    errors = tmp_path / "stderr"
    for _ in range(KILLS):
        (tmp_path / "ready").unlink(missing_ok=True)
        with errors.open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(tmp_path)], env=env, stderr=err)
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.02 + rng.random() * 0.2)
        if proc.poll() is not None:
            raise AssertionError(errors.read_text())
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    journaled = len((tmp_path / "journal").read_text().splitlines())
    acked = sum(json.loads((tmp_path / "server.json").read_text()).values())
    queue = ReportQueue(tmp_path / "q.json")
    sealed = queue.sealed()
    queued = sum(r.count for r in queue.open_records()) + (sum(r.count for r in sealed.records) if sealed else 0)
    assert queue.dropped == 0
    # A kill between a record() that returned and its journal line leaves at most one unjournaled event per run.
    assert journaled <= acked + queued <= journaled + KILLS
    assert journaled > 25
