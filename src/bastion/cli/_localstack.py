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
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["CommandFailedError", "LocalStack", "free_port", "wait_for"]

#: How long the service may take to answer /healthz after it starts.
SERVICE_START_TIMEOUT_S = 30.0
#: How long one CLI command may run.
COMMAND_TIMEOUT_S = 120.0
#: How long :func:`wait_for` waits by default, and how often it looks.
WAIT_TIMEOUT_S = 60.0
WAIT_POLL_S = 0.2

#: How long a stopping service and a stopping device may take before SIGKILL.
SERVICE_STOP_TIMEOUT_S = 10.0
DEVICE_STOP_TIMEOUT_S = 20.0

T = TypeVar("T")


def _stop(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM the process and let it stop its own children; then SIGKILL its process group's leftovers.

    Every process the stack starts leads its own session (``start_new_session``),
    so its group holds exactly its descendants; none of them outlives the stack.
    """
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class CommandFailedError(RuntimeError):
    """A ``bastion`` command exited non-zero."""

    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        super().__init__(
            f"`bastion {' '.join(args)}` exited {result.returncode}\n"
            f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
        )
        self.result = result


def wait_for(what: str, predicate: Callable[[], T | None], *, timeout: float = WAIT_TIMEOUT_S) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    Raises:
        TimeoutError: it did not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(WAIT_POLL_S)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


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
    devices: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

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
        self,
        *args: str,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT_S,
        operator: str = "default",
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run one ``bastion`` command to completion and return its output; ``stdin`` is piped in."""
        result = subprocess.run(
            self.command(*args),
            env=self.env(operator=operator),
            input=stdin,
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
        """Stop the service process (SIGTERM, then SIGKILL), and whatever it left in its process group."""
        if self.service is None:
            return
        _stop(self.service, timeout=SERVICE_STOP_TIMEOUT_S)
        self.service = None

    def start_device(self, dev: Path) -> subprocess.Popen[bytes]:
        """Start ``bastion device run --dir DEV`` in the background (it runs until stopped)."""
        log = (dev.parent / f"{dev.name}.log").open("ab")
        process = subprocess.Popen(
            self.command("device", "run", "--dir", str(dev)),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.devices[str(dev)] = process
        return process

    def device_state(self, dev: Path) -> dict[str, Any]:
        """The device OS's state file (``{}`` until it has written one)."""
        try:
            return dict(json.loads((dev / "os-state" / "state.json").read_text()))
        except (OSError, ValueError):
            return {}

    def device_ready(self, dev: Path, os_version: str) -> bool:
        """Whether the running device attested on ``os_version`` and answers on its control socket."""
        state = self.device_state(dev)
        return (
            state.get("os_version") == os_version
            and state.get("last_result") == "ok"
            and (dev / "os-state" / "control.sock").exists()
        )

    def stop_devices(self) -> None:
        """Stop every device started with :meth:`start_device`."""
        for process in self.devices.values():
            _stop(process, timeout=DEVICE_STOP_TIMEOUT_S)
        self.devices.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalStack]:
        """Start the service for the duration of a ``with`` block."""
        self.start_service()
        try:
            yield self
        finally:
            self.stop_service()
