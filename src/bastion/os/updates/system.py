"""Wire the update agent, app manager and control socket into the OS runtime.

The runtime builds one :class:`UpdateSystem` per boot::

    system = UpdateSystem.build(...)
    system.start(now)                        # report a rollback, start the apps, open the socket
    job = AttestationJob(..., on_success=system.on_attested, installed_apps=system.installed_apps)
    system.add_jobs(scheduler, now)          # "updates" (after the first attestation) and "apps"
    ...
    system.close()                           # stop the apps, close the socket
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bastion.crypto.certs import certificate_der, load_certificate_der, load_certificate_pem, tcb_info_from_cert
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import PrivateKey, PublicKey
from bastion.hw.chipmodel import DEFAULT_MODEL, get_model
from bastion.hw.errors import HwError
from bastion.hw.peripherals import Board
from bastion.images.manifest import AppManifest
from bastion.monitor.client import MonitorClient
from bastion.monitor.errors import MonitorError
from bastion.os.apps.manager import AppManager
from bastion.os.apps.store import AppStore
from bastion.os.appservices.clock import utcnow
from bastion.os.appservices.device import CapabilityServices, capability_services
from bastion.os.appservices.peripherals import PeripheralService
from bastion.os.appservices.power import PowerService
from bastion.os.appservices.services import AppServices
from bastion.os.attestation import DeviceCredential
from bastion.os.config import DeviceConfig, app_public_keys
from bastion.os.credentials import DeviceCredentialsService
from bastion.os.devmode.capability import DevelopmentMode
from bastion.os.devmode.local_api import LocalApi
from bastion.os.errors import AttestationRefusedError, StateError
from bastion.os.netbroker.broker import NetworkService, NetworkSettings
from bastion.os.paths import OsPaths
from bastion.os.reporting.capture import FailureReporter
from bastion.os.reporting.queue import QUEUE_FILE, ReportQueue
from bastion.os.reporting.uploader import ErrorReportUploader
from bastion.os.runtime import ATTESTATION_JOB
from bastion.os.scheduler import Scheduler
from bastion.os.state import StateDir
from bastion.os.updates.agent import AgentSettings, UpdateAgent
from bastion.os.updates.control import ControlServer
from bastion.os.updates.download_credential import DownloadCredentials
from bastion.os.updates.events import EventQueue
from bastion.os.updates.fetcher import CachingFetcher
from bastion.os.updates.os_update import RunningOs, pinned_os_keys
from bastion.os.updates.pointer import GroupStore
from bastion.os.updates.reporter import StatusReporter

__all__ = ["UPDATES_JOB", "UpdateSystem", "load_board", "running_os"]

UPDATES_JOB = "updates"
APPS_JOB = "apps"
ERROR_REPORTS_JOB = "error-reports"
#: How long the update job waits while the device has not attested yet (it is rescheduled on success).
WAIT_FOR_ATTESTATION = dt.timedelta(hours=1)

_log = logging.getLogger("bastion.os.updates")


def _manifest_of(store: AppStore, component_id: str) -> AppManifest | None:
    app = store.get(component_id)
    return app.manifest if app is not None else None


def _cert_not_before(state_dir: StateDir) -> dt.datetime | None:
    """The device certificate's notBefore (the device clock is never set before it)."""
    try:
        pem = state_dir.load_cert_pem()
        return load_certificate_pem(pem).not_valid_before_utc if pem is not None else None
    except (CryptoError, StateError):
        return None


def load_board(directory: Path | None) -> Board:
    """The peripherals the boot process prepared; the default chip model if they are unreadable.

    Without a directory (the boot process gave none) apps find every peripheral unavailable.
    """
    if directory is None:
        _log.warning("no peripheral directory: apps will find their peripherals unavailable")
        return Board(Path("/nonexistent/periph"), get_model(DEFAULT_MODEL))
    try:
        return Board.load(directory)
    except HwError as exc:
        _log.error("peripheral state unreadable (%s); using the default chip model", exc)
        return Board(directory, get_model(DEFAULT_MODEL))


def _wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def running_os(monitor: MonitorClient, os_image: Path | None) -> RunningOs:
    """The running OS: versions and slot from the monitor, measurement from the Alias cert's DiceTcbInfo.

    ``os_image`` is the booted slot's image as the supervisor bound it (the delta base), if any.
    """
    boot = monitor.read_counters()
    measurement: str | None = None
    try:
        fwids = tcb_info_from_cert(load_certificate_der(monitor.get_cert_chain()[0])).fwids
        measurement = fwids[-1].digest.hex() if fwids else None
    except CryptoError:
        measurement = None
    return RunningOs(boot.os_version, boot.os_security_version, boot.boot_slot, measurement, os_image)


