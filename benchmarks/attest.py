"""Benchmark: full attestations per second against `bastion service run` on loopback.

Many simulated devices attest concurrently over HTTP: each fetches a challenge,
signs an EAT with its Alias key and posts it; the service verifies the chain,
the signature, the nonce, the claim and the OS measurement, writes the database
and issues a 24-hour certificate. In the same run the script measures the
in-process crypto floor on one core (verify the EAT, verify the Alias
certificate, issue the device certificate) and prints the ratio.

It then boots one real emulated device (`bastion device run --once`) and
reports the peak RSS of its monitor and OS processes.

The access log (one JSON line per request, on by default, ADR 0019) is measured
in the same run: the load runs against the service with ``--no-access-log`` and
with it, alternating (``--access-log-pairs``), and ``access_log_ratio`` is the
rate with the log over the rate without (target: >= 0.95); ``access_log_cpu_ratio``
is the same from service CPU per attestation (steadier on a shared machine), and
``access_log_loss_pct`` is the loss it implies. Both swing with the neighbours on a
shared host, so the script also measures, in-process and in the same run, what
the access log adds to one request through the real ``Observer`` with the
service's logging configuration (``access_line_us``: with minus without, the
line written to a file), and ``access_log_share_pct``: that cost for the two
requests of an attestation over the service CPU one attestation took.

    python benchmarks/attest.py [--devices 256] [--concurrency 64] [--seconds 10] [--workers 2] [--access-log-pairs 2]

Last line: ``attest_per_s=<n> floor_per_s=<n> ratio=<r> access_log_ratio=<r> access_log_cpu_ratio=<r>
access_log_loss_pct=<p> access_line_us=<n> access_log_share_pct=<p>`` (one line).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from bastion.cli._localstack import LocalStack
from bastion.crypto import certs, cose, dice, eat, keys

UTC = dt.UTC


@dataclass
class SimDevice:
    device_id: str
    alias_key: keys.PrivateKey
    chain: tuple[bytes, bytes]
    ueid: bytes
    measurements: tuple[eat.Measurement, ...]
    tls_pub: bytes


def make_devices(count: int, vendor_key: keys.PrivateKey, vendor_cert: object, os_digest: bytes) -> list[SimDevice]:
    """Simulated chips: DeviceID cert from the vendor CA, Alias cert with the OS measurement."""
    now = dt.datetime.now(UTC)
    bootloader_digest = hashlib.sha256(b"benchmark bootloader").digest()
    devices = []
    for _ in range(count):
        uds = os.urandom(32)
        device_key = dice.derive_key_pair(uds)
        device_cert = certs.issue_device_id_cert(vendor_key, vendor_cert, device_key.public_key(), now=now)  # type: ignore[arg-type]
        cdi_os = dice.derive_cdi(dice.derive_cdi(uds, bootloader_digest), os_digest)
        alias_key = dice.derive_key_pair(cdi_os)
        tcb = certs.TcbInfo(
            vendor="Bastion",
            model="emulated",
            version="1.0.0",
            svn=1,
            layer=1,
            fwids=(certs.Fwid(certs.OID_SHA256, bootloader_digest), certs.Fwid(certs.OID_SHA256, os_digest)),
        )
        alias_cert = certs.issue_alias_cert(device_key, device_cert, alias_key.public_key(), tcb, now=now)
        from cryptography.hazmat.primitives.serialization import Encoding

        devices.append(
            SimDevice(
                device_id=keys.device_id_from_public_key(device_key.public_key()),
                alias_key=alias_key,
                chain=(alias_cert.public_bytes(Encoding.DER), device_cert.public_bytes(Encoding.DER)),
                ueid=keys.ueid_from_public_key(device_key.public_key()),
                measurements=(eat.Measurement("bootloader", bootloader_digest), eat.Measurement("os", os_digest)),
                tls_pub=keys.public_key_bytes(keys.generate_private_key().public_key()),
            )
        )
    return devices


def make_eat(device: SimDevice, nonce: bytes) -> bytes:
    claims = eat.EatClaims(
        nonce=nonce,
        ueid=device.ueid,
        secboot=True,
        dbgstat=eat.DebugStatus.DISABLED_PERMANENTLY,
        measurements=device.measurements,
        swname="bastion-os",
        swversion="1.0.0",
        boot_slot="A",
        rollback_counters={"os": 1},
        key_to_certify=device.tls_pub,
        iat=int(time.time()),
    )
    return eat.sign_eat(claims, device.alias_key, x5chain=device.chain)


# --- a minimal HTTP/1.1 keep-alive client on uvloop: the load generator must stay cheap ----


async def http(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str, body: bytes, ctype: str
) -> tuple[int, bytes]:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    head_bytes = await reader.readuntil(b"\r\n\r\n")
    status_line, *header_lines = head_bytes[:-4].split(b"\r\n")
    status = int(status_line.split()[1])
    length = 0
    for line in header_lines:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return status, await reader.readexactly(length)


async def run_load(
    port: int, devices: list[SimDevice], concurrency: int, seconds: float, warmup: float
) -> tuple[int, int, float]:
    ok = 0
    failed = 0
    start = time.perf_counter() + warmup
    stop = start + seconds

    async def worker(index: int) -> None:
        nonlocal ok, failed
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        mine = devices[index::concurrency]
        i = 0
        while time.perf_counter() < stop:
            device = mine[i % len(mine)]
            i += 1
            body = json.dumps({"device_id": device.device_id}).encode()
            status, answer = await http(reader, writer, "/api/v1/attestation/challenge", body, "application/json")
            if status != 200:
                failed += 1
                continue
            nonce = base64.urlsafe_b64decode(json.loads(answer)["nonce"] + "==")
            status, answer = await http(
                reader, writer, "/api/v1/attestation", make_eat(device, nonce), "application/eat+cwt"
            )
            if time.perf_counter() >= start:
                if status == 200:
                    ok += 1
                else:
                    failed += 1
                    if failed <= 3:
                        print(f"attestation refused: {status} {answer[:200]!r}", file=sys.stderr)
        writer.close()

    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return ok, failed, seconds


def _process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            pids.extend(_process_tree(int(child)))
    return pids


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (from /proc)."""
    total = 0
    for each in _process_tree(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    return total / os.sysconf("SC_CLK_TCK")


def crypto_floor(devices: list[SimDevice], tenant_key: keys.PrivateKey, seconds: float) -> float:
    """In-process, one core: verify the EAT, verify the Alias certificate, issue the device certificate.

    Exactly those three (issue 2, item 12): decode the EAT and verify its COSE
    signature under the Alias key; verify the Alias certificate's signature by
    the DeviceID key; sign a device certificate. The DeviceID certificate's own
    signature (by the vendor CA) is not part of the floor.
    """
    tenant_ca = certs.make_ca("bench tenant CA", tenant_key, now=dt.datetime.now(UTC))
    count = 0
    deadline = time.perf_counter() + seconds
    nonce = os.urandom(32)
    tokens = [make_eat(d, nonce) for d in devices[:64]]
    begin = time.perf_counter()
    while time.perf_counter() < deadline:
        token = tokens[count % len(tokens)]
        message, claims = eat.decode_eat(token)
        alias = certs.load_certificate_der(message.x5chain[0])
        device_id_cert = certs.load_certificate_der(message.x5chain[1])
        now = dt.datetime.now(UTC)
        cose.verify_sign1(message, alias.public_key())  # type: ignore[arg-type]
        alias.verify_directly_issued_by(device_id_cert)
        certs.issue_device_cert(
            tenant_key,
            tenant_ca,
            keys.load_public_key_bytes(claims.key_to_certify),
            tenant_id="bench",
            device_id="0" * 64,
            now=now,
        )
        count += 1
    return count / (time.perf_counter() - begin)


def observer_cost_us(access_log: bool, requests: int = 20_000) -> float:
    """Microseconds per request through the service's ``Observer`` around an empty app, log on or off.

    The logging is configured as ``bastion service run`` configures it (``log_config``), with the
    access handler writing to a temporary file instead of stderr.
    """
    import logging
    import logging.config

    from bastion.service.observability.logconfig import ACCESS_LOGGER, log_config
    from bastion.service.observability.middleware import Observer

    logging.config.dictConfig(log_config("warning", access_log=access_log))
    access = logging.getLogger(ACCESS_LOGGER)
    observer = Observer()
    scope = {"type": "http", "method": "POST", "path": "/api/v1/attestation", "headers": [(b"host", b"127.0.0.1")]}

    async def app(scope: object, receive: object, send: object) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})  # type: ignore[operator]
        await send({"type": "http.response.body", "body": b"{}"})  # type: ignore[operator]

    async def send(message: object) -> None:
        return None

    async def receive() -> dict[str, object]:
        return {"type": "http.request"}

    async def serve() -> float:
        begin = time.perf_counter()
        for i in range(requests):
            await observer(scope, receive, send, app)  # type: ignore[arg-type]
            if i % 16 == 0:
                await asyncio.sleep(0)  # a loop turn ends now and then, as it does under load
        return (time.perf_counter() - begin) / requests * 1e6

    with tempfile.NamedTemporaryFile("w", prefix="bastion-access-") as sink:
        for handler in access.handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sink)
        try:
            return asyncio.run(serve())
        finally:
            logging.config.dictConfig({"version": 1, "disable_existing_loggers": False})
            for handler in access.handlers[:]:
                access.removeHandler(handler)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--access-log-pairs",
        type=int,
        default=2,
        help="Runs without and with the log, in alternating order (2: off-on, on-off, so drift cancels).",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        stack = LocalStack(Path(tmp))
        print("setting up: vendor, tenant, OS image, devices …", file=sys.stderr)
        setup = stack_setup(stack, args.devices)
        rates: dict[bool, list[float]] = {False: [], True: []}
        cpu_per: dict[bool, list[float]] = {False: [], True: []}
        for pair in range(args.access_log_pairs):
            # The order alternates (off/on, then on/off): a later run in a pair meets a bigger database.
            for access_log in (False, True) if pair % 2 == 0 else (True, False):
                flag = "--access-log" if access_log else "--no-access-log"
                port = int(stack.start_service(extra_args=["--workers", str(args.workers), flag]).rsplit(":", 1)[1])
                try:
                    print(
                        f"load ({flag}): {args.concurrency} connections, {args.seconds}s after {args.warmup}s warm-up",
                        file=sys.stderr,
                    )
                    if stack.service is None:
                        raise RuntimeError("the service is not running")
                    server_cpu0, client_cpu0 = cpu_seconds(stack.service.pid), time.process_time()
                    ok, failed, seconds = uvloop.run(
                        run_load(port, setup.devices, args.concurrency, args.seconds, args.warmup)
                    )
                    server_cpu = cpu_seconds(stack.service.pid) - server_cpu0
                    client_cpu = time.process_time() - client_cpu0
                finally:
                    stack.stop_service()
                rates[access_log].append(ok / seconds)
                cpu_per[access_log].append(server_cpu / max(ok, 1))
                print(
                    f"  {flag}: {ok / seconds:.0f}/s ({failed} failed), "
                    f"service CPU {1e6 * server_cpu / max(ok, 1):.0f} us per attestation",
                    file=sys.stderr,
                )
        line_samples = []
        for _ in range(5):  # alternating, the minimum of each: the least disturbed by the neighbours
            line_samples.append((observer_cost_us(access_log=False), observer_cost_us(access_log=True)))
        for off_us, on_us in line_samples:
            print(f"  in-process Observer: {off_us:.1f} us without the access log, {on_us:.1f} us with it")
        access_line_us = min(on for _, on in line_samples) - min(off for off, _ in line_samples)
        without_log, with_log = sum(rates[False]), sum(rates[True])
        access_log_ratio = with_log / without_log if without_log else 0.0
        # On a shared machine throughput swings with the neighbours; service CPU per attestation does not.
        cpu_ratio = sum(cpu_per[False]) / sum(cpu_per[True]) if sum(cpu_per[True]) else 0.0
        print(
            f"access log: {with_log / len(rates[True]):.0f}/s with, {without_log / len(rates[False]):.0f}/s without "
            f"(ratio {access_log_ratio:.3f}); service CPU per attestation ratio {cpu_ratio:.3f}"
        )
        loss_pct = 100 * (1 - cpu_ratio) if cpu_ratio else 0.0
        # An attestation is two requests (challenge, then the EAT), each with one access line.
        cpu_us = 1e6 * min(cpu_per[True]) if cpu_per[True] else 0.0
        share_pct = 100 * 2 * access_line_us / cpu_us if cpu_us else 0.0
        print(
            f"access log loss: {loss_pct:.1f} % of service CPU per attestation (load runs, noisy); "
            f"{access_line_us:.1f} us per access line in-process = {share_pct:.2f} % of the {cpu_us:.0f} us "
            "an attestation took (two lines each)"
        )
        attest_per_s = ok / seconds  # the last run: the default service (access log on)
        print(f"full attestations: {ok} ok, {failed} failed in {seconds:.1f}s -> {attest_per_s:.0f}/s")
        elapsed = seconds + args.warmup
        print(
            f"CPU during the load: service {server_cpu / elapsed:.2f} cores, load generator "
            f"{client_cpu / elapsed:.2f} cores; service CPU per attestation "
            f"{1e6 * server_cpu / max(ok, 1) * seconds / elapsed:.0f} us"
        )
        floor_per_s = crypto_floor(setup.devices, keys.generate_private_key(), 3.0)
        print(f"crypto floor (one core, in-process): {floor_per_s:.0f}/s")
        rss = device_rss(stack, setup)
        if rss:
            print(
                f"device peak RSS: monitor {rss.get('monitor', 0) / 1024:.1f} MB, os {rss.get('os', 0) / 1024:.1f} MB"
            )
    ratio = attest_per_s / floor_per_s if floor_per_s else 0.0
    print(
        f"attest_per_s={attest_per_s:.0f} floor_per_s={floor_per_s:.0f} ratio={ratio:.3f} "
        f"access_log_ratio={access_log_ratio:.3f} access_log_cpu_ratio={cpu_ratio:.3f} "
        f"access_log_loss_pct={loss_pct:.1f} access_line_us={access_line_us:.1f} access_log_share_pct={share_pct:.2f}"
    )


