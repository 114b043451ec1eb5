"""The HTTP layer against a real ``bastion service run`` on loopback (issue 7, sections 6 and 8).

* A 1 MiB (and a 32 MiB) request header section gets a 431 (httptools, the
  default) or a 400 (``--http h11``), and the service's memory does not grow:
  its RSS is read from ``/proc`` before and after.
* schemathesis fuzzes every operation of the live OpenAPI document (whatever
  routes exist when it runs) with a valid admin token and every check, bounded
  in time; the run must end with no server error and no schema violation.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cli._localstack import LocalStack

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
#: RSS the service may gain over the whole flood of oversized headers (allocator noise, caches).
RSS_SLACK_KIB = 6 * 1024
#: Oversized header sections sent in one test.
FLOOD_REQUESTS = 16
#: schemathesis' time budget, and the bound on the whole run.
FUZZ_SECONDS = 150
FUZZ_TIMEOUT_S = FUZZ_SECONDS + 120
HERE = Path(__file__).parent / "schemathesis"


def _rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1))


def _send_huge_header(url: str, size: int) -> bytes:
    """Send a request whose header section is ``size`` bytes; return what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: loopback\r\n")
        line = b"X-Filler: " + b"a" * (8 * 1024) + b"\r\n"
        sent = 0
        try:
            while sent < size:
                conn.sendall(line)
                sent += len(line)
            conn.sendall(b"\r\n")
        except OSError:
            pass  # the server answered and closed before the whole section was sent: what we want
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except OSError:
            pass
        return b"".join(chunks)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path / "stack")
    try:
        yield local
    finally:
        local.stop_service()


@pytest.mark.parametrize(("parser", "status"), [("httptools", b"431"), ("h11", b"400")])
def test_oversized_header_sections_are_refused_and_memory_does_not_grow(
    stack: LocalStack, parser: str, status: bytes
) -> None:
    url = stack.start_service(extra_args=("--http", parser))
    assert stack.service is not None
    pid = stack.service.pid
    # Warm up: the first requests allocate what a serving process keeps.
    _send_huge_header(url, 2 * MIB)
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:  # noqa: S310 - loopback URL
        assert response.status == 200
    before = _rss_kib(pid)
    for size in [1 * MIB] * (FLOOD_REQUESTS - 1) + [32 * MIB]:
        answer = _send_huge_header(url, size)
        assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
        if parser == "httptools":
            assert b'"error":"headers_too_large"' in answer
    after = _rss_kib(pid)
    print(f"{parser}: RSS {before} KiB before {FLOOD_REQUESTS} oversized header sections, {after} KiB after")  # figures
    assert after - before < RSS_SLACK_KIB, f"RSS grew from {before} KiB to {after} KiB"
    # A header within the bound is still served.
    request = urllib.request.Request(f"{url}/healthz", headers={"X-Small": "a" * 1024})  # noqa: S310 - loopback URL
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback URL
        assert response.status == 200


def _post_json(url: str, token: str, body: dict[str, object]) -> None:
    request = urllib.request.Request(  # noqa: S310 - loopback URL
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback URL
        assert response.status == 201


def test_schemathesis_finds_no_server_error_and_no_schema_violation(stack: LocalStack, tmp_path: Path) -> None:
    tenant = stack.bastion_json("tenant", "create", "fuzzed")
    url = stack.start_service()
    token = tenant["token"]
    # Seed something for the read operations to find.
    _post_json(f"{url}/api/v1/products", token, {"name": "Lamp", "description": "seeded"})
    st = Path(sys.executable).with_name("st")
    env = dict(os.environ) | {"SCHEMATHESIS_HOOKS": str(HERE / "hooks.py"), "NO_COLOR": "1"}
    junit = tmp_path / "schemathesis.xml"
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--header",
            f"Authorization: Bearer {token}",
            "--max-time",
            str(FUZZ_SECONDS),
            "--workers",
            "2",
            "--seed",
            "7",
            "--report",
            "junit",
            "--report-junit-path",
            str(junit),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=FUZZ_TIMEOUT_S,
        check=False,
        cwd=tmp_path,
    )
    output = result.stdout + result.stderr
    summary = output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-6000:]
    problems = output[output.find("=== ERRORS") :] if "=== ERRORS" in output else ""
    problems += output[output.find("=== FAILURES") :] if "=== FAILURES" in output else ""
    report = problems or output
    # Both ends: a long error (a traceback that prints a whole source file) keeps its cause, at the end.
    assert result.returncode == 0, report if len(report) <= 20000 else f"{report[:10000]}\n[...]\n{report[-10000:]}"
    generated = re.search(r"(\d+) generated", summary)
    assert generated, summary
    assert int(generated.group(1)) > 200, summary
    assert "Server error" not in summary
    assert "does not conform" not in summary
    print(summary)  # the run's figures, for the record
