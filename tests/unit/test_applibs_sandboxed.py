"""The capabilities from inside a real bubblewrap sandbox, through the real app manager."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

from _sandbox_support import APP_X, APP_Y, NOW, install_app, make_device, wait_for

from bastion.os.appservices.application import MessageService
from bastion.os.appservices.channel import ChannelService
from bastion.os.appservices.services import AppServices
from bastion.os.appservices.storage import StorageService
from bastion.os.appservices.watchdog import WatchdogService

STORAGE_APP = textwrap.dedent(
    """
    import os, sys
    from bastion.applibs import errors, storage
    storage.write_file("state.txt", b"v1")
    print("direct read:", open("/storage/state.txt", "rb").read().decode())
    try:
        open("/storage/evil", "wb")
    except OSError as exc:
        print("direct write refused:", type(exc).__name__)
    try:
        os.symlink("/etc/passwd", "/storage/link")
    except OSError as exc:
        print("symlink refused:", type(exc).__name__)
    try:
        storage.write_file("big", b"x" * 20000)
    except errors.QuotaExceededError as exc:
        print("quota:", exc)
    print("usage:", storage.get_usage().used_bytes)
    """
)


def test_a_sandboxed_app_writes_only_through_applibs_and_within_its_quota(tmp_path: Path) -> None:
    services = AppServices()
    services.add(StorageService())
    device = make_device(tmp_path, services=services.mapping)
    install_app(tmp_path / "build", device.store, APP_X, STORAGE_APP, capabilities={"MutableStorage": {"SizeKB": 8}})
    device.manager.start_all(NOW)
    device.wait_exit(APP_X)
    log = device.log(APP_X)
    assert "direct read: v1" in log, log
    assert "direct write refused:" in log
    assert "symlink refused:" in log
    assert "quota: writing big would use" in log
    assert "SizeKB 8" in log
    assert "usage: 4608" in log
    storage = device.manager.storage_dir(APP_X)
    assert sorted(p.name for p in storage.iterdir()) == ["state.txt"]
    device.manager.stop_all()


PARTNER = textwrap.dedent(
    """
    from bastion.applibs import application
    message = application.receive_message(timeout=20)
    application.send_message(message.sender, b"pong:" + message.data)
    """
)
ASKER = textwrap.dedent(
    """
    import time
    from bastion.applibs import application, watchdog
    time.sleep(0.5)
    application.send_message("{partner}", b"ping")
    reply = application.receive_message(timeout=20)
    print("reply:", reply.sender, reply.data.decode())
    watchdog.arm(1.0)
    print("armed; hanging", flush=True)
    time.sleep(600)
    """
)


def test_sandboxed_partners_message_and_a_hung_app_is_killed_by_its_watchdog(tmp_path: Path) -> None:
    services = AppServices()
    channels, dog = ChannelService(), WatchdogService()
    for service in (StorageService(), channels, dog):
        services.add(service)
    device = make_device(tmp_path, services=services.mapping)
    store = device.store
    services.add(MessageService(lambda cid: app.manifest if (app := store.get(cid)) else None))
    device.manager.watchdog = dog
    install_app(tmp_path / "build", store, APP_Y, PARTNER, capabilities={"AllowedApplicationConnections": [APP_X]})
    install_app(
        tmp_path / "build",
        store,
        APP_X,
        ASKER.replace("{partner}", APP_Y),
        capabilities={"AllowedApplicationConnections": [APP_Y]},
    )
    try:
        device.manager.start_all(NOW)
        wait_for(lambda: "armed; hanging" in device.log(APP_X), timeout=30)
        assert f"reply: {APP_Y} pong:ping" in device.log(APP_X)
        first = device.manager.running()[APP_X]
        device.manager.poll(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5))
        assert APP_X not in device.manager.running() or device.manager.running()[APP_X] != first
        watchdog_events = device.events_of("app_watchdog")
        assert [e.component_id for e in watchdog_events] == [APP_X]
        assert "missed its 1 s watchdog deadline" in watchdog_events[0].detail
        assert "sandbox_violation" not in device.kinds(APP_X)  # nothing of the app outlived the kill
    finally:
        device.manager.stop_all()
        channels.close_all()
