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


_sqlite_writers: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_sqlite_writers_guard = threading.Lock()


def writer_lock(bind: Engine | Connection) -> AbstractContextManager[object]:
    """A lock that serializes one process's write transactions on a SQLite database.

    SQLite has one writer at a time, and a writer that finds the lock taken sleeps in
    its busy handler for 1 to 100 ms before it looks again: a lock freed meanwhile sits
    unused. Threads of one process that queue on this lock instead are handed it at
    once. Other processes still meet SQLite's own lock. Other databases get a no-op.
    """
    engine = bind.engine
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _sqlite_writers_guard:
        lock = _sqlite_writers.get(engine)
        if lock is None:
            lock = _sqlite_writers[engine] = threading.Lock()
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
