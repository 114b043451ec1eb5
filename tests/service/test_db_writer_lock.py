"""db.writer_lock: SQLite writers queue across threads and across worker processes (an flock)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from bastion.service.db import create_engine_for, writer_lock

#: A second process tries the lock file without waiting: exit 0 if it got it, 1 if it is held.
_TRY = """
import fcntl, sys
fd = open(sys.argv[1], "a")
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
sys.exit(0)
"""


def _other_process_gets(lock_file: Path) -> bool:
    return subprocess.run([sys.executable, "-c", _TRY, str(lock_file)], check=False).returncode == 0


def test_another_process_waits_while_a_writer_holds_the_lock(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'bastion.db'}")
    lock_file = tmp_path / "bastion.db-writer.lock"
    try:
        with writer_lock(engine):
            assert lock_file.exists()
            assert lock_file.stat().st_mode & 0o077 == 0
            assert not _other_process_gets(lock_file)
        assert _other_process_gets(lock_file)
        with writer_lock(engine):  # taken again after release
            assert not _other_process_gets(lock_file)
    finally:
        engine.dispose()


def test_threads_of_one_process_take_turns(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'bastion.db'}")
    inside: list[int] = []
    overlaps: list[int] = []

    def writer() -> None:
        for _ in range(20):
            with writer_lock(engine):
                inside.append(1)
                if len(inside) > 1:
                    overlaps.append(len(inside))
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=writer) for _ in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.dispose()
    assert overlaps == []


def test_an_exception_inside_releases_the_lock(tmp_path: Path) -> None:
    engine = create_engine_for(f"sqlite:///{tmp_path / 'bastion.db'}")
    try:
        try:
            with writer_lock(engine):
                raise RuntimeError("boom")
        except RuntimeError:
            pass
        assert _other_process_gets(tmp_path / "bastion.db-writer.lock")
    finally:
        engine.dispose()


def test_an_in_memory_database_and_other_databases_need_no_file(tmp_path: Path) -> None:
    engine = create_engine_for("sqlite:///:memory:")
    try:
        with writer_lock(engine):
            pass
    finally:
        engine.dispose()
    assert not list(tmp_path.iterdir())
