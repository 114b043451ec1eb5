"""A local Bastion stack made of real processes: the service and devices, on loopback.

Used by ``bastion demo`` and by the end-to-end tests. Every command runs as its
own ``bastion`` process with an environment that points all state at one root
directory, so nothing outside it is touched.

Example:
    >>> stack = LocalStack(Path("/tmp/demo"))        # doctest: +SKIP
    >>> url = stack.start_service()                   # doctest: +SKIP
    >>> stack.bastion("device", "list", "--json")     # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["CommandFailedError", "LocalStack", "free_port"]

#: How long the service may take to answer /healthz after it starts.
SERVICE_START_TIMEOUT_S = 30.0
#: How long one CLI command may run.
COMMAND_TIMEOUT_S = 120.0


class CommandFailedError(RuntimeError):
    """A ``bastion`` command exited non-zero."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"`bastion {' '.join(args)}` exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        self.result = result


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalStack:
    """The directories, environment and processes of one local stack."""

    root: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    #: Terminal width the commands render their tables for.
    columns: int = 200
    service: subprocess.Popen[bytes] | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        self.root = self.root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.service_home.mkdir(parents=True, exist_ok=True)

    @property
    def service_home(self) -> Path:
        return self.root / "service"

    @property
    def vendor_dir(self) -> Path:
        return self.root / "vendor"

    @property
    def service_log(self) -> Path:
        return self.root / "service.log"

    def device_dir(self, name: str) -> Path:
        return self.root / "devices" / name

    def env(self, *, operator: str = "default") -> dict[str, str]:
        """The environment of a command run as ``operator`` (each has its own login config)."""
        env = dict(os.environ)
        env.pop("BASTION_DATABASE_URL", None)
        env.update(
            {
                "BASTION_HOME": str(self.service_home),
                "BASTION_CONFIG": str(self.root / "operators" / operator / "config.json"),
                "XDG_CONFIG_HOME": str(self.root / "operators" / operator / "xdg"),
                "PYTHONUNBUFFERED": "1",
                "COLUMNS": str(self.columns),
            }
        )
        env.update(self.extra_env)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bastion.cli.main", *args]

    def bastion(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT_S, operator: str = "default"
    ) -> subprocess.CompletedProcess[str]:
        """Run one ``bastion`` command to completion and return its output."""
        result = subprocess.run(
            self.command(*args),
            env=self.env(operator=operator),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise CommandFailedError(args, result)
        return result

    def bastion_json(self, *args: str, operator: str = "default") -> Any:
        """Run a ``bastion`` command that takes ``--json`` and parse its output."""
        return json.loads(self.bastion(*args, "--json", operator=operator).stdout)

    def start_service(self, *, port: int | None = None, extra_args: Sequence[str] = ()) -> str:
        """Start ``bastion service run`` on loopback and wait until it answers."""
        port = port or free_port()
        log = self.service_log.open("ab")
        self.service = subprocess.Popen(
            self.command("service", "run", "--host", "127.0.0.1", "--port", str(port), *extra_args),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.service.poll() is not None:
                raise RuntimeError(f"the service exited at start:\n{self.service_log.read_text()[-4000:]}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response,  # noqa: S310 - loopback URL
            ):
                if response.status == 200:
                    return self.url
            time.sleep(0.1)
        self.stop_service()
        raise RuntimeError(f"the service did not answer within {SERVICE_START_TIMEOUT_S}s")

    def stop_service(self) -> None:
        """Stop the service process (SIGTERM, then SIGKILL)."""
        if self.service is None:
            return
        if self.service.poll() is None:
            self.service.terminate()
            try:
                self.service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.service.kill()
                self.service.wait()
        self.service = None

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalStack]:
        """Start the service for the duration of a ``with`` block."""
        self.start_service()
        try:
            yield self
        finally:
            self.stop_service()
