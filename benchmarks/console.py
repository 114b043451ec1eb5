"""Benchmark: the console's fleet page and ``/metrics`` with 100,000 devices in the database.

The devices (and a day of attestations, one per device) are bulk-inserted into
a migrated database (SQLite under a temp dir by default; ``--database-url`` for
PostgreSQL). In the same run, on the same rows, the script measures:

* the reference: a bare ``SELECT count(*) FROM devices WHERE tenant_id = ?``;
* the fleet page: ``GET /console/fleet`` through the service's ASGI app, signed
  in with a console session; server time (the app's own time from the request to
  the last byte of the rendered page), median of ``--repeat`` requests;
* ``GET /metrics`` the same way;
* the overview's own computation, uncached (the page serves a snapshot of it that
  is refreshed in the background once 30 s old, ``BASTION_CONSOLE_FLEET_MAX_AGE_S``;
  the first view of a tenant, or one after ten times that age, pays this).

    python benchmarks/console.py [--devices 100000] [--repeat 15] [--database-url URL]

Last line: ``fleet_page_ratio=<r> metrics_ms=<n>`` (targets: ratio <= 3, metrics < 50 ms).
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import secrets
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from bastion.service.app import create_app
from bastion.service.config import Settings
from bastion.service.console.views.fleet import fleet_overview
from bastion.service.db import create_engine_for, make_sessionmaker, migrate
from bastion.service.models import Attestation, Device, DeviceGroup, Product
from bastion.service.tenants.service import create_tenant

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

#: Rows per INSERT batch of the setup.
CHUNK = 10_000
OS_VERSIONS = ("1.0.0", "1.1.0", "1.2.0", "2.0.0")
GROUPS = ("Development", "Field Test", "Production", "Field Test OS Evaluation", "Production OS Evaluation")


def setup(sessions: sessionmaker[Session], devices: int, *, now: dt.datetime, master_key: bytes) -> tuple[str, str]:
    """A tenant with one product, five groups and ``devices`` devices with a day of attestations.

    Returns the tenant id and its admin token.
    """
    with sessions() as session:
        created = create_tenant(session, "bench", master_key=master_key, now=now)
        product = Product(id=str(uuid.uuid4()), tenant_id=created.tenant_id, name="widget", created_at=now)
        session.add(product)
        session.flush()
        groups = [
            DeviceGroup(
                id=str(uuid.uuid4()),
                tenant_id=created.tenant_id,
                product_id=product.id,
                name=name,
                update_policy="UpdateAll",
                os_feed="retail-eval" if "Evaluation" in name else "retail",
                created_at=now,
                updated_at=now,
            )
            for name in GROUPS
        ]
        session.add_all(groups)
        session.commit()
        group_ids = [g.id for g in groups]
        for start in range(0, devices, CHUNK):
            rows: list[dict[str, Any]] = []
            attestations: list[dict[str, Any]] = []
            for n in range(start, min(devices, start + CHUNK)):
                did = f"{n:064x}"
                seen = now - dt.timedelta(seconds=(n * 7919) % (9 * 24 * 3600))
                failed = n % 37 == 0
                rows.append(
                    {
                        "device_id": did,
                        "tenant_id": created.tenant_id,
                        "claimed_at": now - dt.timedelta(days=30),
                        "claimed_by": "bench",
                        "revoked_at": now if n % 997 == 0 else None,
                        "last_attested_at": None if n % 101 == 0 else seen,
                        "last_result": None if n % 101 == 0 else ("failed" if failed else "ok"),
                        "os_version": OS_VERSIONS[n % len(OS_VERSIONS)],
                        "cert_not_after": seen + dt.timedelta(hours=24),
                        "group_id": group_ids[n % len(group_ids)],
                    }
                )
                attestations.append(
                    {
                        "at": now - dt.timedelta(seconds=(n * 613) % (24 * 3600)),
                        "device_id": did,
                        "tenant_id": created.tenant_id,
                        "result": "failed" if failed else "ok",
                        "reason": "os_unknown" if failed else "ok",
                        "detail": "",
                    }
                )
            session.execute(insert(Device), rows)
            session.execute(insert(Attestation), attestations)
            session.commit()
    return created.tenant_id, created.admin_token


class ServerTimed:
    """An ASGI wrapper that records each HTTP request's server time: from the call to the last body byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.last_ms = 0.0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()

        async def timed_send(message: Any) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self.last_ms = (time.perf_counter() - start) * 1000

        await self.app(scope, receive, timed_send)


