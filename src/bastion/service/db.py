"""Database engines, sessions and migrations.

Nothing here runs at import: entry points call :func:`create_engine_for` and
:func:`migrate` (the app does so in its lifespan).

Example:
    >>> url = "sqlite:///:memory:"
    >>> engine = create_engine_for(url)
    >>> Session = make_sessionmaker(engine)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import weakref
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["MIGRATIONS_DIR", "alembic_config", "create_engine_for", "make_sessionmaker", "migrate", "writer_lock"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: How long a SQLite writer waits for the lock before failing, in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 10_000
#: Connection pool bounds for server databases (per worker process).
POOL_SIZE = 10
POOL_MAX_OVERFLOW = 20


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


class _SqliteWriterLock:
    """One process's threads queue on a thread lock; processes then queue on an ``flock`` of a lock file."""

    def __init__(self, lock_path: Path | None) -> None:
        self._thread_lock = threading.Lock()
        self._lock_path = lock_path
        self._fd: int | None = None

    def __enter__(self) -> _SqliteWriterLock:
        self._thread_lock.acquire()
        try:
            if self._lock_path is not None:
                if self._fd is None:
                    self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                    weakref.finalize(self, os.close, self._fd)  # closed with the engine's lock
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


_sqlite_writers: weakref.WeakKeyDictionary[Engine, _SqliteWriterLock] = weakref.WeakKeyDictionary()
_sqlite_writers_guard = threading.Lock()


def writer_lock(bind: Engine | Connection) -> AbstractContextManager[object]:
    """A lock that serializes write transactions on a SQLite database, across threads and processes.

    SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
    its busy handler for 1 to 100 ms before it looks again: a lock freed meanwhile sits
    unused. Writers that queue on this lock instead are handed it at once: the threads
    of one process on a thread lock, then the processes (``service run --workers N``)
    on an ``flock`` of ``<database>-writer.lock`` beside the database file. Writers that
    do not take it still meet SQLite's own lock. Other databases get a no-op.
    """
    engine = bind.engine
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _sqlite_writers_guard:
        lock = _sqlite_writers.get(engine)
        if lock is None:
            database = engine.url.database
            lock_path = Path(f"{database}-writer.lock") if database and database != ":memory:" else None
            lock = _sqlite_writers[engine] = _SqliteWriterLock(lock_path)
    return lock


def create_engine_for(url: str) -> Engine:
    """Create an engine for ``url``; SQLite gets WAL, a busy timeout and foreign keys.

    The parent directory of a SQLite database file is created if needed.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            # Create it 0600 ourselves: SQLite gives its -wal/-shm files the same mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        engine = create_engine(url, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=POOL_SIZE, max_overflow=POOL_MAX_OVERFLOW, pool_pre_ping=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Return the session factory used by requests and local admin commands."""
    return sessionmaker(engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    """Return an Alembic config that runs the packaged migrations on ``engine``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def migrate(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (``alembic upgrade head``)."""
    engine = create_engine_for(url)
    try:
        command.upgrade(alembic_config(engine), "head")
    finally:
        engine.dispose()
