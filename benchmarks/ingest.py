"""Benchmark: error events ingested per second through HTTP, against a raw batched INSERT floor.

Simulated, claimed devices with tenant-issued certificates post signed
error-report batches (COSE_Sign1, 128 records each, a handful of buckets) to
`bastion service run` on loopback, each client on a new connection every 16
batches (as devices upload once per check-in: held connections stay with the
worker that accepted them, and some runs then measured one worker); the service verifies each batch (certificate
chain, signature, CRL, standing), dedups it, buckets its records and writes
events, counters and activity (a worker stores the batches waiting for it as one
group, in one transaction: ADR 0028). In the same run, on the same database, the
floor inserts the same number of event rows per transaction with a plain batched
INSERT (SQLAlchemy Core executemany, one connection).

The two take turns, ``--pairs`` times (ingest for ``--seconds``, the service then
idle while the floor runs for ``--floor-seconds``): on a shared host the load of
other work drifts, and a floor measured once, after the whole ingest, measured
0.45 to 0.65 of itself across runs. The figures are the means over the pairs;
each pair is printed.

    python benchmarks/ingest.py [--devices 64] [--concurrency 16] [--pairs 3] [--seconds 5] [--workers 2]

Last line: ``ingest_per_s=<n> floor_per_s=<n> ratio=<r> health_ratio=<r>``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import secrets
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import uvloop
from sqlalchemy import insert, select

from _health_ratio import measure
from bastion.cli._localstack import LocalStack
from bastion.crypto.certs import certificate_der, issue_device_cert
from bastion.crypto.cose import sign1
from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.service.ca.service import load_signing_ca
from bastion.service.config import Settings
from bastion.service.db import create_engine_for, make_sessionmaker
from bastion.service.models import Device, ErrorEvent, ErrorReportBatch

UTC = dt.UTC
RECORDS_PER_BATCH = 128
EXCEPTIONS = ("ZeroDivisionError", "KeyError", "TimeoutError", "ValueError")


def _record(now: int, index: int) -> dict[str, Any]:
    return {
        "category": "AppCrash",
        "event_class": "Error",
        "event_type": "python_exception",
        "component_id": f"app{index % 2}",
        "version": "1.0.0",
        "count": 1 + index % 3,
        "first_at": now - 60,
        "last_at": now,
        "description": "crashed",
        "exception": EXCEPTIONS[index % len(EXCEPTIONS)],
        "frames": [{"file": "main.py", "function": "run", "line": 10 + index}],
    }


def _batch(device_id: str, key: PrivateKey, cert_der: bytes, now: int) -> bytes:
    payload = {
        "v": 1,
        "device_id": device_id,
        "batch_id": secrets.token_hex(16),
        "iat": now,
        "os_version": "1.0.0",
        "boot_slot": "a",
        "group_id": None,
        "installed": [{"component_id": "app0", "version": "1.0.0"}, {"component_id": "app1", "version": "1.0.0"}],
        "dropped": 0,
        "records": [_record(now, i) for i in range(RECORDS_PER_BATCH)],
    }
    return sign1(cbor2.dumps(payload, canonical=True), key, x5chain=[cert_der])


def setup_devices(stack: LocalStack, count: int) -> tuple[str, list[tuple[str, PrivateKey, bytes]]]:
    """A tenant, and ``count`` claimed devices with certificates from its CA (written straight to the database)."""
    tenant = stack.bastion_json("tenant", "create", "bench")
    settings = Settings.from_env(stack.env())
    engine = create_engine_for(settings.database_url)
    now = dt.datetime.now(UTC)
    devices = []
    try:
        with make_sessionmaker(engine)() as session:
            ca_key, ca_cert = load_signing_ca(session, tenant["tenant_id"], settings.master_key)
            for _ in range(count):
                device_id = secrets.token_hex(32)
                key = generate_private_key()
                session.add(
                    Device(device_id=device_id, tenant_id=tenant["tenant_id"], claimed_at=now, claimed_by="bench")
                )
                cert = issue_device_cert(
                    ca_key, ca_cert, key.public_key(), tenant_id=tenant["tenant_id"], device_id=device_id, now=now
                )
                devices.append((device_id, key, certificate_der(cert)))
            session.commit()
    finally:
        engine.dispose()
    return settings.database_url, devices


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: bytes) -> tuple[int, bytes]:
    head = (
        "POST /api/v1/device/error-reports HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/cose\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    head_bytes = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head_bytes[:-4].split(b"\r\n")
    length = 0
    for line in lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return int(status_line.split()[1]), await reader.readexactly(length)


async def run_load(
    port: int, bodies: list[Iterator[bytes]], seconds: float, warmup: float, per_connection: int = 16
) -> tuple[int, int]:
    """Each client posts its next pre-signed batches; returns (events accepted in the window, failures).

    A client opens a new connection every ``per_connection`` batches, as devices do (one upload per
    check-in): connections held for the whole run stay with whichever worker accepted them, and
    on some runs that was one worker for most of them. The clients' reconnections are staggered,
    as devices' check-ins are: all at once, most of them went to whichever worker accepted first.
    """
    events = failed = 0
    start = time.perf_counter() + warmup
    stop = start + seconds

    async def worker(mine: Iterator[bytes], offset: int) -> None:
        nonlocal events, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for n in itertools.count():
            if time.perf_counter() >= stop:
                break
            body = next(mine, None)
            if body is None:
                break
            if n and (n + offset) % per_connection == 0:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                status, answer = await _post(reader, writer, body)
            except (ConnectionError, asyncio.IncompleteReadError) as exc:  # the service closed it: count, reconnect
                failed += 1
                print(f"connection lost: {exc!r}", file=sys.stderr)
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                continue
            if time.perf_counter() < start:
                continue
            if status == 200 and b'"accepted"' in answer:
                events += RECORDS_PER_BATCH
            else:
                failed += 1
                if failed <= 3:
                    print(f"batch refused: {status} {answer[:200]!r}", file=sys.stderr)
        writer.close()

    await asyncio.gather(*(worker(m, i * per_connection // len(bodies)) for i, m in enumerate(bodies)))
    return events, failed


def insert_floor(database_url: str, device_id: str, tenant_id: str, seconds: float) -> float:
    """Raw batched INSERT of event rows, one transaction per batch of RECORDS_PER_BATCH rows."""
    engine = create_engine_for(database_url)
    now = dt.datetime.now(UTC)
    try:
        with engine.connect() as conn:
            batch_pk = conn.execute(select(ErrorReportBatch.id).limit(1)).scalar_one()
            conn.rollback()
            rows = [
                {
                    "tenant_id": tenant_id,
                    "device_id": device_id,
                    "batch_pk": batch_pk,
                    "bucket_id": "b0000000000000000",
                    "group_id": None,
                    "os_version": "1.0.0",
                    "component_id": f"app{i % 2}",
                    "version": "1.0.0",
                    "category": "AppCrash",
                    "event_class": "Error",
                    "event_type": "python_exception",
                    "count": 1,
                    "first_at": now,
                    "last_at": now,
                    "description": "crashed",
                    "detail": {
                        "exception": EXCEPTIONS[i % len(EXCEPTIONS)],
                        "frames": [{"file": "main.py", "function": "run", "line": i}],
                    },
                    "received_at": now,
                }
                for i in range(RECORDS_PER_BATCH)
            ]
            count = 0
            begin = time.perf_counter()
            while time.perf_counter() - begin < seconds:
                with conn.begin():
                    conn.execute(insert(ErrorEvent), rows)
                count += len(rows)
            return count / (time.perf_counter() - begin)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--pairs", type=int, default=3, help="ingest and floor windows, taking turns")
    parser.add_argument("--seconds", type=float, default=5.0, help="each ingest window")
    parser.add_argument("--floor-seconds", type=float, default=2.0, help="each floor window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=4000, help="pre-signed batches (the load stops when used up)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        stack = LocalStack(Path(tmp))
        print("setting up: tenant and devices …", file=sys.stderr)
        database_url, devices = setup_devices(stack, args.devices)
        tenant_id = _tenant_of(database_url)
        now = int(time.time())
        signed = [_batch(d, k, c, now) for d, k, c in (devices[i % len(devices)] for i in range(args.batches))]
        bodies = [iter(signed[i :: args.concurrency]) for i in range(args.concurrency)]
        print(f"{len(signed)} batches of {RECORDS_PER_BATCH} records, {len(signed[0])} bytes each", file=sys.stderr)
        port = int(stack.start_service(extra_args=["--workers", str(args.workers)]).rsplit(":", 1)[1])
        ingest_rates, floor_rates, failed = [], [], 0
        try:
            for pair in range(1, args.pairs + 1):
                warmup = args.warmup if pair == 1 else 0.0
                begin = time.perf_counter()
                events, lost = uvloop.run(run_load(port, bodies, args.seconds, warmup))
                window = min(args.seconds, time.perf_counter() - begin - warmup)
                failed += lost
                ingest_rates.append(events / window if window > 0 else 0.0)
                floor_rates.append(insert_floor(database_url, devices[0][0], tenant_id, args.floor_seconds))
                rate, floor = ingest_rates[-1], floor_rates[-1]
                print(
                    f"pair {pair}/{args.pairs}: ingest {rate:.0f}/s ({events} events, {lost} batches failed, "
                    f"{window:.1f}s), floor {floor:.0f}/s -> {rate / floor:.3f}",
                    flush=True,
                )
            print(f"batches per group commit (mean over the run): {_mean_group(port):.2f}")
        finally:
            stack.stop_service()
        if failed:
            # The service's own words on the failures (its log is gone with the temporary directory).
            lines = stack.service_log.read_text().splitlines()
            print("\n".join([line for line in lines if "bastion/" in line or "Error" in line][-12:]), file=sys.stderr)
        ingest_per_s = statistics.fmean(ingest_rates)
        floor_per_s = statistics.fmean(floor_rates)
        print(f"ingest: {failed} batches failed in all; raw batched INSERT floor: same database, one connection")
        health_ratio = measure(database_url)
    ratio = ingest_per_s / floor_per_s if floor_per_s else 0.0
    print(
        f"ingest_per_s={ingest_per_s:.0f} floor_per_s={floor_per_s:.0f} "
        f"ratio={ratio:.3f} health_ratio={health_ratio:.3f}"
    )


def _mean_group(port: int) -> float:
    """The mean of the service's ``bastion_error_report_group_size`` histogram (its /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("bastion_error_report_group_size_sum", "bastion_error_report_group_size_count"):
            values[name] = float(value)
    count = values.get("bastion_error_report_group_size_count", 0.0)
    return values.get("bastion_error_report_group_size_sum", 0.0) / count if count else 0.0


def _tenant_of(database_url: str) -> str:
    engine = create_engine_for(database_url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(select(Device.tenant_id).limit(1)).scalar_one())
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
