"""The OS main program: wire the monitor, state, config and jobs together, then run.

Started by ``bastion device run`` as ``python -m bastion.os`` from the unpacked OS
image, with argv::

    --monitor-fd N       inherited end of the socketpair to the monitor
    --state-dir PATH     the OS's own persistent directory (DEV/os-state)
    --config PATH        the device config partition, read-only (service URL, CA file)
    --app-store PATH     the app store (DEV/apps); with it the update agent and app manager run
    --boot-config PATH   the bootloader partition, read-only (pinned OS-publisher keys)
    --os-image PATH      the running OS image, read-only (the base of a delta update)
    --periph-dir PATH    the emulated peripherals (DEV/periph: the chip model, their state)
    --once               attest once and exit (0 on success)

Every path is explicit (:class:`bastion.os.paths.OsPaths`): the OS runs in a
mount namespace without ``DEV/chip`` and ``DEV/flash`` and derives no path
from another. Nothing secret is passed: the OS has no path to the UDS and
never holds the Alias key; it asks the monitor to sign.

Exit status: 0 ok, 2 attestation failed (``--once``), 3 monitor failure,
4 config or state error.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import logging.handlers
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

import httpx
from cryptography.hazmat.primitives.asymmetric import ec

import bastion
from bastion.crypto.certs import load_certificate_der
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, device_id_from_public_key
from bastion.jsonlog import JsonFormatter
from bastion.monitor.client import MonitorClient
from bastion.monitor.errors import MonitorError
from bastion.os.attestation import AttestationClient, DeviceCredential, renewal_time
from bastion.os.config import DeviceConfig, load_config
from bastion.os.errors import (
    AttestationError,
    AttestationRefusedError,
    ConfigError,
    DeviceOsError,
    MonitorFailedError,
    StateError,
)
from bastion.os.exitcodes import EXIT_ATTESTATION, EXIT_CONFIG, EXIT_MONITOR, EXIT_OK, EXIT_REBOOT
from bastion.os.paths import OsPaths
from bastion.os.scheduler import Scheduler
from bastion.os.state import OsState, StateDir

__all__ = ["ATTESTATION_JOB", "EXIT_ATTESTATION", "EXIT_CONFIG", "EXIT_MONITOR", "EXIT_OK", "AttestationJob", "main"]

#: The scheduler's name for the attestation job.
ATTESTATION_JOB = "attestation"
#: Bounds on the rotated OS log.
LOG_MAX_BYTES = 1024 * 1024
LOG_BACKUPS = 2

_log = logging.getLogger("bastion.os")


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def utcnow() -> dt.datetime:
    """The wall clock, timezone-aware UTC (the only place the OS reads it)."""
    return dt.datetime.now(dt.UTC)


class AttestationJob:
    """Attest now, store the result, and say when to attest next.

    Success schedules the next attempt at the renewal point of the new
    certificate; failure backs off exponentially (bounded by the policy).
    A monitor failure is not retried: it propagates and ends the OS.
    """

    def __init__(
        self,
        client: AttestationClient,
        state_dir: StateDir,
        state: OsState,
        config: DeviceConfig,
        *,
        on_success: Callable[[DeviceCredential, dt.datetime], None] | None = None,
        installed_apps: Callable[[], Sequence[tuple[str, str]]] = tuple,
    ) -> None:
        self._client = client
        self._dir = state_dir
        self.state = state
        self._policy = config.policy
        self._on_success = on_success
        self._installed_apps = installed_apps
        self._capability: Callable[[dt.datetime], bytes | None] = lambda now: None
        self._on_refused: Callable[[AttestationRefusedError, dt.datetime], bool] = lambda exc, now: False

    def attach(
        self,
        *,
        on_success: Callable[[DeviceCredential, dt.datetime], None],
        installed_apps: Callable[[], Sequence[tuple[str, str]]],
        capability: Callable[[dt.datetime], bytes | None] | None = None,
        on_refused: Callable[[AttestationRefusedError, dt.datetime], bool] | None = None,
    ) -> None:
        """Hook the update agent in: called after each success; apps claimed in the EAT.

        ``capability`` gives the device capability file to carry in the EAT
        (development mode); ``on_refused`` hears each refusal and returns True
        to attest again at once (a refused capability ends development mode).
        """
        self._on_success = on_success
        self._installed_apps = installed_apps
        if capability is not None:
            self._capability = capability
        if on_refused is not None:
            self._on_refused = on_refused

    def __call__(self, now: dt.datetime) -> dt.datetime:
        """Run one attempt at ``now``; return the time of the next one."""
        state = self.state
        state.last_attempt_at = _iso(now)
        try:
            credential = self._client.attest(
                now=now, installed_apps=self._installed_apps(), capability=self._capability(now)
            )
        except AttestationError as exc:
            state.consecutive_failures += 1
            state.last_result = "refused" if isinstance(exc, AttestationRefusedError) else "error"
            state.last_reason = exc.code
            state.last_detail = exc.detail if isinstance(exc, AttestationRefusedError) else str(exc)
            next_at = now + dt.timedelta(seconds=self._policy.backoff(state.consecutive_failures))
            _log.warning("attestation failed (%s): %s; next attempt at %s", exc.code, state.last_detail, _iso(next_at))
            if isinstance(exc, AttestationRefusedError) and self._on_refused(exc, now):
                next_at = now
        else:
            self._dir.save_credentials(credential.certificate_pem, b"".join(credential.ca_chain_pem))
            state.consecutive_failures = 0
            state.last_result, state.last_reason, state.last_detail = "ok", None, None
            state.last_attestation_at = _iso(now)
            state.tenant_id = credential.tenant_id
            state.cert_not_before = _iso(credential.not_before)
            state.cert_not_after = _iso(credential.not_after)
            next_at = renewal_time(credential.certificate, self._policy.renew_fraction)
            _log.info("attested: certificate valid until %s, renewing at %s", state.cert_not_after, _iso(next_at))
            state.group_id = credential.updates.group_id if credential.updates else None
        state.next_attestation_at = _iso(next_at)
        self._dir.save_state(state)
        if state.last_result == "ok" and self._on_success is not None:
            self._on_success(credential, now)  # the update agent: learn the group, confirm a trial
        return next_at


def _setup_logging(state_dir: StateDir) -> None:
    fmt = JsonFormatter(process="os")  # the service's format too (bastion.jsonlog, ADR 0019)
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    handler = logging.handlers.RotatingFileHandler(
        state_dir.log_path, maxBytes=LOG_MAX_BYTES, backupCount=LOG_BACKUPS, encoding="utf-8"
    )
    handler.setFormatter(fmt)
    root.addHandler(handler)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # request lines would repeat our own


def _device_id(monitor: MonitorClient) -> str:
    try:
        device_id_cert = load_certificate_der(monitor.get_cert_chain()[1])
    except CryptoError as exc:
        raise MonitorFailedError("the monitor's DeviceID certificate does not parse") from exc
    key = device_id_cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise MonitorFailedError("the DeviceID certificate does not hold an EC key")
    return device_id_from_public_key(key)


def http_client(config: DeviceConfig, *, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """Build the HTTP client for the service: explicit TLS trust, timeouts, no env proxies.

    ``transport`` replaces the network (tests pass an ``httpx.MockTransport``).
    """
    verify: ssl.SSLContext | bool = True
    if config.ca_file is not None:
        try:
            verify = ssl.create_default_context(cafile=config.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the CA file {config.ca_file}") from exc
    return httpx.Client(
        base_url=config.service_url,
        timeout=config.policy.http_timeout_s,
        verify=verify,
        trust_env=False,
        follow_redirects=False,
        transport=transport,
    )


def run(
    *,
    monitor: MonitorClient,
    state_dir: StateDir,
    config: DeviceConfig,
    once: bool,
    stop: threading.Event,
    clock: Callable[[], dt.datetime] = utcnow,
    transport: httpx.BaseTransport | None = None,
    paths: OsPaths | None = None,
) -> int:
    """Run the OS jobs; returns the exit status.

    ``clock`` and ``transport`` are injected so tests drive time and the network.
    With ``paths`` (the app store and the read-only boot files) and without
    ``once``, the update agent and the app manager run too
    (:mod:`bastion.os.updates.system`); the OS then exits with ``EXIT_REBOOT``
    once an OS update is armed.

    Raises:
        DeviceOsError: config, state or monitor failures (the caller maps them).
    """
    try:
        device_id = _device_id(monitor)
        boot = monitor.read_counters()
    except MonitorError as exc:
        raise MonitorFailedError(f"cannot read the boot identity from the monitor: {exc}") from exc
    state = state_dir.load_state()
    state.device_id, state.os_version, state.boot_slot = device_id, boot.os_version, boot.boot_slot
    state.runtime_path = bastion.__file__
    state.pid = os.getpid()
    state.started_at = _iso(clock())
    state_dir.save_state(state)
    _log.info(
        "OS %s running from %s (slot %s), device %s", boot.os_version, bastion.__file__, boot.boot_slot, device_id
    )
    key = state_dir.load_or_create_key()
    with http_client(config, transport=transport) as http:
        job = AttestationJob(
            AttestationClient(http, monitor, key, device_id=device_id, policy=config.policy), state_dir, state, config
        )
        if once:
            job(clock())
            return EXIT_OK if job.state.last_result == "ok" else EXIT_ATTESTATION
        scheduler = Scheduler(clock=clock, stop=stop)
        scheduler.add(ATTESTATION_JOB, job, first_at=clock())  # attest at every boot
        if paths is None:
            scheduler.run()
        else:
            return _run_with_updates(
                scheduler=scheduler,
                job=job,
                http=http,
                monitor=monitor,
                state_dir=state_dir,
                config=config,
                device_id=device_id,
                key=key,
                paths=paths,
                stop=stop,
                clock=clock,
            )
    _log.info("stopped")
    return EXIT_OK


def _run_with_updates(
    *,
    scheduler: Scheduler,
    job: AttestationJob,
    http: httpx.Client,
    monitor: MonitorClient,
    state_dir: StateDir,
    config: DeviceConfig,
    device_id: str,
    key: PrivateKey,
    paths: OsPaths,
    stop: threading.Event,
    clock: Callable[[], dt.datetime],
) -> int:
    from bastion.os.updates.system import UpdateSystem

    try:
        system = UpdateSystem.build(
            state_dir=state_dir,
            config=config,
            http=http,
            monitor=monitor,
            device_id=device_id,
            device_key=key,
            paths=paths,
            stop=stop,
            clock=clock,
        )
        system.start(clock())
    except MonitorError as exc:
        raise MonitorFailedError(f"the monitor failed while starting the update agent: {exc}") from exc
    except OSError as exc:
        raise StateError(f"cannot set up the update agent's state: {exc.strerror or exc}") from exc
    try:
        job.attach(
            on_success=system.on_attested,
            installed_apps=system.installed_apps,
            capability=system.capability_evidence,
            on_refused=system.on_refused,
        )
        system.add_jobs(scheduler, clock)
        scheduler.run()
    except MonitorError as exc:
        raise MonitorFailedError(f"the monitor failed: {exc}") from exc
    finally:
        system.close()
    if system.monitor_error is not None:
        raise MonitorFailedError(f"the monitor failed: {system.monitor_error}") from system.monitor_error
    if system.reboot_requested:
        _log.info(
            "rebooting (asked by %s)", f"app {system.power.requested_by}" if system.power.requested_by else "an update"
        )
        return EXIT_REBOOT
    if system.power.power_down_requested:
        _log.info("powering down (asked by app %s)", system.power.requested_by)
    _log.info("stopped")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bastion.os``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="bastion.os")
    parser.add_argument("--monitor-fd", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--app-store", type=Path)
    parser.add_argument("--boot-config", type=Path)
    parser.add_argument("--os-image", type=Path)
    parser.add_argument("--periph-dir", type=Path)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args(argv)
    paths = (
        None
        if args.app_store is None
        else OsPaths(args.app_store, args.boot_config, args.os_image, periph_dir=args.periph_dir)
    )
    try:
        state_dir = StateDir(args.state_dir)
    except StateError as exc:
        sys.stderr.write(f"os: {exc}\n")
        return EXIT_CONFIG
    _setup_logging(state_dir)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        _log.info("stopping on signal %d", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    monitor = MonitorClient(socket.socket(fileno=args.monitor_fd))
    try:
        return run(
            monitor=monitor,
            state_dir=state_dir,
            config=load_config(args.config),
            once=args.once,
            stop=stop,
            paths=paths,
        )
    except MonitorFailedError as exc:
        _log.error("%s", exc)
        return EXIT_MONITOR
    except (ConfigError, StateError) as exc:
        _log.error("%s", exc)
        return EXIT_CONFIG
    except DeviceOsError as exc:
        _log.error("%s", exc)
        return EXIT_ATTESTATION
    finally:
        monitor.close()
