"""The hostile app (examples/apps/hostile) against the real sandbox: every escape fails closed and leaves a record.

One device world per module (a manufactured chip with its flash, an OS state
with the device TLS key, a victim app with a secret in its storage, loopback
listeners) runs every attack at once through the real :class:`AppManager`
and bubblewrap: the attacks that do not end the app in one start, each attack
that the seccomp filter kills (or that holds resources) in a start of its own,
each as its own app. Each test then checks one attack, so a regression names
it: the app's report line says blocked, the OS recorded what it could see
(``app_denied`` naming the capability, ``sandbox_violation`` for SIGSYS), and
nothing outside the app changed (the chip, the flash, the victim's storage and
the device key are hashed before and after).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from _sandbox_support import KEY, NOW, Device, install_app, make_device

from bastion.hw.chip import Chip
from bastion.hw.flash import Partition
from bastion.hw.peripherals import Board, periph_dir
from bastion.hw.uart import UartBridge
from bastion.images.app_build import build_app_image
from bastion.os.appservices.denials import MAX_RECORDED_DENIALS
from bastion.os.appservices.device import capability_services
from bastion.os.appservices.services import AppServices
from bastion.os.appservices.table import OPERATIONS
from bastion.os.sandbox.policy import SandboxLimits
from bastion.os.sandbox.process import pids_in_namespace
from bastion.os.state import StateDir

HOSTILE = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hostile"
NAMESPACE = uuid.UUID("0badc0de-5e1f-4a7e-9d00-000000000000")
VICTIM = "7a1b2c3d-4e5f-4a6b-9c8d-1e2f3a4b5c6d"
MARKER = "bastion-hostile-"
STORAGE_KB = 16
_MIB = 1024 * 1024
LIMITS = SandboxLimits(tmp_bytes=4 * _MIB, shm_bytes=1 * _MIB, nproc=24, fsize_bytes=4 * _MIB, memory_bytes=96 * _MIB)
#: Bound on the whole run (all apps start at once).
DEADLINE_S = 45.0

VICTIM_CODE = """
import os, time
n = 0
while True:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    n += 1
    print(f"victim forked {n}", flush=True)
    time.sleep(0.2)
"""


def _attacks() -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(HOSTILE / "main.py"), "--list"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split() for line in out.splitlines())


ATTACKS = _attacks()
SAFE = sorted(name for name, group in ATTACKS.items() if group == "safe")
KILLED = sorted(name for name, group in ATTACKS.items() if group == "kill")
OWN = sorted(name for name, group in ATTACKS.items() if group == "own")
#: The capability ops of the table that the hostile app's manifest does not grant.
CAPABILITY_OPS = {
    name: op.capability
    for name, op in sorted(OPERATIONS.items())
    if op.capability is not None and op.capability != "MutableStorage"
}


def component(name: str) -> str:
    """The component ID of the hostile app that runs ``name`` (``safe`` for the safe group)."""
    return str(uuid.uuid5(NAMESPACE, name))


def _hash_tree(*roots: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
        for path in paths:
            hashes[str(path)] = "link:" + str(path.readlink()) if path.is_symlink() else _sha(path.read_bytes())
    return hashes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def marked_processes() -> list[int]:
    """Host pids of every live process whose argv carries the hostile app's marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if MARKER.encode() in (entry / "cmdline").read_bytes():
                    state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(int(entry.name))
    return found


@dataclass
class Listeners:
    """Where the host listens on loopback, so a connection from an app would show."""

    tcp: socket.socket
    udp: socket.socket
    abstract: socket.socket
    abstract_name: str

    @classmethod
    def open(cls) -> Listeners:
        name = f"bastion-listener-{uuid.uuid4().hex[:12]}"
        for _ in range(20):
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.bind(("127.0.0.1", 0))
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind(("127.0.0.1", tcp.getsockname()[1]))
            except OSError:
                tcp.close()
                udp.close()
                continue
            tcp.listen(8)
            abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            abstract.bind("\0" + name)
            abstract.listen(8)
            for sock in (tcp, udp, abstract):
                sock.setblocking(False)
            return cls(tcp, udp, abstract, name)
        raise RuntimeError("no free loopback port for TCP and UDP")

    @property
    def port(self) -> int:
        return int(self.tcp.getsockname()[1])

    def reached(self) -> list[str]:
        """What arrived (nothing should)."""
        seen = []
        for label, sock in (("tcp", self.tcp), ("abstract", self.abstract)):
            with contextlib.suppress(BlockingIOError):
                peer, _ = sock.accept()
                peer.close()
                seen.append(label)
        with contextlib.suppress(BlockingIOError):
            self.udp.recv(64)
            seen.append("udp")
        return seen

    def close(self) -> None:
        for sock in (self.tcp, self.udp, self.abstract):
            sock.close()


