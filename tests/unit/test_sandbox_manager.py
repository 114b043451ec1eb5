"""The app manager runs every app in its sandbox: applibs from inside, layers, stop, and refusing to start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _sandbox_support import APP_X, APP_Y, KEY, NOW, install_app, make_device, run_to_exit, wait_for

from bastion.images.app_build import build_app_image
from bastion.os.apps.launch import INSECURE_LAYERS
from bastion.os.sandbox.process import pids_in_namespace


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for the host's init to reap it does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


HELLO = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hello"
HELLO_ID = json.loads((HELLO / "app_manifest.json").read_text())["ComponentId"]


def test_the_sample_app_runs_sandboxed_reports_its_layers_and_leaves_nothing_at_stop(tmp_path: Path) -> None:
    device = make_device(tmp_path)
    image = tmp_path / "hello.img"
    build_app_image(HELLO, image, KEY, version="1.0.0")
    device.store.install(image, component_id=HELLO_ID, version="1.0.0")
    device.manager.start_all(NOW)
    wait_for(lambda: "hello 1.0.0 heartbeat 2" in device.log(HELLO_ID))
    wait_for(lambda: device.manager.layers(HELLO_ID).get("confirmed") is True)
    layers = device.manager.layers(HELLO_ID)
    assert layers["sandbox"] == "bubblewrap"
    assert layers["namespaces"] == ["user", "pid", "ipc", "uts", "cgroup", "net"]
    assert 10000 <= layers["uid"] < 60000
    assert layers["seccomp_filters"] == 1
    assert layers["landlock"]["abi"] >= 1
    assert layers["rlimits"]["nproc"] == layers["limits"]["nproc"]
    assert layers["rlimits"]["core"] == 0
    row = device.manager.status()[0]
    assert row["sandbox"] == layers
    run = device.manager._apps[HELLO_ID].run
    assert run is not None
    namespace, init_pid = run.tree.pid_namespace, run.tree.init_pid
    assert namespace is not None
    assert init_pid is not None
    assert len(pids_in_namespace(namespace)) == 2  # bubblewrap's init and the app
    device.manager.stop(HELLO_ID)
    assert pids_in_namespace(namespace) == []
    assert not alive(init_pid)
    assert device.manager.layers(HELLO_ID)["confirmed"] is True  # kept after the stop
    assert device.events_of("sandbox_violation") == []


def test_applibs_works_from_inside_the_sandbox(tmp_path: Path) -> None:
    code = """
from bastion import applibs
print("ping", applibs.ping("through the sandbox"), flush=True)
print("whoami", applibs.whoami()["component_id"], flush=True)
"""
    log = run_to_exit(make_device(tmp_path), APP_X, code)
    assert "ping through the sandbox" in log
    assert f"whoami {APP_X}" in log


def test_a_second_hello_is_refused_and_recorded(tmp_path: Path) -> None:
    code = """
from bastion import applibs
hello = {"landlock": {"abi": 0, "unavailable": "forged"}, "rlimits": {}, "seccomp_filters": 0,
         "no_new_privs": False, "capabilities": 0, "uid": 0}
try:
    applibs.connection().call("sandbox.hello", hello)
    print("ACCEPTED")
except applibs.PermissionDeniedError as exc:
    print("refused:", exc)
"""
    device = make_device(tmp_path)
    log = run_to_exit(device, APP_X, code)
    assert "refused: the sandbox already said hello" in log
    assert "ACCEPTED" not in log
    denied = device.events_of("app_denied")
    assert len(denied) == 1
    assert "sandbox.hello" in denied[0].detail
    assert device.manager.layers(APP_X)["landlock"]["abi"] >= 1  # the launcher's record stands


#: A planted ``bastion`` package in the app's own directory: it forges a hello if the launcher imports it.
PLANTED_BASTION = """
import sys
__path__ = [p + "/bastion" for p in sys.path if p != "/app"]
from bastion.applibs import connection
forged = {"landlock": {"abi": 99, "fs": True, "net": True, "scoped": []}, "rlimits": {}, "seccomp_filters": 7,
          "no_new_privs": True, "capabilities": 0, "uid": 0}
