"""The app manager: start, crash and restart with backoff, stop only one app, logs bounded."""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_updates_support import APP_A, APP_B, build_app, started_version

from bastion.crypto.keys import generate_private_key
from bastion.os.apps.manager import AppLimits, AppManager
from bastion.os.apps.store import AppStore
from bastion.os.updates.events import EventQueue

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
KEY = generate_private_key()


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[AppManager]:
    store = AppStore(tmp_path / "apps")
    for cid, crash in ((APP_A, False), (APP_B, True)):
        img = tmp_path / f"{cid}.img"
        img.write_bytes(build_app(tmp_path / "build", KEY, cid, "1.0.0", crash=crash))
        store.install(img, component_id=cid, version="1.0.0")
    made = AppManager(
        store,
        log_dir=tmp_path / "logs",
        data_dir=tmp_path / "data",
        events=EventQueue(tmp_path / "events.json"),
        limits=AppLimits(restart_initial_s=10, log_max_bytes=64, stop_grace_s=3),
    )
    yield made
    made.stop_all()


def kinds(manager: AppManager) -> list[tuple[str, str]]:
    return [(e.kind, e.component_id) for e in manager._events.all()]


def test_crashed_app_is_recorded_and_restarted_with_backoff(manager: AppManager) -> None:
    manager.start_all(NOW)
    b = manager._apps[APP_B].process
    assert b is not None
    b.wait(10)
    manager.poll(NOW)
    failed = [e for e in manager._events.all() if e.kind == "app_failed"]
    assert len(failed) == 1
    assert failed[0].component_id == APP_B
    assert failed[0].detail.startswith("exit code 3")
    assert "hello from 1.0.0" in failed[0].detail  # the log tail
    manager.poll(NOW + dt.timedelta(seconds=5))  # before the backoff: not restarted
    assert APP_B not in manager.running()
    manager.poll(NOW + dt.timedelta(seconds=10))
    assert kinds(manager).count(("app_started", APP_B)) == 2
    manager._apps[APP_B].process.wait(10)  # type: ignore[union-attr]
    manager.poll(NOW + dt.timedelta(seconds=11))
    assert manager._apps[APP_B].restart_at == NOW + dt.timedelta(seconds=31)  # 20 s after the second crash
    assert APP_A in manager.running()  # the healthy app was never touched


def app_pid(manager: AppManager, component_id: str) -> int:
    """The host pid of the app process itself, inside its sandbox (not bubblewrap's)."""
    run = manager._apps[component_id].run
    assert run is not None
    pids = [pid for pid in run.tree.members() if pid != run.tree.init_pid]
    assert len(pids) == 1
    return pids[0]


def test_restart_stops_only_that_app_and_stop_all_stops_everything(manager: AppManager) -> None:
    manager.start_all(NOW)
    wait_for(lambda: started_version(manager.log_path(APP_A)) == "1.0.0")
    pid_a = manager.running()[APP_A]
    manager.restart(APP_A, NOW)
    assert manager.running()[APP_A] != pid_a
    with pytest.raises(ProcessLookupError):
        os.kill(pid_a, 0)
    manager.stop_all()
    assert manager.running() == {}


def test_app_gets_a_minimal_environment_and_its_own_cwd(manager: AppManager) -> None:
    os.environ["BASTION_SECRET_FOR_TEST"] = "leak"
    try:
        manager.start_all(NOW)
    finally:
        del os.environ["BASTION_SECRET_FOR_TEST"]
    wait_for(lambda: started_version(manager.log_path(APP_A)) == "1.0.0")
    pid = app_pid(manager, APP_A)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0] for item in environ if item}
    assert b"BASTION_SECRET_FOR_TEST" not in names
    assert names == {
        b"PATH",
        b"LANG",
        b"MALLOC_ARENA_MAX",
        b"HOME",
        b"TMPDIR",
        b"PYTHONUNBUFFERED",
        b"PYTHONDONTWRITEBYTECODE",
        b"BASTION_APP_COMPONENT_ID",
        b"BASTION_APP_VERSION",
        b"BASTION_APPLIBS_FD",
        b"PWD",  # bubblewrap sets it with --chdir
    }  # no BASTION_APP_STORAGE: the app has no MutableStorage
    assert str(Path(f"/proc/{pid}/cwd").readlink()) == "/app"  # its version directory, seen from inside


def test_logs_are_rotated_at_their_bound(manager: AppManager, tmp_path: Path) -> None:
    log = tmp_path / "logs" / f"{APP_A}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text("x" * 1000)
    manager.start_all(NOW)
    assert (tmp_path / "logs" / f"{APP_A}.log.1").stat().st_size == 1000
    wait_for(lambda: log.stat().st_size > 0)
    assert log.stat().st_size < 1000


def test_entry_point_outside_the_app_is_refused(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    img = tmp_path / "a.img"
    img.write_bytes(build_app(tmp_path / "build", KEY, APP_A, "1.0.0"))
    app = store.install(img, component_id=APP_A, version="1.0.0")
    (app.path / "main.py").unlink()
    (tmp_path / "outside.py").write_text("print('escaped')")
    (app.path / "main.py").symlink_to(tmp_path / "outside.py")
    events = EventQueue(tmp_path / "events.json")
    manager = AppManager(store, log_dir=tmp_path / "logs", data_dir=tmp_path / "data", events=events)
    manager.start_all(NOW)
    assert manager.running() == {}
    failed = [e for e in events.all() if e.kind == "app_failed"]
    assert "not in the app" in failed[0].detail
