"""``bastion device run``: boot an emulated device and run it as its own processes.

This command is the device's boot process (docs/design.md, "Processes on an emulated
device"):

1. boot: the ROM (here) verifies, measures and unpacks the bootloader image,
   then the bootloader stage runs from it as its own process and derives the
   Alias key (:func:`bastion.boot.boot_device`). A failure leaves the chip in
   recovery.
2. start the **monitor** (``python -m bastion.monitor``) from the unpacked
   bootloader image (``PYTHONPATH`` = ``DEV/run/bl-*``, the measured code) with
   one end of a socketpair, and hand it the Alias key, chain and boot claims over a pipe;
3. start the **OS** (``python -m bastion.os``) from the unpacked OS image
   (``PYTHONPATH`` = the image's runtime directory) with the other end, in its
   sandbox (:mod:`bastion.cli._os_process`, docs/adr/0010-os-process-separation.md):
   an unprivileged uid without capabilities, its own pid namespace, and no
   ``DEV/chip`` or ``DEV/flash``. Only the device option ``--insecure-no-sandbox``
   runs it without (loudly, and the monitor claims it in the evidence);
4. drop the key material, supervise both, forward SIGTERM/SIGINT (to the OS's own
   process, not to its bubblewrap);
5. boot again (from step 1) when the OS exits with ``EXIT_REBOOT`` (an OS update
   is armed), when an OS on a trial slot exits non-zero, or when it has not
   confirmed within the boot configuration's ``trial_timeout_s`` (it is stopped):
   the bootloader then rolls back. At most ``MAX_BOOTS_PER_RUN`` such boots per
   run; otherwise exit with the OS's exit status;
6. boot again when the OS crashes (:mod:`bastion.cli._os_crashes`): a signal
   death or a status it does not use on purpose, recorded as ``os_crashed``,
   at most ``MAX_OS_CRASH_RESTARTS`` times within ``OS_CRASH_WINDOW_S``.

Neither child gets a secret in argv or the environment; the OS gets no path to
the UDS. The service URL is kept in the chip's config flash partition.
"""

from __future__ import annotations

import contextlib
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
from bastion.boot.slots import fail_trial
from bastion.cli._os_crashes import CrashBudget, crash_description, exit_status
from bastion.cli._os_process import INSECURE_WARNING, OsLaunch, descendant, prepare_os_launch
from bastion.cli.apps import device_app
from bastion.cli.output import JsonOption, emit_object, fail, progress
from bastion.hw.chip import Chip
from bastion.hw.errors import HwError
from bastion.hw.flash import BootState, Partition, Slot
from bastion.monitor.identity import MonitorIdentity, encode_handoff
from bastion.os.config import DeviceConfig, encode_config, load_config, parse_config
from bastion.os.device_dir import os_state_dir
from bastion.os.errors import ConfigError, SandboxUnavailableError, StateError
from bastion.os.exitcodes import EXIT_REBOOT
from bastion.os.sandbox.os_process import DEFAULT_OS_UID, OsCredentials, find_tools
from bastion.os.state import StateDir
from bastion.os.updates.events import EventQueue

__all__ = [
    "EXIT_TRIAL_TIMEOUT",
    "MAX_BOOTS_PER_RUN",
    "DeviceProcesses",
    "child_env",
    "os_state_dir",
    "prepare_peripherals",
    "run_cmd",
]

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
#: Bound on waiting for a sandboxed OS's own process to appear below bubblewrap.
OS_START_TIMEOUT_S = 10.0
#: Exit status when the monitor dies while the OS runs.
EXIT_MONITOR_DIED = 3
#: Status :meth:`DeviceProcesses.wait` returns when it stopped a trial OS that did not confirm in time.
EXIT_TRIAL_TIMEOUT = 124
#: Bound on boots in one ``device run`` (reboots asked by the OS, failed or timed-out
#: trials), so an OS that keeps asking to reboot cannot loop for ever.
MAX_BOOTS_PER_RUN = 8


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


