"""Run a small app through the real app manager, in its real bubblewrap sandbox, and read what it did."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.crypto.keys import generate_private_key
from bastion.images.app_build import build_app_image
from bastion.os.apps.manager import AppLimits, AppManager
from bastion.os.apps.store import AppStore
from bastion.os.sandbox.policy import SandboxLimits
from bastion.os.updates.events import Event, EventQueue

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
KEY = generate_private_key()
APP_X = "6f0e4c1a-2b3d-4e5f-8a9b-0c1d2e3f4a5b"
APP_Y = "7a1b2c3d-4e5f-4a6b-9c8d-1e2f3a4b5c6d"


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.02)


def install_app(
    root: Path,
    store: AppStore,
    component_id: str,
    code: str,
    *,
    capabilities: dict[str, Any] | None = None,
    version: str = "1.0.0",
    entry: str = "main.py",
    files: dict[str, str] | None = None,
) -> None:
    source = root / f"src-{component_id[:8]}-{version}"
    source.mkdir(parents=True)
    for name, text in (files or {}).items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    manifest = {
        "SchemaVersion": 1,
        "Name": f"app-{component_id[:4]}",
        "ComponentId": component_id,
        "EntryPoint": entry,
        "CmdArgs": [],
        "ApplicationType": "Default",
        "Capabilities": capabilities or {},
    }
    (source / "app_manifest.json").write_text(json.dumps(manifest))
    (source / entry).write_text(code)
    if not entry.endswith(".py"):
        (source / entry).chmod(0o755)
    image = root / f"{component_id[:8]}-{version}.img"
    build_app_image(source, image, KEY, version=version)
    store.install(image, component_id=component_id, version=version)


@dataclass
class Device:
    """An app store, a manager and its event queue under one directory."""

    root: Path
    store: AppStore
    manager: AppManager
    events: EventQueue

    def log(self, component_id: str) -> str:
        try:
            return self.manager.log_path(component_id).read_text()
        except FileNotFoundError:
            return ""

    def kinds(self, component_id: str | None = None) -> list[str]:
        return [e.kind for e in self.events.all() if component_id is None or e.component_id == component_id]

    def events_of(self, kind: str) -> list[Event]:
        return [e for e in self.events.all() if e.kind == kind]

    def wait_exit(self, component_id: str, timeout: float = 15.0) -> None:
        """Wait until the app's process ended, then let the manager record it."""
        record = self.manager._apps[component_id]
        process = record.process
        assert process is not None, self.log(component_id)
        process.wait(timeout)
        self.manager.poll(NOW)


def make_device(root: Path, *, sandbox_limits: SandboxLimits | None = None, **kw: Any) -> Device:
    store = AppStore(root / "flash" / "apps")
    events = EventQueue(root / "events.json")
    manager = AppManager(
        store,
        log_dir=root / "os-state" / "apps",
        data_dir=root / "os-state" / "app-data",
        events=events,
        limits=AppLimits(restart_initial_s=60, stop_grace_s=3),
        sandbox_limits=sandbox_limits,
        **kw,
    )
    return Device(root, store, manager, events)


def run_to_exit(device: Device, component_id: str, code: str, **kw: Any) -> str:
    """Install ``code`` as an app, start it, wait for it to end; returns its log."""
    install_app(device.root / "build", device.store, component_id, code, **kw)
    device.manager.start_all(NOW)
    device.wait_exit(component_id)
    return device.log(component_id)