@dataclass
class World:
    """The device, what was planted in it, and what happened while the hostile apps ran."""

    dev: Path
    device: Device
    listeners: Listeners
    uart: UartBridge
    uart_app_end: socket.socket
    secrets: dict[str, str]
    before: dict[str, str]
    after: dict[str, str] = field(default_factory=dict)
    reached: list[str] = field(default_factory=list)
    namespaces: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def lines(self, component_id: str) -> list[dict[str, Any]]:
        """The JSON lines of an app's log (and its rotated backup)."""
        text = ""
        path = self.device.manager.log_path(component_id)
        for candidate in (path.with_suffix(".log.1"), path):
            with contextlib.suppress(FileNotFoundError):
                text += candidate.read_text(errors="replace")
        values = []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict):
                    values.append(value)
        return values

    def outcome(self, name: str, component_id: str | None = None) -> dict[str, Any]:
        """The report line of attack ``name``."""
        cid = component_id or component("safe" if name in SAFE else name)
        found = [v for v in self.lines(cid) if v.get("attack") == name and "blocked" in v]
        assert len(found) == 1, (name, self.device.log(cid)[-2000:])
        return found[0]

    def events(self, component_id: str, kind: str) -> list[str]:
        return [e.detail for e in self.device.events.all() if e.component_id == component_id and e.kind == kind]


def _install_hostile(root: Path, device: Device, name: str, args: list[str]) -> None:
    source = root / f"hostile-{name}"
    shutil.copytree(HOSTILE, source, ignore=shutil.ignore_patterns("__pycache__"))
    manifest = json.loads((source / "app_manifest.json").read_text())
    manifest.update(
        {
            "ComponentId": component(name),
            "Name": f"hostile-{name}"[:32],
            "CmdArgs": args,
            "Capabilities": {"MutableStorage": {"SizeKB": STORAGE_KB}},
        }
    )
    (source / "app_manifest.json").write_text(json.dumps(manifest))
    (source / "ops.json").write_text(json.dumps(CAPABILITY_OPS))
    image = root / f"hostile-{name}.img"
    build_app_image(source, image, KEY, version="1.0.0")
    device.store.install(image, component_id=component(name), version="1.0.0")


def _wait(condition: Callable[[], bool], device: Device, deadline: float, what: str) -> None:
    while not condition():
        device.manager.poll(NOW)
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _ended(device: Device, component_id: str) -> bool:
    record = device.manager._apps.get(component_id)
    return record is not None and record.run is None


def _victim_forks(world: World) -> int:
    lines = [x for x in world.device.log(VICTIM).splitlines() if x.startswith("victim forked ")]
    return int(lines[-1].split()[-1]) if lines else 0