#: The attestation refusal status that is a verdict on a trial OS (the evidence was refused) ...
TRIAL_VERDICT_STATUS = 403
#: ... with one of these codes: what the service says about the OS image itself. A refused
#: nonce, a revoked or unclaimed device is no verdict on the image.
TRIAL_VERDICT_CODES = frozenset(
    {"unknown_os", "os_revoked", "measurement_mismatch", "swversion_mismatch", "rollback_inconsistent"}
)


@dataclass
class _Credentials:
    state_dir: StateDir
    key: PrivateKey

    def __call__(self) -> tuple[PrivateKey, bytes] | None:
        pem = self.state_dir.load_cert_pem()
        if pem is None:
            return None
        try:
            return self.key, certificate_der(load_certificate_pem(pem))
        except CryptoError:
            return None


class UpdateSystem:
    """The agent, its app manager and its control socket, for one boot."""

    def __init__(
        self,
        agent: UpdateAgent,
        groups: GroupStore,
        control_path: Path,
        stop: threading.Event,
        *,
        dev: DevelopmentMode,
        pinned_keys: tuple[PublicKey, ...] = (),
        spool_dir: Path | None = None,
    ) -> None:
        self.agent = agent
        self.groups = groups
        self._control_path = control_path
        self._stop = stop
        self.dev = dev
        self._pinned = pinned_keys
        self._spool = spool_dir or control_path.parent / "staging"
        #: A monitor failure seen outside the scheduler thread (the runtime ends the OS with it).
        self.monitor_error: MonitorError | None = None
        self._control: ControlServer | None = None
        self._scheduler: Scheduler | None = None
        self._clock: Callable[[], dt.datetime] | None = None
        #: The OS services the applibs handlers use (``AppContext.services`` = ``services.mapping``).
        self.services = AppServices()
        #: The apps' power requests (a reboot or power-down ends the OS).
        self.power = PowerService(stop)
        #: The capability services, typed (set by :meth:`build`).
        self.capabilities: CapabilityServices | None = None
        #: The connection broker (its TLS tunnels close with the OS).
        self.network: NetworkService | None = None
        #: The chip's peripherals as apps reach them (an applibs service).
        self.peripherals: PeripheralService | None = None
        #: Failure capture and its uploader (set by :meth:`build`).
        self.failures: FailureReporter | None = None
        self.uploader: ErrorReportUploader | None = None

    @classmethod
    def build(
        cls,
        *,
        state_dir: StateDir,
        config: DeviceConfig,
        http: httpx.Client,
        monitor: MonitorClient,
        device_id: str,
        device_key: PrivateKey,
        paths: OsPaths,
        stop: threading.Event,
        clock: Callable[[], dt.datetime] | None = None,
        insecure_no_sandbox: bool = False,
    ) -> UpdateSystem:
        """Build the system from the runtime's parts (``clock``: the runtime's, for the applibs handlers).

        Apps run sandboxed unless ``insecure_no_sandbox`` (or the device config's
        ``insecure_no_sandbox``) says otherwise.

        Raises:
            ConfigError: a pinned app key is invalid.
        """
        events = EventQueue(state_dir.events_path)
        board = load_board(paths.periph_dir)
        store = AppStore(paths.app_store, model=board.model)
        services = AppServices()  # each area adds its OS service here, one line each
        services.add(DeviceCredentialsService(state_dir, clock=clock or utcnow))
        network = NetworkService(NetworkSettings())
        services.add(network)
        peripherals = PeripheralService(board)
        services.add(peripherals)
        apps = AppManager(
            store,
            log_dir=state_dir.app_log_dir,
            data_dir=state_dir.app_data_dir,
            events=events,
            services=services.mapping,
            insecure_no_sandbox=insecure_no_sandbox or bool(getattr(config, "insecure_no_sandbox", False)),
            clock=clock or utcnow,
        )
        caps = capability_services(
            services,
            state_dir=state_dir.path,
            manifest_of=lambda cid: _manifest_of(store, cid),
            stop=stop,
            clock=clock or utcnow,
            not_before=lambda: _cert_not_before(state_dir),
        )
        apps.watchdog = caps.watchdog
        groups = GroupStore(state_dir.tuf_dir)
        dev = DevelopmentMode(state_dir, device_id=device_id, events=events)
        pinned = tuple(app_public_keys(config))
        agent = UpdateAgent(
            state_dir=state_dir.path,
            groups=groups,
            service_url=config.service_url,
            fetcher=CachingFetcher(
                http,
                partial_dir=state_dir.path / "downloads",
                # Targets need a download credential; the service checks our standing for each one.
                authorization=DownloadCredentials(
                    http, credentials=_Credentials(state_dir, device_key), device_id=device_id, clock=clock or utcnow
                ),
            ),
            monitor=monitor,
            store=store,
            apps=apps,
            events=events,
            reporter=StatusReporter(
                http,
                events,
                credentials=_Credentials(state_dir, device_key),
                iat_path=state_dir.path / "report-iat",
            ),
            app_keys=pinned,
            os_keys=lambda: pinned_os_keys(paths.boot_config),
            running=running_os(monitor, paths.os_image),
            device_id=device_id,
            settings=AgentSettings(
                interval=dt.timedelta(seconds=config.update_interval_s), app_updates=config.app_updates
            ),
            on_reboot=stop.set,
            sysevents=caps.sysevents,
        )
        system = cls(
            agent,
            groups,
            state_dir.control_socket_path,
            stop,
            dev=dev,
            pinned_keys=pinned,
            spool_dir=state_dir.staging_dir,
        )
        agent.development = lambda: dev.development(now=system._now())
        system.services, system.power, system.capabilities = services, caps.power, caps
        system.network = network
        system.peripherals = peripherals
        system._wire_failure_reporting(state_dir, http, device_key)
        return system

    def _wire_failure_reporting(self, state_dir: StateDir, http: httpx.Client, device_key: PrivateKey) -> None:
        """The failure queue, its capture hooks (events, app exits) and the signed uploader."""
        queue = ReportQueue(state_dir.path / QUEUE_FILE)
        failures = FailureReporter(queue, on_urgent=self._upload_soon)
        failures.os_version = self.agent.running.version
        self.uploader = ErrorReportUploader(
            http,
            queue,
            credentials=_Credentials(state_dir, device_key),
            status=self.agent.status,
            log_dir=state_dir.app_log_dir,
        )
        self.agent.events.listener = failures.on_event
        self.agent.apps.on_exit = failures.app_exited
        self.failures = failures

    def _upload_soon(self) -> None:
        if self.uploader is None:
            return
        at = self.uploader.request_urgent(self._now())
        if self._scheduler is not None:
            self._scheduler.reschedule(ERROR_REPORTS_JOB, at)
            self._scheduler.wake()

    def _error_reports_job(self, now: dt.datetime) -> dt.datetime:
        if self.uploader is None:
            return now + WAIT_FOR_ATTESTATION
        return self.uploader.job(now)

    def _now(self) -> dt.datetime:
        return self._clock() if self._clock else _wall_clock()

    def local_api(self) -> LocalApi:
        """The local device API (development mode, sideloading, app control)."""
        return LocalApi(
            dev=self.dev,
            store=self.agent.store,
            apps=self.agent.apps,
            events=self.agent.events,
            pinned_keys=self._pinned,
            clock=self._now,
            spool_dir=self._spool,
            lock=self.agent.lock,
            on_change=self._capability_changed,
        )

    def start(self, now: dt.datetime) -> None:
        """Check the capability file, report a boot-chain rollback, start the apps, open the control socket."""
        capability = self.dev.current(now=now)  # a file that no longer verifies is removed here
        if capability is not None:
            _log.warning(
                "%s capability %s is installed (until %s)",
                capability.kind.value,
                capability.capability_id,
                capability.expires().isoformat(),
            )
        if self.failures is not None:
            crashed = self.failures.import_boot_events(self.agent.events.all())
            reason = self.agent.boot_reason()
            self.failures.booted(
                at=int(now.timestamp()), reason="after_os_crash" if crashed and reason == "cold" else reason
            )
        self.agent.boot(now)
        local = self.local_api()
        try:
            self._control = ControlServer(
                self._control_path,
                {"update-check": self._check, "status": self._status},
                requests=local.requests(),
                uploads=local.uploads(),
            )
            self._control.start()
        except OSError as exc:
            _log.warning("no control socket at %s: %s", self._control_path, exc)

    def add_jobs(self, scheduler: Scheduler, clock: Callable[[], dt.datetime]) -> None:
        """Add the update check (run once attested) and the app watchdog to ``scheduler``."""
        self._scheduler, self._clock = scheduler, clock
        now = clock()
        scheduler.add(UPDATES_JOB, self._update_job, first_at=now + WAIT_FOR_ATTESTATION)
        scheduler.add(APPS_JOB, self.agent.apps.poll, first_at=now)
        if self.uploader is not None:
            scheduler.add(ERROR_REPORTS_JOB, self._error_reports_job, first_at=self.uploader.next_due(now))

    def _update_job(self, now: dt.datetime) -> dt.datetime:
        if not self.agent.attested:
            return now + WAIT_FOR_ATTESTATION
        try:
            next_at = self.agent.job(now)
        except OSError as exc:  # the state directory or app store failed: keep the OS (and its apps) running
            _log.error("update check failed locally: %s", exc)
            return now + self.agent.settings.retry
        self._upload_errors(now)
        return next_at

    def _upload_errors(self, now: dt.datetime) -> None:
        """At every check-in (scheduled or asked for): the sealed batch, or the heartbeat."""
        if self.uploader is None or self.agent.reboot_requested:
            return
        try:
            self.uploader.upload(now)
        except OSError as exc:
            _log.error("error reports not uploaded: %s", exc)

    def on_attested(self, credential: DeviceCredential, now: dt.datetime) -> None:
        """Attestation hook: remember the group (first root per group), confirm a trial, check now."""
        try:
            if self.groups.remember(credential.updates):
                _log.info(
                    "joined device group %s (trust anchor stored)",
                    credential.updates.group_id if credential.updates else "",
                )
        except OSError as exc:
            _log.error("cannot store the update pointer: %s", exc)
        if self.agent.on_attested(now) and self._scheduler is not None:
            self._scheduler.reschedule(UPDATES_JOB, now)

    def capability_evidence(self, now: dt.datetime) -> bytes | None:
        """The capability file the next EAT carries (development mode), if one is valid at ``now``."""
        return self.dev.evidence(now=now)

    def on_refused(self, refusal: AttestationRefusedError, now: dt.datetime) -> bool:
        """Attestation hook: the service refused our capability, so development mode ends.

        Returns:
            True when the capability was removed: attest again at once, without it.
        """
        if self.failures is not None:
            self.failures.attestation_failed(
                at=int(now.timestamp()),
                reason=refusal.code,
                renewal=self.agent.attested or (self.uploader is not None and self.uploader.has_credentials()),
            )
        if not refusal.code.startswith("capability_"):
            # A trial OS whose evidence the service refuses (403: unknown or revoked OS, bad
            # measurements) has run and failed its health check (ADR 0018); a rate limit, a
            # service fault or a refusal of the device is no verdict on the image.
            if refusal.status == TRIAL_VERDICT_STATUS and refusal.code in TRIAL_VERDICT_CODES:
                self.agent.on_trial_failed(now, f"attestation refused: {refusal.code}")
            return False
        try:
            return self.dev.disable(now=now, why=f"the service refused the capability ({refusal.code})")
        except OSError as exc:
            _log.error("cannot remove the refused capability: %s", exc)
            return False

    def _attest_soon(self, now: dt.datetime) -> None:
        if self._scheduler is not None:
            self._scheduler.reschedule(ATTESTATION_JOB, now)
            self._scheduler.wake()

    def _capability_changed(self) -> None:
        """Development mode changed on the device: attest now, so the service sees it."""
        self._attest_soon(self._now())

    def installed_apps(self) -> list[tuple[str, str]]:
        """``(component id, version)`` of the installed apps (an attestation claim)."""
        return [(a.component_id, a.version) for a in self.agent.store.installed()]

    def _check(self, op: str) -> dict[str, Any]:
        del op
        now = self._clock() if self._clock else dt.datetime.now(dt.UTC)
        try:
            summary = self.agent.check(now).to_json()
            self._upload_errors(now)
            return summary
        except MonitorError as exc:
            self.monitor_error = exc
            self._stop.set()  # fatal, as in the scheduler thread
            return {"error": "monitor_failed", "detail": "the security monitor failed; the OS stops"}
        except OSError as exc:
            _log.error("update check failed locally: %s", exc)
            return {"error": "failed", "detail": "the check failed on the device; see the OS log"}

    def _status(self, op: str) -> dict[str, Any]:
        del op
        summary = self.agent.last_summary
        return {
            "last_check": summary.to_json() if summary else self.agent.state.last_summary,
            "apps": self.agent.apps.status(),
            "queued_events": len(self.agent.events),
            "attested": self.agent.attested,
            "development": self.dev.status(now=self._now()),
        }

    @property
    def reboot_requested(self) -> bool:
        """Whether the OS should exit for a reboot: an OS update is armed, or an app forced one."""
        return self.agent.reboot_requested or self.power.reboot_requested

    def close(self) -> None:
        """Close the control socket (waits for a request in progress), then stop the apps and their channels."""
        if self._control is not None:
            self._control.close()
        self.agent.apps.stop_all()
        if self.capabilities is not None:
            self.capabilities.close()
        if self.network is not None:
            self.network.close()
        if self.peripherals is not None:
            self.peripherals.close()