def sign_in(client: TestClient, token: str) -> None:
    """Sign the client in to the console with ``token`` (the sign-in form's double-submit CSRF token)."""
    form = client.get("/console/signin")
    csrf = re.search(r'name="csrf_token" value="([^"]*)"', form.text)
    if csrf is None:
        raise SystemExit("no sign-in form at /console/signin")
    r = client.post("/console/signin", data={"token": token, "csrf_token": csrf.group(1)}, follow_redirects=False)
    if r.status_code != 303:
        raise SystemExit(f"console sign-in failed: {r.status_code}")


def server_ms(client: TestClient, app: ServerTimed, path: str, repeat: int) -> float:
    """The median server time of ``GET path`` (one warm-up request first)."""
    times = []
    for i in range(repeat + 1):
        r = client.get(path)
        if r.status_code != 200:
            raise SystemExit(f"GET {path}: {r.status_code}")
        if i:
            times.append(app.last_ms)
    return statistics.median(times)


def measure(client: TestClient, app: ServerTimed, count: Callable[[], int], repeat: int) -> tuple[float, float, float]:
    """Reference, fleet page and metrics times, interleaved per round so load changes hit all three."""
    refs, pages, scrapes = [], [], []
    for _ in range(3):
        refs.append(median_ms(count, max(1, repeat // 3)))
        pages.append(server_ms(client, app, "/console/fleet", max(1, repeat // 3)))
        scrapes.append(server_ms(client, app, "/metrics", max(1, repeat // 3)))
    return statistics.median(refs), statistics.median(pages), statistics.median(scrapes)


def create_proposed_indexes(engine: Engine) -> None:
    """Indexes the fleet page would use (``--proposed-indexes``; in the bench database only, not a migration)."""
    pg = engine.dialect.name == "postgresql"
    statements = [
        "CREATE INDEX ix_bench_devices_fleet ON devices (tenant_id) INCLUDE "
        "(revoked_at, last_result, cert_not_after, last_attested_at, group_id, os_version)"
        if pg
        else "CREATE INDEX ix_bench_devices_fleet ON devices "
        "(tenant_id, revoked_at, last_result, cert_not_after, last_attested_at, group_id, os_version)",
        "CREATE INDEX ix_bench_attestations_tenant_at ON attestations (tenant_id, at, result)",
    ]
    with engine.begin() as conn:
        for sql in statements:
            conn.execute(text(sql))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:  # VACUUM: no transaction
        conn.execute(text("VACUUM ANALYZE" if pg else "ANALYZE"))


def median_ms(run: Callable[[], object], repeat: int) -> float:
    """The median wall time of ``run`` in milliseconds (one warm-up call first)."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--database-url", default=None, help="default: a new SQLite file under a temp dir")
    parser.add_argument(
        "--proposed-indexes", action="store_true", help="also measure with the indexes a migration would add"
    )
    args = parser.parse_args(argv)
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory(prefix="bastion-bench-console-") as tmp:
        home = Path(tmp) / "home"
        url = args.database_url or f"sqlite:///{home / 'service.db'}"
        migrate(url)
        master_key = secrets.token_bytes(32)
        engine = create_engine_for(url)
        sessions = make_sessionmaker(engine)
        t0 = time.perf_counter()
        tenant_id, token = setup(sessions, args.devices, now=now, master_key=master_key)
        print(
            f"setup: {args.devices} devices and attestations inserted in {time.perf_counter() - t0:.1f} s"
            f" ({url.split(':')[0]})"
        )

        def count() -> int:
            with sessions() as session:
                return int(
                    session.scalar(select(func.count()).select_from(Device).where(Device.tenant_id == tenant_id)) or 0
                )

        settings = Settings(home=home, database_url=url, master_key=master_key)
        app = ServerTimed(create_app(settings, migrate_on_startup=False))
        with TestClient(app) as client:
            sign_in(client, token)
            reference, page, metrics_ms = measure(client, app, count, args.repeat)
            print(f"reference: SELECT count(*) over {count()} devices: {reference:.2f} ms")
            print(f"fleet page (GET /console/fleet, server time, render included): {page:.2f} ms")
            print(f"metrics scrape (GET /metrics, server time): {metrics_ms:.2f} ms")
            with sessions() as session:
                uncached = median_ms(lambda: fleet_overview(session, tenant_id, now=now), 3)
            print(
                f"fleet overview computed uncached (a tenant's first view, and each background refresh):"
                f" {uncached:.2f} ms, {uncached / reference:.1f}x the count"
            )
            if args.proposed_indexes:
                create_proposed_indexes(engine)
                ref2, page2, _ = measure(client, app, count, args.repeat)
                print(
                    f"with the proposed indexes (not in the schema): reference {ref2:.2f} ms,"
                    f" fleet page {page2:.2f} ms, ratio {page2 / ref2:.2f}"
                )
        engine.dispose()
        print(f"fleet_page_ratio={page / reference:.2f} metrics_ms={metrics_ms:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
