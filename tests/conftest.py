"""Shared fixtures: migrated databases (SQLite and PostgreSQL), settings, the app and tenants.

Database fixtures are parametrized over ``sqlite`` and ``postgres``; the
PostgreSQL variant is marked ``postgres`` and uses ``BASTION_TEST_PG_URL``
(default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Every
database is built with the Alembic migrations (never ``create_all``):

* SQLite: migrated once per session into a template file, copied per test.
* PostgreSQL: migrated once per session into a fresh schema named
  ``bastion_test_<random>`` (dropped at the end), and every table is truncated
  before each test, so tests are independent and runs can repeat or overlap.
  Under pytest-xdist (``pytest -n N``, what ``make test`` runs) each worker has
  a database of its own, ``<db>_gw<N>_<run>`` (``tests/_pgworkers.py``), created
  before the worker's first ``postgres`` test and dropped at its end;
  ``BASTION_TEST_PG_URL`` and :data:`PG_URL` name it, so a test reads them as
  usual. A test that touches PostgreSQL must carry the ``postgres`` marker.

Parallel runs (docs/adr/0020-parallel-tests.md): a test writes only under
``tmp_path``/``tmp_path_factory``, binds loopback port 0 (or asks
``bastion.cli._localstack.free_port``), and never depends on running alone.

Typical use::

    def test_something(client, tenant):
        r = client.get("/api/v1/whoami", headers=bearer(tenant.admin_token))

Fixtures: ``db_url``, ``engine``, ``session_factory``, ``master_key``, ``clock``,
``settings``, ``app``, ``client``, ``tenant``, ``make_tenant``.
Helpers: :func:`bearer`, :class:`FakeClock` (``from conftest import bearer``).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from _pgworkers import WorkerDatabase, worker_url
from bastion.service.app import create_app
from bastion.service.config import Settings
from bastion.service.db import create_engine_for, make_sessionmaker, migrate
from bastion.service.models import Base
from bastion.service.tenants.service import CreatedTenant, create_tenant

with warnings.catch_warnings():
    # Starlette >= 1.x warns that its TestClient prefers ``httpx2`` over ``httpx``;
    # httpx is what the project depends on, so the warning is not actionable here.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

#: The server and database named by the environment (the one a plain, serial run uses).
PG_BASE_URL = os.environ.get("BASTION_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: The database this process tests on: under xdist, the worker's own (tests/_pgworkers.py).
PG_URL = worker_url(PG_BASE_URL)
if PG_URL != PG_BASE_URL:
    os.environ["BASTION_TEST_PG_URL"] = PG_URL  # subprocesses and late readers see the worker's database
#: Terminal-size variables the suite never inherits from whatever runs it.
RUNNER_TERMINAL_VARS = ("COLUMNS", "LINES")
# pytest imports readline (``_pytest.capture._readline_workaround``), and GNU readline puts
# COLUMNS=80 and LINES=24 into the C environment: a serial run's ``os.environ`` never shows
# them, but every xdist worker is a child of that process and starts with them. rich's Console
# fixes its width from COLUMNS when it is built (``bastion.cli.output`` builds one at import),
# so a worker's CLI tables stayed 80 wide whatever COLUMNS a test set later. No test module is
# imported yet here; a test that needs a width sets COLUMNS through monkeypatch.
for _name in RUNNER_TERMINAL_VARS:
    os.environ.pop(_name, None)
#: A fixed, timezone-aware start time for the fake clock.
T0 = dt.datetime(2026, 1, 15, 12, 0, 0, tzinfo=dt.UTC)


def bearer(token: str) -> dict[str, str]:
    """Return the Authorization header for an operator token."""
    return {"Authorization": f"Bearer {token}"}


class FakeClock:
    """A settable clock; pass it where the code takes ``now`` or a clock callable."""

    def __init__(self, start: dt.datetime = T0) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, delta: dt.timedelta) -> None:
        """Move the clock forward by ``delta``."""
        self.now += delta


_worker_database: WorkerDatabase | None = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before an xdist worker's first ``postgres`` test, create the worker's database."""
    global _worker_database
    if _worker_database is None and PG_URL != PG_BASE_URL and item.get_closest_marker("postgres"):
        database = WorkerDatabase(PG_BASE_URL, PG_URL)
        database.create()
        _worker_database = database


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the worker's database (session fixtures, which use it, are finished by now)."""
    global _worker_database
    if _worker_database is not None:
        _worker_database.drop()
        _worker_database = None


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("db-template") / "template.db"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _pg_schema_url() -> Iterator[str]:
    schema = f"bastion_test_{secrets.token_hex(6)}"
    admin = create_engine_for(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    url_str = url.render_as_string(hide_password=False)
    try:
        migrate(url_str)
        yield url_str
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, fully migrated database (one per test)."""
    if request.param == "sqlite":
        path = tmp_path / "service.db"
        shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("_pg_schema_url")
    engine = create_engine_for(url)
    try:
        tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
        with engine.begin() as conn:
            # A session leaked by an earlier test would block TRUNCATE forever; fail instead.
            conn.execute(text("SET LOCAL lock_timeout = '10s'"))
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on the test database (disposed after the test)."""
    eng = create_engine_for(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    """A session factory on the test database."""
    return make_sessionmaker(engine)


@pytest.fixture
def master_key() -> bytes:
    """A fresh random 32-byte master key."""
    return secrets.token_bytes(32)


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock starting at :data:`T0`; the app built by ``app`` uses it."""
    return FakeClock()


@pytest.fixture
def settings(tmp_path: Path, db_url: str, master_key: bytes) -> Settings:
    """Service settings on the test database, with home under ``tmp_path``."""
    home = tmp_path / "home"
    home.mkdir()
    return Settings(home=home, database_url=db_url, master_key=master_key)


@pytest.fixture
def app(settings: Settings, clock: FakeClock) -> FastAPI:
    """The service app, on the test database and the fake clock."""
    return create_app(settings, clock=clock, migrate_on_startup=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A TestClient with the app's lifespan running."""
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def make_tenant(
    session_factory: sessionmaker[Session], master_key: bytes, clock: FakeClock
) -> Callable[[str], CreatedTenant]:
    """Factory: create a tenant (with its CA and first admin token) by name."""

    def _make(name: str) -> CreatedTenant:
        with session_factory() as session:
            return create_tenant(session, name, master_key=master_key, now=clock())

    return _make


@pytest.fixture
def tenant(make_tenant: Callable[[str], CreatedTenant]) -> CreatedTenant:
    """A tenant named ``acme`` (``.tenant_id``, ``.name``, ``.admin_token``)."""
    return make_tenant("acme")


__all__ = ["T0", "FakeClock", "TestClient", "bearer"]


#: How long the in-thread uvicorn server may take to start.
SERVER_START_TIMEOUT_S = 10


@pytest.fixture
def live_url(settings: Settings, clock: FakeClock) -> Iterator[str]:
    """The service app served by uvicorn on a random loopback port, in a thread."""
    import threading
    import time

    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, clock=clock, migrate_on_startup=False), host="127.0.0.1", port=0, log_level="warning"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