def _make_world(root: Path) -> World:
    dev = root / "dev"
    chip = Chip.manufacture(dev)
    chip.flash.write(Partition.OS_A, os.urandom(64 * 1024))
    chip.flash.write(Partition.BOOTLOADER, os.urandom(16 * 1024))
    state = StateDir(dev / "os-state")
    state.load_or_create_key()
    (dev / "os-state" / "os.log").write_text("the OS log\n")
    services = AppServices()  # the same capability services as the real OS (MutableStorage enforces SizeKB)
    device = make_device(dev, sandbox_limits=LIMITS, services=services.mapping)
    store = device.store
    device.manager.watchdog = capability_services(
        services,
        state_dir=dev / "os-state",
        manifest_of=lambda cid: app.manifest if (app := store.get(cid)) else None,
        stop=threading.Event(),
    ).watchdog
    # make_device keeps its store and events under DEV like the real OS: flash/apps, os-state/...
    device.events.record(at=int(NOW.timestamp()), kind="os_confirmed", detail="sentinel before the hostile apps")
    victim_storage = device.manager.storage_dir(VICTIM)
    victim_storage.mkdir(mode=0o700, parents=True)
    (victim_storage / "secret.txt").write_bytes(os.urandom(32))
    install_app(root / "build", device.store, VICTIM, VICTIM_CODE, capabilities={"MutableStorage": {"SizeKB": 8}})
    board = Board.prepare(periph_dir(dev), chip.model())
    board.gpio.open(8, "output", 1, owner=VICTIM)  # the victim's LED, and a UART it has open
    board.adc.set("ADC-CONTROLLER-0", 0, 1234)
    board.i2c.attach("ISU2", 0x48, b"victim")
    uart_os_end, uart_app_end = socket.socketpair()
    uart = UartBridge(board.uart_socket("ISU0"), uart_os_end)
    uart.start()
    listeners = Listeners.open()
    context = [
        "--dev", str(dev), "--os-pid", str(os.getpid()), "--victim", VICTIM,
        "--port", str(listeners.port), "--abstract", listeners.abstract_name,
    ]  # fmt: skip
    _install_hostile(root, device, "safe", ["--safe", *context])
    for name in KILLED + OWN:
        _install_hostile(root, device, name, ["--attack", name, *context])
    safe_storage = device.manager.storage_dir(component("safe"))
    safe_storage.mkdir(mode=0o700, parents=True)
    (safe_storage / "planted-link").symlink_to(dev / "chip" / "uds")
    secrets = {
        "uds": _sha((dev / "chip" / "uds").read_bytes()),
        "device_key": _sha((dev / "os-state" / "device-key.pem").read_bytes()),
        "victim_secret": _sha((victim_storage / "secret.txt").read_bytes()),
        "fuses": _sha((dev / "chip" / "fuses.json").read_bytes()),
    }
    watched = (dev / "chip", dev / "flash", victim_storage, dev / "os-state" / "device-key.pem", periph_dir(dev))
    return World(dev, device, listeners, uart, uart_app_end, secrets, _hash_tree(*watched))


def _run(world: World) -> None:
    device = world.device
    deadline = time.monotonic() + DEADLINE_S
    device.manager.start_all(NOW)
    for cid, record in device.manager._apps.items():
        if record.run is not None and record.run.tree.pid_namespace is not None:
            world.namespaces[cid] = record.run.tree.pid_namespace
    ending = [component(n) for n in [*KILLED, "memory_hog", "log_flood", "forge_hello", "applibs_flood", "safe"]]
    # The fork bomb holds its children while every other app starts and runs: the victim must still fork.
    bomb = component("fork_bomb")
    _wait(
        lambda: any(v.get("attack") == "fork_bomb" and "blocked" in v for v in world.lines(bomb)),
        device,
        deadline,
        "the bomb",
    )
    forks_at_bomb = _victim_forks(world)
    _wait(lambda: _victim_forks(world) >= forks_at_bomb + 2, device, deadline, "the victim to fork during the bomb")
    world.notes["os_forks_during_bomb"] = subprocess.run(["/bin/true"], check=False).returncode
    world.notes["victim_forks_during_bomb"] = _victim_forks(world) - forks_at_bomb
    # The daemons must be alive before their app is stopped, and gone after.
    daemons = component("daemons")
    _wait(
        lambda: any(v.get("attack") == "daemons" for v in world.lines(daemons) if "blocked" in v),
        device,
        deadline,
        "the daemons",
    )
    world.notes["marked_before_stop"] = marked_processes()
    device.manager.stop(daemons)
    world.notes["marked_after_stop"] = marked_processes()
    world.notes["daemons_namespace_after_stop"] = pids_in_namespace(world.namespaces[daemons])
    for cid in ending:
        _wait(lambda cid=cid: _ended(device, cid), device, deadline, f"app {cid} to end")
    world.notes["victim_running"] = VICTIM in device.manager.running()
    world.notes["bomb_running"] = bomb in device.manager.running()
    device.manager.stop_all()
    world.notes["marked_after_stop_all"] = marked_processes()
    world.notes["left_in_namespaces"] = {cid: pids_in_namespace(ns) for cid, ns in world.namespaces.items()}
    world.reached = world.listeners.reached()
    victim_storage = device.manager.storage_dir(VICTIM)
    watched = (
        world.dev / "chip",
        world.dev / "flash",
        victim_storage,
        world.dev / "os-state" / "device-key.pem",
        periph_dir(world.dev),
    )
    world.after = _hash_tree(*watched)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("hostile")
    made = _make_world(root)
    try:
        _run(made)
        yield made
    finally:
        made.device.manager.stop_all()
        made.listeners.close()
        made.uart.close()
        made.uart_app_end.close()


