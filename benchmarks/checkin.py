"""Benchmark: check-ins with nothing new, per second, against `bastion service run`.

A device whose TUF metadata is current costs the service exactly what the TUF
client workflow needs: a probe for the next root version (a 404) and the
timestamp file, fetched conditionally (``If-None-Match``, answered ``304``).
Many simulated devices do that concurrently over HTTP/1.1 keep-alive.

In the same run the script measures the floor: the plain static-file rate of the
same server stack (uvicorn with the same options, serving the same
``timestamp.json`` through Starlette's ``StaticFiles``, unconditionally).

    python benchmarks/checkin.py [--concurrency 64] [--seconds 8] [--workers 1]

Last line: ``checkin_per_s=<n> floor_per_s=<n> ratio=<r>``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _loadgen import LoadResult, Session, get, run_clients, wait_for_port
from bastion.cli._localstack import LocalStack, free_port

STATIC_APP = """
from pathlib import Path
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

# The floor: the server stack's plain static-file serving.
app = Starlette(routes=[Mount("/static", app=StaticFiles(directory={directory!r}))])

# For information: the cheapest possible answer on the same stack (bytes held in memory).
BODY = (Path({directory!r}) / "timestamp.json").read_bytes()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]

async def memory(scope, receive, send):
    await send({{"type": "http.response.start", "status": 200, "headers": HEADERS}})
    await send({{"type": "http.response.body", "body": BODY}})
"""


def setup(stack: LocalStack) -> str:
    """A tenant with a product (five groups with TUF repositories) and a published OS."""
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"))
    tenant = stack.bastion_json("tenant", "create", "bench")
    url = stack.start_service()
    try:
        stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant["token"])
        stack.bastion("product", "create", "widget")
        image = stack.root / "os.img"
        key = str(stack.vendor_dir / "os-signing.key")
        stack.bastion("os", "build", "--version", "1.0.0", "--key", key, "-o", str(image))
        stack.bastion("os", "publish", str(image))
        return str(stack.bastion_json("device-group", "show", "widget/Field Test")["id"])
    finally:
        stack.stop_service()


async def checkins(port: int, group: str, concurrency: int, seconds: float, warmup: float) -> LoadResult:
    base = f"/tuf/{group}/metadata"
    status, _, headers = await get(port, f"{base}/timestamp.json")
    if status != 200:
        raise RuntimeError(f"timestamp.json answered {status}")
    etag = headers[b"etag"].decode()
    _, root, _ = await get(port, f"{base}/1.root.json")
    next_root = f"{base}/{int(json.loads(root)['signed']['version']) + 1}.root.json"

    async def one(session: Session) -> bool:
        probe, _, _ = await session.get(next_root)
        timestamp, _, _ = await session.get(f"{base}/timestamp.json", {"If-None-Match": etag})
        return probe == 404 and timestamp == 304

    return await run_clients(port, one, concurrency=concurrency, seconds=seconds, warmup=warmup)


async def static_gets(port: int, concurrency: int, seconds: float, warmup: float) -> LoadResult:
    async def one(session: Session) -> bool:
        status, _, _ = await session.get("/static/timestamp.json")
        return status == 200

    return await run_clients(port, one, concurrency=concurrency, seconds=seconds, warmup=warmup)


def serve_and_load(directory: str, app: str, args: argparse.Namespace) -> LoadResult:
    """Serve ``app`` with uvicorn (the service's options) and GET /static/timestamp.json in a loop."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--workers",
         str(args.workers), "--log-level", "warning", "--no-access-log", "--http", "httptools", "--loop", "uvloop"],
        cwd=directory,
    )  # fmt: skip
    try:
        wait_for_port(port)
        return asyncio.run(static_gets(port, args.concurrency, args.seconds, args.warmup))
    finally:
        server.terminate()
        server.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bastion-checkin-") as tmp:
        stack = LocalStack(Path(tmp))
        print("setting up: tenant, product, OS, TUF repositories …", file=sys.stderr)
        group = setup(stack)
        url = stack.start_service(extra_args=["--workers", str(args.workers)])
        port = int(url.rsplit(":", 1)[1])
        try:
            result = asyncio.run(checkins(port, group, args.concurrency, args.seconds, args.warmup))
            timestamp = asyncio.run(get(port, f"/tuf/{group}/metadata/timestamp.json"))[1]
        finally:
            stack.stop_service()
        print(f"no-change check-ins: {result.ok} ok, {result.failed} failed -> {result.per_second:.0f}/s")

        static_dir = Path(tmp) / "static"
        static_dir.mkdir()
        (static_dir / "timestamp.json").write_bytes(timestamp)
        (Path(tmp) / "static_app.py").write_text(STATIC_APP.format(directory=str(static_dir)))
        floor = serve_and_load(tmp, "static_app:app", args)
        print(f"plain static file (Starlette StaticFiles, same uvicorn options): {floor.per_second:.0f} requests/s")
        memory = serve_and_load(tmp, "static_app:memory", args)
        print(f"for information, bytes from memory on a bare ASGI app: {memory.per_second:.0f} requests/s")
    ratio = result.per_second / floor.per_second if floor.per_second else 0.0
    print(f"checkin_per_s={result.per_second:.0f} floor_per_s={floor.per_second:.0f} ratio={ratio:.3f}")


if __name__ == "__main__":
    main()