def identity_from_boot(
    result: BootResult, dev_dir: Path | None = None, *, insecure_no_sandbox: bool = False
) -> MonitorIdentity:
    """What the monitor is handed from a boot: the Alias key, the claims it vouches for, where the chip is.

    ``insecure_no_sandbox`` is the device option from the config partition (the
    OS cannot write it): the monitor claims it in the attestation evidence.
    """
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
        insecure_no_sandbox=insecure_no_sandbox,
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
        os_owner: the uid and gid of a sandboxed OS when ``device run`` is root.
    """

    dev_dir: Path
    config_path: Path
    once: bool = False
    os_owner: OsCredentials = field(default_factory=OsCredentials)
    monitor: subprocess.Popen[bytes] | None = field(default=None, init=False)
    os_process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    #: Peak resident set size of each child, in KiB, sampled from /proc (VmHWM).
    peak_rss_kib: dict[str, int] = field(default_factory=dict, init=False)
    #: The booted slot, and when a trial OS must have confirmed (monotonic), if on trial.
    boot_slot: str | None = field(default=None, init=False)
    trial_deadline: float | None = field(default=None, init=False)
    #: Whether the OS runs in its sandbox (not with ``--insecure-no-sandbox``).
    sandboxed: bool = field(default=False, init=False)
    _os_depth: int = field(default=0, init=False)
    _os_pid: int | None = field(default=None, init=False)

    def trial_confirmed(self) -> bool:
        """Whether the boot state now names the booted slot active with no trial armed."""
        try:
            state = Chip(self.dev_dir).flash.read_boot_state()
        except HwError:
            return False
        return state.trial_slot is None and state.active_slot is not None and state.active_slot.value == self.boot_slot

    def fail_trial(self) -> None:
        """The supervised trial OS exited with an error or did not confirm in time: a failed verdict.

        Recorded only when the trial has no attempt left (the next boot would roll back
        anyway); the rollback event then says ``failed`` rather than ``interrupted``.
        """
        if self.boot_slot is None:
            return
        try:
            fail_trial(Chip(self.dev_dir).flash, Slot(self.boot_slot), now=int(time.time()), spent_only=True)
        except (HwError, ValueError):
            return

    def _sample_rss(self, process: subprocess.Popen[bytes]) -> None:
        """Record a live child's VmHWM: its own high-water mark since exec.

        (``wait4``'s ``ru_maxrss`` is not used: Linux carries the parent's high-water
        mark across fork and exec into it, so it overstates a small child.)
        """
        name = "monitor" if process is self.monitor else "os"
        pid = process.pid if process is self.monitor else self.os_pid()
        if pid is None:
            return
        try:
            status = Path(f"/proc/{pid}/status").read_text()
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
        """Prepare the OS's sandbox, start the monitor, hand it the identity, then start the OS from the image.

        Raises:
            SandboxUnavailableError: the sandbox cannot work here (before anything starts).
            OSError: a process or the device directory failed.
        """
        config = self._device_config()
        insecure = config is not None and config.insecure_no_sandbox
        prepare_peripherals(self.dev_dir)  # before the OS's sandbox is built: it binds DEV/periph
        os_end, monitor_end = socket.socketpair()
        try:
            launch = self._prepare_os(result, config, os_end.fileno())
        except BaseException:
            os_end.close()
            monitor_end.close()
            raise
        read_fd, write_fd = os.pipe()
        handoff = encode_handoff(identity_from_boot(result, self.dev_dir, insecure_no_sandbox=insecure))
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
        except BaseException:
            os_end.close()
            raise
        finally:
            handoff[:] = bytes(len(handoff))  # best effort: Python may hold other copies
            os.close(write_fd)
            if read_fd >= 0:
                os.close(read_fd)
            monitor_end.close()
        try:
            self.os_process = subprocess.Popen(
                launch.argv,
                pass_fds=launch.pass_fds,
                env=launch.env,
                cwd=launch.cwd,
                start_new_session=launch.sandboxed,  # bwrap must not take the terminal's SIGINT: we forward it
            )
        except OSError:
            self.stop()
            raise
        finally:
            os_end.close()

    def _device_config(self) -> DeviceConfig | None:
        try:
            return load_config(self.config_path)
        except ConfigError:
            return None  # the OS reports it (and exits with EXIT_CONFIG)

    def _prepare_os(self, result: BootResult, config: DeviceConfig | None, monitor_fd: int) -> OsLaunch:
        """The OS's command line: in its sandbox unless the device is ``--insecure-no-sandbox``."""
        if config is not None and config.insecure_no_sandbox:
            progress(INSECURE_WARNING)
        launch = prepare_os_launch(
            dev_dir=self.dev_dir,
            runtime_dir=result.os_runtime_dir,
            config_path=self.config_path,
            config=config,
            boot_slot=result.boot_slot,
            monitor_fd=monitor_fd,
            once=self.once,
            env=child_env(result.os_runtime_dir),  # the code comes from the OS image
            owner=self.os_owner,
        )
        self._os_depth, self._os_pid, self.sandboxed = launch.pid_depth, None, launch.sandboxed
        return launch

    def os_pid(self, timeout: float = 0.0) -> int | None:
        """The host pid of the OS's own process (not bubblewrap's), waiting up to ``timeout`` for it."""
        process = self.os_process
        if process is None:
            return None
        deadline = time.monotonic() + timeout
        while self._os_pid is None:
            if process.poll() is not None:
                return None
            self._os_pid = descendant(process.pid, self._os_depth)
            if self._os_pid is None:
                if time.monotonic() >= deadline:
                    return None
                time.sleep(REAP_INTERVAL_S)
        return self._os_pid

    def pid(self, which: str) -> int | None:
        """The host pid of the ``"monitor"`` or ``"os"`` process (the OS's own, in its sandbox), if started."""
        if which == "os":
            return self.os_pid(OS_START_TIMEOUT_S)
        return None if self.monitor is None else self.monitor.pid

    def signal_os(self, signum: int) -> None:
        """Forward a signal to the OS's own process, if it runs.

        Not to a sandboxed OS's bubblewrap: it would die of it, and its
        pid namespace (the OS and every app) with it.
        """
        if self.os_process is None or self._poll(self.os_process) is not None:
            return
        pid = self.os_pid(OS_START_TIMEOUT_S)
        if pid is None:
            self.os_process.send_signal(signum)
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

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
        """Stop the OS (SIGTERM, then SIGKILL) and then the monitor.

        SIGKILL goes to the started process: for a sandboxed OS that is
        bubblewrap, and its pid namespace (the OS and its apps) dies with it.
        """
        if self.os_process is not None and self._poll(self.os_process) is None:
            self.signal_os(signal.SIGTERM)
            try:
                self._wait(self.os_process, OS_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.os_process.kill()
                self._wait(self.os_process)
        self._stop_monitor()


def _config_for(
    chip: Chip, service: str | None, service_ca: Path | None = None, *, insecure_no_sandbox: bool | None = None
) -> DeviceConfig:
    """Read the device config from flash, updating the service URL, CA file and sandbox option if given."""
    current: DeviceConfig | None = None
    if not chip.flash.is_empty(Partition.CONFIG):
        current = parse_config(chip.flash.read(Partition.CONFIG))
    if service is None and service_ca is None and insecure_no_sandbox is None:
        if current is None:
            raise ConfigError("this device has no service URL yet")
        return current
    url = service if service is not None else (current.service_url if current is not None else None)
    if url is None:
        raise ConfigError("this device has no service URL yet")
    if service_ca is not None and not service_ca.is_file():
        raise ConfigError(f"no CA file at {service_ca}")
    ca_file = str(service_ca.absolute()) if service_ca is not None else (current.ca_file if current else None)
    changes: dict[str, Any] = {"service_url": url, "ca_file": ca_file}
    if insecure_no_sandbox is not None:
        changes["insecure_no_sandbox"] = insecure_no_sandbox
    # Keep everything else the config holds (pinned app keys, intervals, policy).
    config = dataclasses.replace(current if current is not None else DeviceConfig(service_url=url), **changes)
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
def run_cmd(  # noqa: PLR0917 - one parameter per CLI option, as Typer requires
    dev_dir: Annotated[Path, typer.Option("--dir", help="The device directory.")],
    service: Annotated[
        str | None, typer.Option("--service", help="Security Service URL (remembered in the device config).")
    ] = None,
    service_ca: Annotated[
        Path | None,
        typer.Option("--service-ca", help="PEM CA file that verifies an https:// service (remembered)."),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Attest once, then stop (exit 0 on success).")] = False,
    insecure_no_sandbox: Annotated[
        bool,
        typer.Option(
            "--insecure-no-sandbox",
            help="INSECURE: run the OS and apps without sandboxes (remembered; attested; "
            "undo with `device provision --sandbox`).",
        ),
    ] = False,
    os_uid: Annotated[
        int,
        typer.Option("--os-uid", min=1, help="Unprivileged uid (and gid) of the sandboxed OS when run as root."),
    ] = DEFAULT_OS_UID,
    as_json: JsonOption = False,
) -> None:
    """Boot the device and run its monitor and OS processes."""
    dev_dir = dev_dir.absolute()  # the children run in other directories
    try:
        chip = Chip.open(dev_dir)
        config = _config_for(chip, service, service_ca, insecure_no_sandbox=insecure_no_sandbox or None)
    except ConfigError as exc:
        fail(f"{exc}", hint="pass --service URL (it is remembered for later runs)")
    except HwError as exc:
        fail(f"{exc}", hint="create a device with `bastion device manufacture --dir DEV`")
    if not config.insecure_no_sandbox:
        try:
            find_tools(as_root=os.geteuid() == 0)
        except SandboxUnavailableError as exc:
            fail(f"{exc}", hint=f"{exc.fix}; or, insecurely, `device run --insecure-no-sandbox`")
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
        code = _run_boots(
            chip, config, once=once, owner=OsCredentials(os_uid, os_uid), running=running, stopping=stopping
        )
    except SandboxUnavailableError as exc:
        fail(f"{exc}", hint=exc.fix)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for processes in running:
        for name, kib in processes.peak_rss_kib.items():
            peak_rss_kib[name] = max(kib, peak_rss_kib.get(name, 0))
    _report(dev_dir, code, once=once, as_json=as_json, peak_rss_kib=peak_rss_kib)


def _run_boots(
    chip: Chip,
    config: DeviceConfig,
    *,
    once: bool,
    owner: OsCredentials,
    running: list[DeviceProcesses],
    stopping: list[int],
) -> int:
    """Boot, run and reboot until the OS stops for good; returns its last status.

    Reboots the OS asks for and failed trials are bounded by ``MAX_BOOTS_PER_RUN``;
    crash restarts by the :class:`CrashBudget`.
    """
    dev_dir = chip.dev_dir
    crashes = CrashBudget()
    planned_boots = 0  # boots other than crash restarts
    while True:
        planned_boots += 1
        processes = DeviceProcesses(
            dev_dir=dev_dir, config_path=chip.flash.path(Partition.CONFIG), once=once, os_owner=owner
        )
        running.append(processes)
        code, trial = _boot_and_run(processes, len(running), config)
        if stopping:
            return code
        trial = trial and not processes.trial_confirmed()
        reason = _reboot_reason(code, trial=trial)
        if trial and reason is not None and code != EXIT_REBOOT:
            processes.fail_trial()  # it ran and failed its health check (ADR 0018)
        crash = None if trial else crash_description(code)
        if reason is None and crash is None:
            return code
        if crash is not None:
            planned_boots -= 1
            _os_crashed(dev_dir, crash, crashes, code)
            continue
        if planned_boots >= MAX_BOOTS_PER_RUN:
            fail(
                f"the device booted {MAX_BOOTS_PER_RUN} times in one run; stopping",
                hint=f"the OS log is {os_state_dir(dev_dir) / 'os.log'}",
                exit_code=EXIT_REBOOT,
            )
        progress(f"rebooting: {reason}")


def _os_crashed(dev_dir: Path, crash: str, budget: CrashBudget, code: int) -> None:
    """Record an OS crash; boot again if the budget allows, else stop the run."""
    allowed = budget.allow(now=time.monotonic())
    window = f"{budget.window_s:g} s"
    detail = f"{crash}; crash {budget.recent} within {window}" + ("" if allowed else "; the supervisor stopped")
    try:  # the OS is down: its queue is ours to append to (atomically); it reports it once up
        events = EventQueue(StateDir(os_state_dir(dev_dir)).events_path)
        events.record(at=int(time.time()), kind="os_crashed", detail=detail)
    except (OSError, StateError) as exc:
        progress(f"cannot record the OS crash in its event queue: {exc}")
    if not allowed:
        fail(
            f"the OS crashed {budget.recent} times within {window} ({crash}); stopping",
            hint=f"the OS log is {os_state_dir(dev_dir) / 'os.log'}",
            exit_code=exit_status(code),
        )
    progress(f"the OS crashed ({crash}); rebooting and restarting it ({budget.recent} of {budget.max_restarts})")


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
        sandbox = "sandboxed" if processes.sandboxed else "NOT sandboxed"
        progress(
            f"monitor pid {processes.pid('monitor')}; OS pid {processes.pid('os')} ({sandbox}); "
            f"service {config.service_url}"
        )
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