# --- the attacks that do not end the app (one start) -------------------------------------------------


@pytest.mark.parametrize("name", SAFE)
def test_the_attack_is_blocked(world: World, name: str) -> None:
    outcome = world.outcome(name)
    assert outcome["blocked"] is True, outcome
    assert not set(world.secrets.values()) & set(outcome["detail"].get("leaked", [])), outcome


@pytest.mark.parametrize("name", KILLED)
def test_the_seccomp_filter_kills_the_attack_and_it_is_recorded(world: World, name: str) -> None:
    cid = component(name)
    lines = world.lines(cid)
    assert {"attack": name, "trying": True} in lines  # it did run up to the forbidden call
    assert [v for v in lines if "blocked" in v] == [], lines  # and never got past it
    violations = world.events(cid, "sandbox_violation")
    assert len(violations) == 1
    assert "seccomp" in violations[0]
    assert world.events(cid, "app_failed")[0].startswith("signal 31 (SIGSYS")


def test_nothing_outside_the_apps_changed(world: World) -> None:
    assert world.after == world.before
    assert len(world.before) > 5  # the chip, its flash, the victim's secret, the device key


def test_no_secret_reached_any_app_log(world: World) -> None:
    logs = "".join(world.device.log(component(n)) for n in ["safe", *KILLED, *OWN])
    for name, digest in world.secrets.items():
        assert digest not in logs, name


def test_no_connection_reached_the_host(world: World) -> None:
    assert world.reached == []


def test_no_app_reached_the_peripherals_behind_the_os(world: World) -> None:
    for name in ("periph_state_files", "periph_uart_socket"):
        assert set(world.outcome(name)["detail"]["errors"].values()) <= {"FileNotFoundError", "PermissionError"}
    assert (world.uart.to_app, world.uart.to_clients) == (0, 0)  # nothing was injected into the victim's line


def test_every_safe_attack_ran_and_the_app_finished(world: World) -> None:
    lines = world.lines(component("safe"))
    assert {"done": True, "attacks": len(SAFE)} in lines
    assert world.events(component("safe"), "sandbox_violation") == []


# --- what the OS must see and record ----------------------------------------------------------------------


def test_an_unknown_op_is_denied_and_recorded(world: World) -> None:
    outcome = world.outcome("applibs_unknown_op")
    assert set(outcome["detail"]["errors"].values()) == {"PermissionDeniedError"}
    assert any("no such operation" in d for d in world.events(component("safe"), "app_denied"))


def test_every_op_without_its_capability_is_denied_naming_it_and_recorded(world: World) -> None:
    outcome = world.outcome("applibs_no_capability")
    assert outcome["detail"]["named"] == CAPABILITY_OPS
    denied = world.events(component("safe"), "app_denied")
    # The per-start bound must leave room to record each of these one by one (else they are only counted).
    assert len(CAPABILITY_OPS) + 8 <= MAX_RECORDED_DENIALS
    for op, capability in CAPABILITY_OPS.items():
        assert any(d.startswith(f"{capability}: {op}:") for d in denied), (op, denied)


def test_malformed_oversized_and_smuggled_messages_leave_the_server_answering(world: World) -> None:
    for name in ("applibs_malformed", "applibs_oversized", "applibs_fd_smuggling"):
        assert world.outcome(name)["detail"]["server_alive"] is True, name


def test_a_forged_hello_does_not_change_the_record_of_the_sandbox(world: World) -> None:
    cid = component("forge_hello")
    outcome = world.outcome("forge_hello", cid)  # the app ran: its launcher's own hello was accepted
    assert outcome["blocked"] is True, outcome
    layers = world.device.manager.layers(cid)
    assert layers["confirmed"] is True
    assert layers["landlock"]["abi"] != 99
    assert layers["seccomp_filters"] == 1
    assert any("already said hello" in d for d in world.events(cid, "app_denied"))


