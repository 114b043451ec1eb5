"""One simulated device: attestation, TUF check-in, status report and error-report batch, over HTTP.

Each step is the device's real client code where the device has one:

- attestation: :class:`bastion.os.attestation.AttestationClient`, with the
  chip (:class:`bastion.sim.chip.SimChip`) in the monitor's place;
- check-in: :class:`bastion.os.updates.tuf_client.GroupRepository` (python-tuf
  ngclient) through :class:`bastion.os.updates.fetcher.CachingFetcher`, target
  downloads authorised by :class:`bastion.os.updates.download_credential.DownloadCredentials`;
  the choice of targets is the update agent's own ``_plan`` (which applies the
  staged-rollout rule, :func:`bastion.images.rollout.in_stage`);
- status report: :class:`bastion.os.updates.reporter.StatusReporter` over an
  :class:`bastion.os.updates.events.EventQueue`;
- error reports: a signed batch encoded by :mod:`bastion.crypto.error_report` (``POST /api/v1/device/error-reports``).

What is simulated: an "installed" app is the verified download of its target
(it is not unpacked or run), and whether it crashes is drawn once per device and
version from the crash rate (:class:`CrashModel`).

Example:
    >>> device = SimDevice(chip, http=http, workdir=d, crashes=model, seed=1)  # doctest: +SKIP
    >>> outcome = device.check_in(now)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx

from bastion.crypto.certs import certificate_der
from bastion.crypto.error_report import ErrorBatch, ErrorRecord, Frame, encode_batch
from bastion.crypto.keys import PrivateKey
from bastion.os.attestation import AttestationClient, DeviceCredential
from bastion.os.errors import AttestationError
from bastion.os.updates.agent import UpdateAgent
from bastion.os.updates.app_update import target_identity
from bastion.os.updates.download_credential import DownloadCredentials
from bastion.os.updates.errors import UpdateError
from bastion.os.updates.events import EventQueue
from bastion.os.updates.fetcher import CachingFetcher
from bastion.os.updates.pointer import GroupStore, UpdatePointer
from bastion.os.updates.reporter import DeviceStatus, StatusReporter, sign_report
from bastion.os.updates.tuf_client import GroupRepository, Target
from bastion.sim.chip import OsImageFacts, SimChip

__all__ = [
    "ERROR_REPORTS_PATH",
    "CheckIn",
    "CrashModel",
    "SimDevice",
    "crash_record",
]

#: Where a device sends its signed error-report batches (wire contract, issue 8).
ERROR_REPORTS_PATH = "/api/v1/device/error-reports"
ERROR_REPORTS_CONTENT_TYPE = "application/cose"
#: Renew the device certificate once this fraction of its validity has passed (as the OS does).
RENEW_FRACTION = 0.5
#: Bound on the text of a crash record's description (wire contract: <= 256).
MAX_DESCRIPTION_CHARS = 256

_log = logging.getLogger("bastion.sim.device")


@dataclass(frozen=True)
class CrashModel:
    """Which app versions crash on which devices.

    ``rates`` maps an app version (``"2.0.0"``) or ``"COMPONENT@VERSION"`` to the
    fraction of devices on which it crashes. The draw is a hash of the seed, the
    device and the release, so a device on a crashing release crashes at every
    check-in (a crash loop), and the same seed picks the same devices.
    """

    rates: Mapping[str, float] = field(default_factory=dict)
    seed: int = 0

    def rate(self, component_id: str, version: str) -> float:
        """The crash rate of one release (0.0 when none was given)."""
        return self.rates.get(f"{component_id}@{version}", self.rates.get(version, 0.0))

    def crashes(self, device_id: str, component_id: str, version: str) -> bool:
        """Whether this device's copy of the release crashes."""
        rate = self.rate(component_id, version)
        if rate <= 0.0:
            return False
        digest = hashlib.sha256(f"crash/{self.seed}/{device_id}/{component_id}/{version}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < rate


def crash_record(component_id: str, version: str, *, at: int, uptime_s: int) -> ErrorRecord:
    """The AppCrash record a crashing Python app leaves (error-report wire contract).

    The bug lives in the release: its innermost frame names the version, so each
    crashing release gets its own bucket (fingerprint: exception type and top app frames).
    """
    function = "handle_" + "".join(c if c.isalnum() else "_" for c in version).lower()[:100]
    return ErrorRecord(
        category="AppCrash",
        event_class="Error",
        event_type="python_exception",
        component_id=component_id,
        version=version,
        count=1,
        first_at=at,
        last_at=at,
        description=f"RuntimeError: simulated crash of {version}"[:MAX_DESCRIPTION_CHARS],
        exit_code=1,
        uptime_s=uptime_s,
        exception="RuntimeError",
        frames=(Frame("main.py", "main", 12), Frame("main.py", function, 40)),
    )


@dataclass
class CheckIn:
    """What one check-in of one device did (the figures of a round add these up)."""

    device_id: str
    attested: bool = False
    attest_refused: str | None = None
    check: str = "up-to-date"  # up-to-date | installed | unavailable | refused | no-group | error
    installed: list[tuple[str, str]] = field(default_factory=list)
    running: dict[str, str] = field(default_factory=dict)
    crashed: list[tuple[str, str]] = field(default_factory=list)
    status_report: str = "skipped"  # accepted | refused | unreachable | skipped
    error_report: str = "skipped"  # accepted | duplicate | refused:<code> | unreachable | skipped
    detail: str = ""


@dataclass
class _Installed:
    component_id: str
    version: str


class _PlanView:
    """What the update agent's ``_plan`` reads of the agent, for a simulated device.

    The simulator calls ``UpdateAgent._plan`` on this view rather than re-implement
    the device's choice of targets (newest release, or the staged-rollout target
    or its fallback), so the simulated fleet follows the real rule. The agent's
    helper methods that ``_plan`` calls are bound to the view on first use.
    """

    def __init__(
        self, device_id: str, os: OsImageFacts, installed: Mapping[str, str], app_security: Mapping[str, int]
    ) -> None:
        self.device_id = self._device_id = device_id
        self.state = SimpleNamespace(is_blocked=lambda _sha256: False, app_security=dict(app_security))
        self.store = SimpleNamespace(installed=lambda: [_Installed(c, v) for c, v in installed.items()])
        self.settings = SimpleNamespace(app_updates=True)
        self.running = SimpleNamespace(version=os.version, security_version=os.security_version)
        self.development = lambda: False

    def __getattr__(self, name: str) -> Any:
        member = getattr(UpdateAgent, name)
        if not callable(member):
            raise AttributeError(name)
        return functools.partial(member, self)


class SimDevice:
    """A simulated device (see the module docstring).

    Args:
        chip: its identity.
        http: the device's client (``base_url`` = the service; no operator token).
        workdir: a directory of its own (TUF metadata, event queue, scratch downloads).
        crashes: the crash model.
        seed: the simulation seed (batch IDs derive from it).
    """

    def __init__(self, chip: SimChip, *, http: httpx.Client, workdir: Path, crashes: CrashModel, seed: int) -> None:
        self.chip = chip
        self.device_id = chip.device_id
        self._http = http
        self._dir = workdir
        self._crashes = crashes
        self._seed = seed
        workdir.mkdir(parents=True, exist_ok=True)
        self._groups = GroupStore(workdir / "tuf")
        self._queue = EventQueue(workdir / "events.json")
        self._attest = AttestationClient(http, chip, chip.tls_key, device_id=chip.device_id)
        self._credential: DeviceCredential | None = None
        self._cert_der: bytes | None = None
        self._renew_at: dt.datetime | None = None
        self._downloads = DownloadCredentials(http, credentials=self._held, device_id=chip.device_id)
        self._fetcher = CachingFetcher(http, authorization=self._downloads)
        self._reporter = StatusReporter(http, self._queue, credentials=self._held)
        self.installed: dict[str, str] = {}
        self._app_security: dict[str, int] = {}
        self._booted_at: int | None = None
        self._batches = 0
        self._last_batch_iat = 0

    def _held(self) -> tuple[PrivateKey, bytes] | None:
        if self._cert_der is None:
            return None
        return self.chip.tls_key, self._cert_der

    @property
    def pointer(self) -> UpdatePointer | None:
        """The group the device's last attestation pointed it to."""
        return self._credential.updates if self._credential is not None else None

    def attest(self, now: dt.datetime) -> DeviceCredential:
        """Attest and keep the certificate and the group pointer (raises the OS's attestation errors)."""
        credential = self._attest.attest(now=now, installed_apps=sorted(self.installed.items()))
        self._credential = credential
        self._cert_der = certificate_der(credential.certificate)
        start, end = credential.not_before, credential.not_after
        self._renew_at = start + (end - start) * RENEW_FRACTION
        self._groups.remember(credential.updates)
        self._downloads.invalidate()
        return credential

    def check_in(self, now: dt.datetime) -> CheckIn:
        """One check-in: attest if needed, run the TUF check, report status and errors."""
        out = CheckIn(self.device_id)
        at = int(now.timestamp())
        if self._booted_at is None:
            self._booted_at = at
        if self._credential is None or self._renew_at is None or now >= self._renew_at:
            try:
                self.attest(now)
                out.attested = True
            except AttestationError as exc:
                out.attest_refused = exc.code
                out.check, out.detail = "error", str(exc)[:200]
                return out
        pointer = self.pointer
        if pointer is None:
            out.check = "no-group"
        else:
            self._check(pointer, out, now)
        for component_id, version in sorted(self.installed.items()):
            if self._crashes.crashes(self.device_id, component_id, version):
                out.crashed.append((component_id, version))
                self._queue.record(
                    at=at, kind="app_failed", component_id=component_id, version=version, detail="RuntimeError"
                )
        out.running = dict(self.installed)
        status = DeviceStatus(
            device_id=self.device_id,
            os_version=self.chip.os.version,
            boot_slot="a",
            group_id=pointer.group_id if pointer else None,
            installed=tuple(sorted(self.installed.items())),
        )
        self._reporter.send(status, now=now)
        out.status_report = self._reporter.last_result or "skipped"
        out.error_report = self._send_errors(out, now)
        return out

    def _check(self, pointer: UpdatePointer, out: CheckIn, now: dt.datetime) -> None:
        try:
            repo = GroupRepository(
                metadata_dir=self._groups.metadata_dir(pointer.group_id),
                base_url=str(self._http.base_url).rstrip("/") + pointer.tuf_base,
                fetcher=self._fetcher,
            )
            repo.refresh()
            view = _PlanView(self.device_id, self.chip.os, self.installed, self._app_security)
            # The agent's own rule, unbound (see _PlanView).
            plan = UpdateAgent._plan(view, repo.targets())  # type: ignore[arg-type]
            for target in plan.apps:
                self._install(repo, target, out, now)
        except UpdateError as exc:
            out.check = "unavailable" if type(exc).__name__ == "UpdateUnavailableError" else "refused"
            out.detail = str(exc)[:200]
            return
        if out.installed:
            out.check = "installed"

    def _install(self, repo: GroupRepository, target: Target, out: CheckIn, now: dt.datetime) -> None:
        _kind, component_id, version = target_identity(target)
        scratch = self._dir / "download.img"
        try:
            repo.download(target, scratch)  # ngclient checks its length and hashes
        finally:
            scratch.unlink(missing_ok=True)
        self.installed[component_id] = version
        meta = target.custom.get("bastion")
        security = meta.get("security_version") if isinstance(meta, dict) else None
        if isinstance(security, int) and not isinstance(security, bool):
            self._app_security[component_id] = security  # the agent's anti-rollback floor
        out.installed.append((component_id, version))
        self._queue.record(at=int(now.timestamp()), kind="app_installed", component_id=component_id, version=version)

    def _send_errors(self, out: CheckIn, now: dt.datetime) -> str:
        held = self._held()
        if held is None:
            return "skipped"
        key, cert = held
        at = int(now.timestamp())
        uptime = at - (self._booted_at or at)
        self._batches += 1
        iat = max(at, self._last_batch_iat)
        batch_id = hashlib.sha256(f"batch/{self._seed}/{self.device_id}/{self._batches}".encode()).hexdigest()[:32]
        pointer = self.pointer
        batch = ErrorBatch(
            device_id=self.device_id,
            batch_id=batch_id,
            iat=iat,
            os_version=self.chip.os.version,
            boot_slot="a",
            group_id=pointer.group_id if pointer else None,
            installed=tuple(sorted(self.installed.items())),
            records=tuple(crash_record(c, v, at=at, uptime_s=uptime) for c, v in out.crashed),
        )
        body = sign_report(encode_batch(batch), key, cert)  # COSE_Sign1 by the certified key, like a status report
        try:
            response = self._http.post(
                ERROR_REPORTS_PATH, content=body, headers={"Content-Type": ERROR_REPORTS_CONTENT_TYPE}
            )
        except httpx.HTTPError as exc:
            _log.info("error-report batch not sent: %s", type(exc).__name__)
            return "unreachable"
        self._last_batch_iat = iat
        if response.status_code == 200:
            answer = _json(response)
            return str(answer.get("status", "accepted"))
        if response.status_code >= 500:
            return "unreachable"
        return f"refused:{_json(response).get('error', response.status_code)}"

    def remove(self) -> None:
        """Delete the device's working directory."""
        shutil.rmtree(self._dir, ignore_errors=True)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
