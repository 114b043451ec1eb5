"""``bastion device run``: boot an emulated device and run it as its own processes.

This command is the device's boot process (DESIGN.md, "Processes on an emulated
device"):

1. boot: the ROM (here) verifies, measures and unpacks the bootloader image,
   then the bootloader stage runs from it as its own process and derives the
   Alias key (:func:`bastion.boot.boot_device`). A failure leaves the chip in
   recovery.
2. start the **monitor** (``python -m bastion.monitor``) from the unpacked
   bootloader image (``PYTHONPATH`` = ``DEV/run/bl-*``, the measured code) with
   one end of a socketpair, and hand it the Alias key, chain and boot claims over a pipe;
3. start the **OS** (``python -m bastion.os``) from the unpacked OS image
   (``PYTHONPATH`` = the image's runtime directory) with the other end;
4. drop the key material, supervise both, forward SIGTERM/SIGINT;
5. boot again (from step 1) when the OS exits with ``EXIT_REBOOT`` (an OS update
   is armed), when an OS on a trial slot exits non-zero, or when it has not
   confirmed within the boot configuration's ``trial_timeout_s`` (it is stopped):
   the bootloader then rolls back. At most ``MAX_BOOTS_PER_RUN`` boots per run;
   otherwise exit with the OS's exit status.

Neither child gets a secret in argv or the environment; the OS gets no path to
the UDS. The service URL is kept in the chip's config flash partition.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from bastion.boot.result import BootResult
from bastion.cli.apps import device_app
from bastion.cli.output import JsonOption, emit_object, fail, progress
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError
from bastion.hw.flash import BootState, Partition
from bastion.monitor.identity import MonitorIdentity, encode_handoff
from bastion.os.config import DeviceConfig, encode_config, parse_config
from bastion.os.errors import ConfigError
from bastion.os.exitcodes import EXIT_REBOOT

__all__ = [
    "EXIT_TRIAL_TIMEOUT",
    "MAX_BOOTS_PER_RUN",
    "DeviceProcesses",
    "child_env",
    "os_state_dir",
    "prepare_peripherals",
    "run_cmd",
]

#: Where the OS keeps its state, under the device directory.
OS_STATE_DIRNAME = "os-state"
#: Environment variables a child may inherit; everything else is dropped.
ENV_ALLOWLIST = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "HOME")
#: How long the monitor gets to exit after the OS is gone, before SIGTERM, then SIGKILL.
MONITOR_STOP_GRACE_S = 5.0
#: How long the OS gets to stop after SIGTERM before SIGKILL.
OS_STOP_GRACE_S = 10.0
#: How long the OS may take to exit after the monitor has, before that counts as a monitor failure.
MONITOR_DEATH_GRACE_S = 2.0
#: Supervision poll interval.
POLL_INTERVAL_S = 0.1
#: Poll interval while waiting for a child that is stopping.
REAP_INTERVAL_S = 0.01
#: Exit status when the monitor dies while the OS runs.
EXIT_MONITOR_DIED = 3
#: Status :meth:`DeviceProcesses.wait` returns when it stopped a trial OS that did not confirm in time.
EXIT_TRIAL_TIMEOUT = 124
#: Bound on boots in one ``device run`` (reboots asked by the OS, failed or timed-out
#: trials), so an OS that keeps asking to reboot cannot loop for ever.
MAX_BOOTS_PER_RUN = 8


def os_state_dir(dev_dir: Path) -> Path:
    """The OS's state directory for a device."""
    return dev_dir / OS_STATE_DIRNAME


def prepare_peripherals(dev_dir: Path, *, owner_uid: int | None = None) -> None:
    """Power the emulated peripherals on for a boot: ``DEV/periph`` with the chip's model, apps' pins reset.

    The OS cannot read the chip's model (``chip/`` is out of its reach); it reads
    ``DEV/periph/board.json``. A failure here is reported and the boot goes on
    (apps that use peripherals will find them unavailable).
    """
    from bastion.hw.peripherals import Board, periph_dir

    try:
        Board.prepare(periph_dir(dev_dir), Chip(dev_dir).model(), owner_uid=owner_uid)
    except (HwError, OSError) as exc:
        progress(f"the peripherals are not available this boot: {exc}")


