"""One PostgreSQL database per pytest-xdist worker (docs/adr/0020-parallel-tests.md).

Under ``pytest -n N`` every worker (``gw0``, ``gw1``, ...) gets a database of its
own on the server named by ``BASTION_TEST_PG_URL``: ``<db>_<worker>_<run>``,
e.g. ``test_gw0_1a2b3c4d``, where ``<run>`` comes from xdist's test-run id, so two
runs on one server (two worktrees, two CI jobs) never share or drop each other's
databases. The worker then *is* that URL: :func:`worker_url` rewrites it, and
``tests/conftest.py`` puts it back into ``BASTION_TEST_PG_URL`` and ``PG_URL``, so
tests read the variable as they always did.

A worker holds a session-level advisory lock named after its database for as
long as it runs. At start it drops every ``<db>_gw*`` database whose lock nobody
holds (left by a killed run), then creates its own; at the end it drops it.
Without xdist nothing changes: tests use the database the variable names.
"""

from __future__ import annotations

import os
import re

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

__all__ = ["WorkerDatabase", "worker_db_name", "worker_url"]

#: Only these characters reach a CREATE DATABASE statement (names are quoted as well).
_SAFE_NAME = re.compile(r"[a-z0-9_]{1,63}")
#: Characters of the xdist test-run id kept in a database name.
RUN_ID_CHARS = 8
#: How long a DROP DATABASE may wait for a lock before the run fails instead of hanging.
DDL_LOCK_TIMEOUT = "20s"


def worker_db_name(base_url: str, worker: str, run_id: str) -> str:
    """``<db>_<worker>_<run>`` for the database of ``base_url`` (lower-case, checked)."""
    base = make_url(base_url).database or "postgres"
    name = f"{base}_{worker}_{run_id[:RUN_ID_CHARS]}".lower()
    if not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"unusable per-worker database name {name!r}")
    return name


def worker_url(base_url: str, worker: str | None = None, run_id: str | None = None) -> str:
    """``base_url`` pointed at this xdist worker's database; unchanged outside xdist."""
    worker = worker or os.environ.get("PYTEST_XDIST_WORKER")
    run_id = run_id or os.environ.get("PYTEST_XDIST_TESTRUNUID", "")
    if not worker:
        return base_url
    name = worker_db_name(base_url, worker, run_id or "local")
    return make_url(base_url).set(database=name).render_as_string(hide_password=False)


class WorkerDatabase:
    """Creates (and later drops) one worker's database, holding its advisory lock meanwhile."""

    def __init__(self, base_url: str, url: str) -> None:
        self.base_url = base_url
        self.name = make_url(url).database or ""
        self.prefix = f"{make_url(base_url).database or 'postgres'}_gw"
        self._engine = create_engine(base_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._lock: Connection | None = None

    def create(self) -> None:
        """Take the lock, drop abandoned worker databases, create this one."""
        self._lock = self._engine.connect()
        try:
            taken = self._lock.execute(text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": self.name}).scalar()
            if not taken:
                raise RuntimeError(f"another pytest worker holds database {self.name}")
            self._create()
        except BaseException:
            self._lock.close()
            self._lock = None
            raise

    def _create(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(text(f"SET lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
            names = conn.execute(
                text("SELECT datname FROM pg_database WHERE starts_with(datname, :p)"), {"p": self.prefix}
            ).scalars()
            for stale in [n for n in names if n != self.name]:
                self._drop_if_abandoned(conn, stale)
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self._checked(self.name)}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{self._checked(self.name)}"'))

    def drop(self) -> None:
        """Drop this worker's database and release the lock."""
        try:
            with self._engine.connect() as conn:
                conn.execute(text(f"SET lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self._checked(self.name)}" WITH (FORCE)'))
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            self._engine.dispose()

    @staticmethod
    def _checked(name: str) -> str:
        if not _SAFE_NAME.fullmatch(name):
            raise ValueError(f"unusable per-worker database name {name!r}")
        return name

    def _drop_if_abandoned(self, conn: Connection, name: str) -> None:
        """Drop ``name`` if no running worker holds its lock (a killed run left it)."""
        if not _SAFE_NAME.fullmatch(name):
            return
        if not conn.execute(text("SELECT pg_try_advisory_lock(hashtext(:n))"), {"n": name}).scalar():
            return  # a worker of another run is using it
        try:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(hashtext(:n))"), {"n": name})