def test_a_flood_of_refusals_keeps_the_record_bounded_and_older_events(world: World) -> None:
    cid = component("applibs_flood")
    assert world.outcome("applibs_flood", cid)["detail"]["refused"] >= 800
    denied = world.events(cid, "app_denied")
    assert 1 <= len(denied) <= 16, len(denied)
    assert any("not recorded one by one" in d for d in denied)
    kinds = [(e.kind, e.detail) for e in world.device.events.all()]
    assert ("os_confirmed", "sentinel before the hostile apps") in kinds
    for name in KILLED:  # every other app's violation is still there
        assert world.events(component(name), "sandbox_violation"), name


# --- resources -----------------------------------------------------------------------------------------


def test_storage_writes_stop_at_the_quota(world: World) -> None:
    outcome = world.outcome("storage_quota")
    assert outcome["blocked"] is True
    if "storage.write" in OPERATIONS:  # the storage ops exist: the OS itself must have said "quota"
        assert "QuotaExceededError" in outcome["how"], outcome
    else:
        assert outcome["how"] == "PermissionDeniedError,PermissionDeniedError"  # no such operation yet
    stored = world.device.manager.storage_dir(component("safe"))
    used = sum(p.lstat().st_size for p in stored.rglob("*") if not p.is_symlink())
    assert used <= STORAGE_KB * 1024


def test_tmp_and_shm_fill_stop_at_their_size(world: World) -> None:
    assert world.outcome("tmp_fill")["detail"]["written_bytes"] <= LIMITS.tmp_bytes
    assert world.outcome("shm_fill")["detail"]["written_bytes"] <= LIMITS.shm_bytes


def test_a_fork_bomb_is_capped_and_neither_another_app_nor_the_os_stops_forking(world: World) -> None:
    outcome = world.outcome("fork_bomb")
    assert outcome["blocked"] is True
    assert outcome["how"] == "EAGAIN"
    assert outcome["detail"]["children"] < LIMITS.nproc
    assert world.notes["victim_forks_during_bomb"] >= 2
    assert world.notes["os_forks_during_bomb"] == 0
    assert world.notes["victim_running"] is True
    assert world.notes["bomb_running"] is True  # it was still holding its children until stop_all


def test_a_thread_bomb_is_capped(world: World) -> None:
    assert world.outcome("thread_bomb")["detail"]["threads"] < LIMITS.nproc


def test_a_memory_hog_is_stopped_by_its_limit(world: World) -> None:
    cid = component("memory_hog")
    held = [v["holding_mib"] for v in world.lines(cid) if "holding_mib" in v]
    assert max(held, default=0) * _MIB <= LIMITS.memory_bytes
    failed = world.events(cid, "app_failed")
    blocked = [v for v in world.lines(cid) if v.get("attack") == "memory_hog" and "blocked" in v]
    if blocked:  # refused by RLIMIT_AS before the cgroup's OOM killer
        assert blocked[0]["blocked"] is True
    else:  # killed by the OOM killer inside its own cgroup
        assert failed[0].startswith("signal 9"), failed


def test_a_log_flood_stops_at_the_file_size_limit(world: World) -> None:
    cid = component("log_flood")
    assert world.events(cid, "app_failed")[0].startswith("exit code 0")  # it saw EFBIG
    path = world.device.manager.log_path(cid)
    for log in (path, path.with_suffix(".log.1")):
        if log.exists():
            assert log.stat().st_size <= LIMITS.fsize_bytes


# --- nothing outlives the app -----------------------------------------------------------------------------


def test_daemons_that_ignore_sigterm_do_not_outlive_the_stop(world: World) -> None:
    assert len(world.notes["marked_before_stop"]) >= 3  # they were there
    assert world.notes["marked_after_stop"] == []
    assert world.notes["daemons_namespace_after_stop"] == []
    assert world.events(component("daemons"), "sandbox_violation") == []  # nothing had to be killed late


def test_no_process_of_any_app_is_left_after_stop(world: World) -> None:
    assert world.notes["marked_after_stop_all"] == []
    assert world.notes["left_in_namespaces"] == {cid: [] for cid in world.namespaces}
    assert len(world.namespaces) == len(KILLED) + len(OWN) + 2  # every app ran sandboxed
    assert world.device.manager.running() == {}