try:
    connection().call("sandbox.hello", forged)
    print("FORGED", flush=True)
except Exception as exc:
    print("forge refused", type(exc).__name__, flush=True)
"""


def test_a_planted_bastion_package_cannot_forge_the_launchers_hello(tmp_path: Path) -> None:
    # Regression: the launcher imported bastion.applibs with /app first on sys.path, so an app's own
    # /app/bastion/__init__.py ran before the hello and could rewrite the record of its sandbox.
    code = "import bastion\nprint('app ran', flush=True)\n"
    device = make_device(tmp_path)
    log = run_to_exit(device, APP_X, code, files={"bastion/__init__.py": PLANTED_BASTION})
    assert "app ran" in log  # the launcher's own hello was the first
    assert "FORGED" not in log
    layers = device.manager.layers(APP_X)
    assert layers["confirmed"] is True
    assert layers["landlock"]["abi"] != 99
    assert layers["seccomp_filters"] == 1


def test_stop_kills_processes_that_ignore_sigterm_and_leave_the_session(tmp_path: Path) -> None:
    code = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(600)
    os._exit(0)
print("daemonized", flush=True)
time.sleep(600)
"""
    device = make_device(tmp_path)
    device.manager.limits = type(device.manager.limits)(stop_grace_s=0.5)
    install_app(tmp_path / "build", device.store, APP_X, code)
    device.manager.start_all(NOW)
    wait_for(lambda: "daemonized" in device.log(APP_X))
    run = device.manager._apps[APP_X].run
    assert run is not None
    namespace = run.tree.pid_namespace
    assert namespace is not None
    wait_for(lambda: len(pids_in_namespace(namespace)) == 3)  # init, app, the daemon
    host_pids = pids_in_namespace(namespace)
    device.manager.stop_all()
    assert pids_in_namespace(namespace) == []
    assert not any(alive(pid) for pid in host_pids)
    assert device.events_of("sandbox_violation") == []  # the kernel ended them all with the init


def test_stopping_an_ended_app_never_touches_a_new_app_that_got_its_namespace_number(tmp_path: Path) -> None:
    # Regression: the kernel gives a freed pid namespace's inode number to a later namespace, so the
    # stop of an app that had ended could find a newer app's processes "in its namespace", kill them
    # and record a false sandbox_violation (seen with 35 apps starting at once). Each sandbox now
    # holds its namespace open until its stop is done, and a tree that holds none claims no process.
    device = make_device(tmp_path)
    install_app(tmp_path / "build", device.store, APP_X, "print('quick', flush=True)\n")
    device.manager.start_all(NOW)
    first = device.manager._apps[APP_X].run
    assert first is not None
    first.tree.process.wait(15)  # ended; the manager has not looked yet
    init_pid = first.tree.init_pid
    wait_for(lambda: not Path(f"/proc/{init_pid}").exists())
    pin = first.tree.namespace_fd
    assert pin is not None
    assert os.fstat(pin).st_ino == first.tree.pid_namespace  # still held: the number stays this app's
    install_app(tmp_path / "build", device.store, APP_Y, "import time\nprint('up', flush=True)\ntime.sleep(60)\n")
    device.manager.restart(APP_Y, NOW)
    wait_for(lambda: "up" in device.log(APP_Y))
    second = device.manager._apps[APP_Y].run
    assert second is not None
    # What the kernel does once nothing holds the namespace: its number goes to the next one.
    first.tree.release()
    first.tree.pid_namespace = second.tree.pid_namespace
    device.manager.poll(NOW)  # reaps the first app and checks that nothing of it is left
    assert device.events_of("sandbox_violation") == []
    assert APP_Y in device.manager.running()
    assert len(pids_in_namespace(second.tree.pid_namespace or 0)) == 2
    device.manager.stop_all()
    assert second.tree.namespace_fd is None  # released at the stop


