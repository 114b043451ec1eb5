"""The fleet: manufacture, claim and assign simulated devices, then run check-in rounds.

Setup uses the operator API with the operator's token, the way an operator
would: ``GET /whoami`` for the tenant, ownership vouchers signed by the
simulated chips' vendor (bulk claim, ``POST /devices/claim/voucher``) and
``POST /devices/{id}/group``. The devices themselves never see that token: they
speak only the device protocols (:mod:`bastion.sim.device`).

Crypto is the cost, requests are cheap: each chip's identity is derived once
(:class:`bastion.sim.chip.SimChip`), each device keeps its certificate until
half of its validity has passed and its download credential while it is valid,
and its TUF client keeps the ETags of the polled files.

Example:
    >>> sim = FleetSimulator(config, operator=op_http, device_http=dev_http, vendor=v, os_image=facts)  # doctest: +SKIP
    >>> sim.setup(now); figures = sim.round(now)  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as dt
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bastion.boot.vendor import Vendor
from bastion.crypto.voucher import DEFAULT_LIMITS as VOUCHER_LIMITS
from bastion.crypto.voucher import sign_voucher
from bastion.sim.chip import OsImageFacts, SimChip
from bastion.sim.device import CheckIn, CrashModel, SimDevice
from bastion.sim.errors import SimServiceError, SimSetupError

__all__ = ["MAX_CONCURRENCY", "MAX_DEVICES", "FleetSimulator", "RoundFigures", "SimConfig", "parse_crash_rates"]

#: Bounds of one simulation.
MAX_DEVICES = 5000
MAX_CONCURRENCY = 64
MAX_CRASH_RATES = 64
#: Devices per ownership voucher (the voucher format's own bound).
VOUCHER_BATCH = VOUCHER_LIMITS.max_devices


@dataclass(frozen=True)
class SimConfig:
    """What to simulate.

    Attributes:
        devices: how many devices.
        group: the device group they join (``"PRODUCT/GROUP"`` or a group ID).
        seed: the simulation seed (device identities, crash draws, batch IDs).
        concurrency: devices checking in at once.
        crash_rates: app version (or ``COMPONENT@VERSION``) -> fraction of devices that crash on it.
        workdir: where the devices keep their state (a temporary directory if None).
    """

    devices: int
    group: str
    seed: int = 0
    concurrency: int = 8
    crash_rates: Mapping[str, float] = field(default_factory=dict)
    workdir: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise SimSetupError(f"--devices must be 1..{MAX_DEVICES}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise SimSetupError(f"--concurrency must be 1..{MAX_CONCURRENCY}")
        if len(self.crash_rates) > MAX_CRASH_RATES:
            raise SimSetupError(f"at most {MAX_CRASH_RATES} crash rates")
        for release, rate in self.crash_rates.items():
            if not 0.0 <= rate <= 1.0:
                raise SimSetupError(f"the crash rate of {release} must be between 0 and 1")


def parse_crash_rates(items: list[str]) -> dict[str, float]:
    """Parse ``VERSION=RATE`` (or ``COMPONENT@VERSION=RATE``) items.

    Raises:
        SimSetupError: an item is not of that form or the rate is not in [0, 1].
    """
    rates: dict[str, float] = {}
    for item in items:
        release, sep, value = item.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = -1.0
        if not sep or not release or not 0.0 <= rate <= 1.0:
            raise SimSetupError(f"--crash-rate {item!r}: expected VERSION=RATE with RATE in 0..1, e.g. 2.0.0=0.5")
        rates[release] = rate
    return rates


@dataclass
class RoundFigures:
    """The figures of one round of check-ins."""

    round: int
    devices: int
    attested: int = 0
    attest_refused: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    installs: Counter[str] = field(default_factory=Counter)
    running: Counter[str] = field(default_factory=Counter)
    crashed_devices: int = 0
    status_reports: Counter[str] = field(default_factory=Counter)
    error_reports: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, item: CheckIn) -> None:
        """Count one device's check-in."""
        self.attested += item.attested
        if item.attest_refused:
            self.attest_refused[item.attest_refused] += 1
        self.checks[item.check] += 1
        for component_id, version in item.installed:
            self.installs[_release(component_id, version)] += 1
        for component_id, version in item.running.items():
            self.running[_release(component_id, version)] += 1
        self.crashed_devices += bool(item.crashed)
        self.status_reports[item.status_report] += 1
        self.error_reports[item.error_report.split(":")[0]] += 1

    def to_json(self) -> dict[str, Any]:
        """The figures as a JSON object (``--json``)."""
        return {
            "round": self.round,
            "devices": self.devices,
            "attested": self.attested,
            "attest_refused": dict(self.attest_refused),
            "checks": dict(self.checks),
            "installs": dict(self.installs),
            "running": dict(sorted(self.running.items())),
            "crashed_devices": self.crashed_devices,
            "status_reports": dict(self.status_reports),
            "error_reports": dict(self.error_reports),
            "seconds": round(self.seconds, 3),
        }