def child_env(pythonpath: Path) -> dict[str, str]:
    """A minimal environment for a child: an allowlist plus ``PYTHONPATH``.

    ``PYTHONDONTWRITEBYTECODE`` keeps the verified OS image tree unmodified.
    """
    env = {name: os.environ[name] for name in ENV_ALLOWLIST if name in os.environ}
    env["PYTHONPATH"] = str(pythonpath)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def identity_from_boot(result: BootResult, dev_dir: Path | None = None) -> MonitorIdentity:
    """What the monitor is handed from a boot: the Alias key, the claims it vouches for, where the chip is."""
    return MonitorIdentity(
        alias_key=result.alias_key,
        cert_chain=result.cert_chain,
        device_id=result.device_id,
        measurements=result.measurements,
        boot_slot=result.boot_slot,
        os_version=result.os_version,
        os_security_version=result.os_security_version,
        rollback_counters=dict(result.rollback_counters),
        secboot=result.secboot,
        dbgstat=result.dbgstat,
        dev_dir=None if dev_dir is None else str(dev_dir.absolute()),
        trial=result.trial,
    )


def _write_all(fd: int, data: bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@dataclass
class DeviceProcesses:
    """The monitor and OS processes of one booted device.

    Args:
        dev_dir: the device directory.
        config_path: the device config file the OS reads (the config partition).
        once: run the OS with ``--once``.
    """

    dev_dir: Path
    config_path: Path
    once: bool = False
    monitor: subprocess.Popen[bytes] | None = field(default=None, init=False)
    os_process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    #: Peak resident set size of each child, in KiB, sampled from /proc (VmHWM).
    peak_rss_kib: dict[str, int] = field(default_factory=dict, init=False)
    #: The booted slot, and when a trial OS must have confirmed (monotonic), if on trial.
    boot_slot: str | None = field(default=None, init=False)
    trial_deadline: float | None = field(default=None, init=False)

    def trial_confirmed(self) -> bool:
        """Whether the boot state now names the booted slot active with no trial armed."""
        try:
            state = Chip(self.dev_dir).flash.read_boot_state()
        except HwError:
            return False
        return state.trial_slot is None and state.active_slot is not None and state.active_slot.value == self.boot_slot

    def _sample_rss(self, process: subprocess.Popen[bytes]) -> None:
        """Record a live child's VmHWM: its own high-water mark since exec.

        (``wait4``'s ``ru_maxrss`` is not used: Linux carries the parent's high-water
        mark across fork and exec into it, so it overstates a small child.)
        """
        name = "monitor" if process is self.monitor else "os"
        try:
            status = Path(f"/proc/{process.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                self.peak_rss_kib[name] = max(kib, self.peak_rss_kib.get(name, 0))
                return

    def _poll(self, process: subprocess.Popen[bytes]) -> int | None:
        """``Popen.poll``, sampling the child's peak RSS while it still runs."""
        if process.returncode is None:
            self._sample_rss(process)
        return process.poll()

    def _wait(self, process: subprocess.Popen[bytes], timeout: float | None = None) -> int:
        """``Popen.wait`` through :meth:`_poll`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self._poll(process)) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(process.args, timeout or 0.0)
            time.sleep(REAP_INTERVAL_S)
        return code

    def start(self, result: BootResult) -> None:
        """Start the monitor, hand it the identity, then start the OS from the image."""
        os_end, monitor_end = socket.socketpair()
        read_fd, write_fd = os.pipe()
        handoff = encode_handoff(identity_from_boot(result, self.dev_dir))
        self.boot_slot = result.boot_slot
        self.trial_deadline = time.monotonic() + result.trial_timeout_s if result.trial else None
        try:
            self.monitor = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    "-m",
                    "bastion.monitor",
                    "--sock-fd",
                    str(monitor_end.fileno()),
                    "--handoff-fd",
                    str(read_fd),
                ],
                pass_fds=(monitor_end.fileno(), read_fd),
                env=child_env(result.bootloader_runtime_dir),  # the measured code of the bootloader image
                cwd=self.dev_dir,
            )
            os.close(read_fd)
            read_fd = -1
            _write_all(write_fd, handoff)
        finally:
            handoff[:] = bytes(len(handoff))  # best effort: Python may hold other copies
            os.close(write_fd)
            if read_fd >= 0:
                os.close(read_fd)
            monitor_end.close()
        state_dir = os_state_dir(self.dev_dir).absolute()
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        prepare_peripherals(self.dev_dir)
        try:
            self.os_process = subprocess.Popen(
                [
                    sys.executable,
                    "-P",
                    "-m",
                    "bastion.os",
                    "--monitor-fd",
                    str(os_end.fileno()),
                    "--state-dir",
                    str(state_dir),
                    "--config",
                    str(self.config_path),
                    *(["--once"] if self.once else []),
                ],
                pass_fds=(os_end.fileno(),),
                env=child_env(result.os_runtime_dir),  # the code comes from the OS image
                cwd=state_dir,
            )
        except OSError:
            self.stop()
            raise
        finally:
            os_end.close()

    def pid(self, which: str) -> int | None:
        """The pid of the ``"monitor"`` or ``"os"`` process, if started."""
        process = self.monitor if which == "monitor" else self.os_process
        return None if process is None else process.pid

    def signal_os(self, signum: int) -> None:
        """Forward a signal to the OS, if it runs."""
        if self.os_process is not None and self._poll(self.os_process) is None:
            self.os_process.send_signal(signum)

    def wait(self) -> int:
        """Supervise until the OS exits; then stop the monitor. Returns the exit status."""
        if self.os_process is None or self.monitor is None:
            raise RuntimeError("start() first")
        while True:
            code = self._poll(self.os_process)
            if code is not None:
                break
            if self.trial_deadline is not None and time.monotonic() >= self.trial_deadline:
                if not self.trial_confirmed():
                    progress("the trial OS did not confirm in time; stopping it")
                    self.stop()
                    return EXIT_TRIAL_TIMEOUT
                self.trial_deadline = None
            if self._poll(self.monitor) is not None:
                # The monitor also exits when the OS has just closed its socket on
                # the way out: give the OS a moment before calling it a failure.
                try:
                    code = self._wait(self.os_process, MONITOR_DEATH_GRACE_S)
                except subprocess.TimeoutExpired:
                    progress(f"monitor exited ({self.monitor.returncode}); stopping the OS")
                    self.stop()
                    return EXIT_MONITOR_DIED
                break
            time.sleep(POLL_INTERVAL_S)
        self._stop_monitor()
        return code

    def _stop_monitor(self) -> None:
        if self.monitor is None:
            return
        try:  # it exits by itself once the OS's end of the socket is closed
            self._wait(self.monitor, MONITOR_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            self.monitor.terminate()
            try:
                self._wait(self.monitor, MONITOR_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.monitor.kill()
                self._wait(self.monitor)

    def stop(self) -> None:
        """Stop the OS (SIGTERM, then SIGKILL) and then the monitor."""
        if self.os_process is not None and self._poll(self.os_process) is None:
            self.os_process.terminate()
            try:
                self._wait(self.os_process, OS_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.os_process.kill()
                self._wait(self.os_process)
        self._stop_monitor()


def _config_for(chip: Chip, service: str | None, service_ca: Path | None = None) -> DeviceConfig:
    """Read the device config from flash, updating the service URL and CA file if given."""
    current: DeviceConfig | None = None
    if not chip.flash.is_empty(Partition.CONFIG):
        current = parse_config(chip.flash.read(Partition.CONFIG))
    if service is None and service_ca is None:
        if current is None:
            raise ConfigError("this device has no service URL yet")
        return current
    url = service if service is not None else (current.service_url if current is not None else None)
    if url is None:
        raise ConfigError("this device has no service URL yet")
    if service_ca is not None and not service_ca.is_file():
        raise ConfigError(f"no CA file at {service_ca}")
    ca_file = str(service_ca.absolute()) if service_ca is not None else (current.ca_file if current else None)
    # Keep everything else the config holds (pinned app keys, intervals, policy).
    config = (
        dataclasses.replace(current, service_url=url, ca_file=ca_file)
        if current is not None
        else DeviceConfig(service_url=url, ca_file=ca_file)
    )
    chip.flash.write(Partition.CONFIG, encode_config(config))  # encode_config validates the URL
    return config


def _read_state(dev_dir: Path) -> dict[str, Any]:
    path = os_state_dir(dev_dir) / "state.json"
    try:
        value = json.loads(path.read_bytes()[: 64 * 1024])
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _boot(dev_dir: Path) -> BootResult:
    """ROM here, then the bootloader stage as its own process from the measured image (:mod:`bastion.boot.chain`)."""
    from bastion.boot import boot_device
    from bastion.boot.errors import BootError

    try:
        return boot_device(dev_dir, now=dt.datetime.now(dt.UTC))
    except BootError as exc:
        fail(
            f"boot failed; the chip is in recovery: {exc}",
            hint="re-flash a good OS image with `bastion device flash`, or check the vendor keys",
            exit_code=2,
        )


@device_app.command("run")
def run_cmd(
    dev_dir: Annotated[Path, typer.Option("--dir", help="The device directory.")],
    service: Annotated[
        str | None, typer.Option("--service", help="Security Service URL (remembered in the device config).")
    ] = None,
    service_ca: Annotated[
        Path | None,
        typer.Option("--service-ca", help="PEM CA file that verifies an https:// service (remembered)."),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Attest once, then stop (exit 0 on success).")] = False,
    as_json: JsonOption = False,
) -> None:
    """Boot the device and run its monitor and OS processes."""
    dev_dir = dev_dir.absolute()  # the children run in other directories
    try:
        chip = Chip.open(dev_dir)
        config = _config_for(chip, service, service_ca)
    except ConfigError as exc:
        fail(f"{exc}", hint="pass --service URL (it is remembered for later runs)")
    except HwError as exc:
        fail(f"{exc}", hint="create a device with `bastion device manufacture --dir DEV`")
    running: list[DeviceProcesses] = []
    stopping: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        del frame
        stopping.append(signum)
        if running:
            running[-1].signal_os(signal.SIGTERM)

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {
        sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    peak_rss_kib: dict[str, int] = {}
    try:
        for boot_number in range(1, MAX_BOOTS_PER_RUN + 1):
            processes = DeviceProcesses(dev_dir=dev_dir, config_path=chip.flash.path(Partition.CONFIG), once=once)
            running.append(processes)
            code, trial = _boot_and_run(processes, boot_number, config)
            for name, kib in processes.peak_rss_kib.items():
                peak_rss_kib[name] = max(kib, peak_rss_kib.get(name, 0))
            reason = None if stopping else _reboot_reason(code, trial=trial and not processes.trial_confirmed())
            if reason is None:
                break
            progress(f"rebooting: {reason}")
        else:
            fail(
                f"the device booted {MAX_BOOTS_PER_RUN} times in one run; stopping",
                hint=f"the OS log is {os_state_dir(dev_dir) / 'os.log'}",
                exit_code=EXIT_REBOOT,
            )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _report(dev_dir, code, once=once, as_json=as_json, peak_rss_kib=peak_rss_kib)


def _boot_and_run(processes: DeviceProcesses, boot_number: int, config: DeviceConfig) -> tuple[int, bool]:
    """Boot once and supervise the OS until it exits; returns its status and whether it was a trial."""
    dev_dir = processes.dev_dir
    progress(f"booting {dev_dir}" + (f" (boot {boot_number})" if boot_number > 1 else ""))
    result = _boot(dev_dir)
    trial = result.trial
    progress(
        f"booted slot {result.boot_slot}: OS {result.os_version}, device {result.device_id}"
        + (f" (trial: must confirm within {result.trial_timeout_s} s)" if trial else "")
    )
    _report_boot_event(dev_dir)
    try:
        processes.start(result)
        del result  # the boot process keeps no reference to the Alias key
        progress(f"monitor pid {processes.pid('monitor')}; OS pid {processes.pid('os')}; service {config.service_url}")
        code = processes.wait()
    finally:
        processes.stop()
    return code, trial


def _reboot_reason(code: int, *, trial: bool) -> str | None:
    """Why the device boots again after the OS exited with ``code``, or None to stop."""
    if code == EXIT_REBOOT:
        return "the OS asked to reboot"
    if trial and code == EXIT_TRIAL_TIMEOUT:
        return "the trial OS did not confirm within the trial bound"
    if trial and code != 0:
        return f"the trial OS exited with status {code}"
    return None


def _report_boot_event(dev_dir: Path) -> None:
    try:
        state: BootState = Chip(dev_dir).flash.read_boot_state()
    except HwError:
        return
    if state.last_event is not None:
        event = state.last_event
        progress(f"boot event: {event.kind} from OS {event.from_version} to OS {event.to_version}")


def _report(dev_dir: Path, code: int, *, once: bool, as_json: bool, peak_rss_kib: dict[str, int]) -> None:
    state = _read_state(dev_dir)
    if peak_rss_kib:
        progress(", ".join(f"{name} peak RSS {kib / 1024:.1f} MiB" for name, kib in sorted(peak_rss_kib.items())))
    if as_json:
        emit_object({**state, "exit_code": code, "peak_rss_kib": peak_rss_kib}, as_json=True)
    elif state:
        emit_object(
            {
                k: state.get(k)
                for k in (
                    "device_id",
                    "os_version",
                    "boot_slot",
                    "last_result",
                    "last_reason",
                    "last_detail",
                    "cert_not_after",
                    "next_attestation_at",
                    "runtime_path",
                )
            },
            as_json=False,
            title="device",
        )
    if code != 0:
        reason = state.get("last_reason") or "see the OS log"
        detail = state.get("last_detail") or ""
        fail(
            f"the OS exited with status {code}: {reason}" + (f": {detail}" if detail else ""),
            hint=f"the OS log is {os_state_dir(dev_dir) / 'os.log'}",
            exit_code=code,
        )
    if once:
        progress("attested; certificate stored in " + str(os_state_dir(dev_dir) / "device-cert.pem"))