@dataclass
class Setup:
    devices: list[SimDevice]
    vendor_cert: object
    device_dir: Path


def stack_setup(stack: LocalStack, count: int) -> Setup:
    """Vendor, trusted CA, tenant, a published OS and ``count`` claimed simulated devices."""
    stack.bastion("vendor", "init", "--dir", str(stack.vendor_dir))
    stack.bastion("service", "trust-vendor", str(stack.vendor_dir / "ca.pem"))
    stack.bastion("service", "trust-os-publisher", str(stack.vendor_dir / "os-signing.pub.pem"))
    tenant = stack.bastion_json("tenant", "create", "bench")
    os_image = stack.root / "os.img"
    stack.bastion(
        "os", "build", "--version", "1.0.0", "--key", str(stack.vendor_dir / "os-signing.key"), "-o", str(os_image)
    )
    os_digest = hashlib.sha256(os_image.read_bytes()).digest()
    vendor_key = keys.load_private_key_pem((stack.vendor_dir / "ca.key").read_bytes())
    vendor_cert = certs.load_certificate_pem((stack.vendor_dir / "ca.pem").read_bytes())
    devices = make_devices(count, vendor_key, vendor_cert, os_digest)
    # One real device too, for the RSS figures of its monitor and OS processes.
    device_dir = stack.device_dir("real")
    stack.bastion("device", "manufacture", "--dir", str(device_dir), "--vendor", str(stack.vendor_dir))
    stack.bastion("device", "flash", "--dir", str(device_dir), "--os", str(os_image))
    real_id = stack.bastion_json("device", "info", "--dir", str(device_dir))["device_id"]
    url = stack.start_service()
    try:
        stack.bastion("login", "--url", url, "--token-stdin", stdin=tenant["token"])
        stack.bastion("os", "publish", str(os_image))
        import httpx

        from bastion.crypto.voucher import VoucherLimits, sign_voucher

        # Claimed in bulk with vendor vouchers (a claim needs proof; issue 7 §1).
        ids = [d.device_id for d in devices] + [real_id]
        per_voucher = VoucherLimits().max_devices
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tenant['token']}"}) as client:
            for start in range(0, len(ids), per_voucher):
                voucher = sign_voucher(
                    vendor_key,
                    vendor_cert,
                    tenant_id=tenant["tenant_id"],
                    device_ids=ids[start : start + per_voucher],
                    now=dt.datetime.now(dt.UTC),
                )
                body = {"voucher": base64.b64encode(voucher).decode("ascii")}
                answer = client.post("/api/v1/devices/claim/voucher", json=body, timeout=120)
                answer.raise_for_status()
                if answer.json()["refused"]:
                    raise SystemExit(f"the bench voucher was refused for some devices: {answer.json()['refused'][:3]}")
    finally:
        stack.stop_service()
    return Setup(devices, vendor_cert, device_dir)


def device_rss(stack: LocalStack, setup: Setup) -> dict[str, int]:
    """Boot the real device once and return the peak RSS (KiB) of its monitor and OS processes."""
    url = stack.start_service()
    try:
        result = stack.bastion_json("device", "run", "--dir", str(setup.device_dir), "--service", url, "--once")
    finally:
        stack.stop_service()
    return {name: int(kib) for name, kib in result.get("peak_rss_kib", {}).items()}


if __name__ == "__main__":
    main()