@pytest.mark.parametrize("how", ["injected path", "PATH"])
def test_without_bubblewrap_no_app_starts_and_the_error_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    if how == "PATH":
        empty = tmp_path / "empty-bin"
        empty.mkdir()
        monkeypatch.setenv("PATH", str(empty))
        device = make_device(tmp_path)
    else:
        device = make_device(tmp_path, bwrap=str(tmp_path / "no" / "bwrap"))
    install_app(tmp_path / "build", device.store, APP_X, "print('RAN')")
    install_app(tmp_path / "build", device.store, APP_Y, "print('RAN')")
    device.manager.start_all(NOW)
    assert device.manager.running() == {}
    unavailable = device.events_of("sandbox_unavailable")
    assert sorted(e.component_id for e in unavailable) == sorted([APP_X, APP_Y])
    assert all("fix: apt-get install bubblewrap" in e.detail for e in unavailable)
    assert ("not on PATH" if how == "PATH" else "does not exist") in unavailable[0].detail
    assert device.manager.layers(APP_X)["sandbox"] == "unavailable"
    device.manager.poll(NOW.replace(year=2027))  # no retry behind the user's back
    assert device.manager.running() == {}
    assert "RAN" not in device.log(APP_X)


def test_insecure_no_sandbox_runs_a_plain_child_with_its_socket_and_says_so(tmp_path: Path) -> None:
    code = """
import os
from bastion import applibs
print("ping", applibs.ping("plain"), flush=True)
print("pid1" if os.getpid() == 1 else "host pid", flush=True)
try:
    applibs.connection().call("sandbox.hello", {"landlock": {"abi": 7}, "rlimits": {}, "seccomp_filters": 1,
                              "no_new_privs": True, "capabilities": 0, "uid": 1})
    print("ACCEPTED")
except applibs.PermissionDeniedError:
    print("hello refused")
"""
    device = make_device(tmp_path, insecure_no_sandbox=True)
    log = run_to_exit(device, APP_X, code)
    assert "ping plain" in log
    assert "host pid" in log
    assert "hello refused" in log  # an unsandboxed app cannot claim layers
    assert device.manager.layers(APP_X) == INSECURE_LAYERS


def test_apps_die_with_the_os_even_on_kill_9(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from _sandbox_support import APP_X, NOW, install_app, make_device, wait_for
        device = make_device(Path({str(tmp_path)!r}))
        code = "import time\\nprint('up', flush=True)\\ntime.sleep(600)"
        install_app(device.root / "build", device.store, APP_X, code)
        device.manager.start_all(NOW)
        wait_for(lambda: "up" in device.log(APP_X))
        print(device.manager._apps[APP_X].run.tree.pid_namespace, flush=True)
        time.sleep(600)
    """)
    os_process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert os_process.stdout is not None
        namespace = int(os_process.stdout.readline())
        assert len(pids_in_namespace(namespace)) == 2
        os_process.send_signal(signal.SIGKILL)
        os_process.wait(10)
        wait_for(lambda: pids_in_namespace(namespace) == [], timeout=10)
    finally:
        if os_process.poll() is None:
            os_process.kill()
            os_process.wait()
        if os_process.stdout is not None:
            os_process.stdout.close()


def test_an_executable_entry_point_is_execed_with_only_its_socket_open(tmp_path: Path) -> None:
    script = """#!/bin/sh
echo "fd3 $(readlink /proc/$$/fd/3 | cut -c1-7) env $BASTION_APPLIBS_FD"
echo discarded > /dev/null && echo "devnull ok"
for fd in /proc/$$/fd/*; do readlink "$fd"; done | grep -c -e memfd -e pipe: | sed 's/^/leaked /'
"""
    log = run_to_exit(make_device(tmp_path), APP_X, script, entry="run.sh")
    assert "fd3 socket: env 3" in log
    assert "devnull ok" in log
    assert "leaked 0" in log  # neither the seccomp memfd nor bubblewrap's info pipe reached the app