def _release(component_id: str, version: str) -> str:
    return f"{component_id[:8]}@{version}"


class FleetSimulator:
    """A simulated fleet against one service (see the module docstring).

    Args:
        config: what to simulate.
        operator: an ``httpx.Client`` for the operator API (``base_url`` = the service, bearer token set).
        device_http: the devices' ``httpx.Client`` (same service, no token).
        vendor: the silicon vendor whose CA endorses the chips (the service must trust it).
        os_image: the known-good OS image the chips boot.
        clock: the wall clock (rounds take ``now`` from it when not given).
    """

    def __init__(
        self,
        config: SimConfig,
        *,
        operator: httpx.Client,
        device_http: httpx.Client,
        vendor: Vendor,
        os_image: OsImageFacts,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.config = config
        self._operator = operator
        self._http = device_http
        self._vendor = vendor
        self._os = os_image
        self._clock = clock
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.devices: list[SimDevice] = []
        self.claimed = 0
        self.rounds = 0

    def _workdir(self) -> Path:
        if self.config.workdir is not None:
            return self.config.workdir
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="bastion-fleetsim-")
        return Path(self._tmp.name)

    def close(self) -> None:
        """Remove the devices' temporary state."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def _op(self, step: str, method: str, path: str, **kw: Any) -> Any:
        try:
            response = self._operator.request(method, "/api/v1" + path, **kw)
        except httpx.HTTPError as exc:
            raise SimServiceError(step, 0, "unreachable", type(exc).__name__) from exc
        if response.status_code >= 300:
            try:
                body = response.json()
            except ValueError:
                body = {}
            body = body if isinstance(body, dict) else {}
            raise SimServiceError(
                step, response.status_code, str(body.get("error", "")), str(body.get("detail", ""))[:300]
            )
        return response.json()

    def setup(self, now: dt.datetime | None = None, *, progress: Callable[[str], None] = lambda _m: None) -> None:
        """Manufacture the chips, claim them with vendor vouchers, put them in the group.

        Raises:
            SimServiceError: the service refused a step (wrong token role, unknown group,
                a device claimed by another tenant, ...).
        """
        now = now or self._clock()
        tenant_id = str(self._op("whoami", "GET", "/whoami")["tenant_id"])
        root = self._workdir()
        chips = [
            SimChip.manufacture(self._vendor, self._os, seed=self.config.seed, index=i, now=now)
            for i in range(self.config.devices)
        ]
        progress(f"manufactured {len(chips)} simulated chips (vendor {self._vendor.ca_cert.subject.rfc4514_string()})")
        for start in range(0, len(chips), VOUCHER_BATCH):
            ids = [c.device_id for c in chips[start : start + VOUCHER_BATCH]]
            voucher = sign_voucher(
                self._vendor.ca_key, self._vendor.ca_cert, tenant_id=tenant_id, device_ids=ids, now=now
            )
            answer = self._op(
                "claim", "POST", "/devices/claim/voucher", json={"voucher": base64.b64encode(voucher).decode()}
            )
            self.claimed += len(answer.get("claimed", []))
            for refused in answer.get("refused", []):
                if refused.get("error") != "already_claimed" or "your tenant" not in str(refused.get("detail", "")):
                    raise SimServiceError("claim", 409, str(refused.get("error")), str(refused.get("detail", ""))[:300])
        progress(f"claimed {self.claimed} device(s) with vendor vouchers ({len(chips) - self.claimed} already ours)")
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            list(
                pool.map(
                    lambda c: self._op(
                        "assign", "POST", f"/devices/{c.device_id}/group", json={"group": self.config.group}
                    ),
                    chips,
                )
            )
        progress(f"assigned {len(chips)} device(s) to {self.config.group}")
        crashes = CrashModel(self.config.crash_rates, seed=self.config.seed)
        self.devices = [
            SimDevice(c, http=self._http, workdir=root / c.device_id[:16], crashes=crashes, seed=self.config.seed)
            for c in chips
        ]

    def round(self, now: dt.datetime | None = None) -> RoundFigures:
        """Every device checks in once, ``concurrency`` at a time."""
        started = self._clock()
        self.rounds += 1
        figures = RoundFigures(self.rounds, len(self.devices))
        with ThreadPoolExecutor(self.config.concurrency) as pool:
            for item in pool.map(lambda d: d.check_in(now or self._clock()), self.devices):
                figures.add(item)
        figures.seconds = (self._clock() - started).total_seconds()
        return figures

    def running(self) -> Iterator[tuple[str, dict[str, str]]]:
        """Each device's ID and the app versions it runs."""
        for device in self.devices:
            yield device.device_id, dict(device.installed)
