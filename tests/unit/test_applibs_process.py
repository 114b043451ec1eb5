"""A real app process uses applibs over the fd the OS passes it (unsandboxed; the sandbox has its own tests)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from _applibs_rig import CID, OTHER, manifest

import bastion
from bastion.os.appservices.application import MessageService
from bastion.os.appservices.channel import ChannelService
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.server import AppServer
from bastion.os.appservices.services import AppServices
from bastion.os.appservices.storage import StorageService
from bastion.os.appservices.watchdog import WatchdogService

APP = textwrap.dedent(
    """
    from bastion.applibs import application, errors, storage, watchdog
    storage.write_file("note.txt", b"written by the app")
    assert storage.read_file("note.txt") == b"written by the app"
    watchdog.arm(30)
    watchdog.kick()
    application.send_message("{other}", b"hello partner")
    reply = application.receive_message(timeout=10)
    assert reply is not None and reply.sender == "{other}", reply
    try:
        storage.write_file("big", b"x" * 9000)
    except errors.QuotaExceededError as exc:
        print("quota:", exc)
    print("done", reply.data.decode())
    """
)


def test_an_app_process_uses_storage_messages_and_the_watchdog(tmp_path: Path) -> None:
    services = AppServices()
    manifests = {
        CID: manifest({"MutableStorage": {"SizeKB": 8}, "AllowedApplicationConnections": [OTHER]}),
        OTHER: manifest({"AllowedApplicationConnections": [CID]}, component_id=OTHER),
    }
    messages = MessageService(manifests.get)
    channels, dog = ChannelService(), WatchdogService()
    for service in (StorageService(), messages, channels, dog):
        services.add(service)
    ctx = AppContext(CID, "1.0.0", manifests[CID], tmp_path / "storage", services.mapping)
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = AppServer(ctx, os_end)
    server.start()

    def partner() -> None:
        message = messages.receive(OTHER, 10)
        if message is not None:
            messages.send(manifests[OTHER], message.sender, b"hi " + message.data[:5])

    replier = threading.Thread(target=partner)
    replier.start()
    try:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "BASTION_APPLIBS_FD": str(app_end.fileno()),
            "PYTHONPATH": str(Path(bastion.__file__).parents[1]),
        }
        done = subprocess.run(
            [sys.executable, "-I", "-c", APP.replace("{other}", OTHER)],
            env=env,
            pass_fds=(app_end.fileno(),),
            capture_output=True,
            timeout=60,
            check=False,
        )
    finally:
        app_end.close()
        replier.join(10)
        server.close()
        channels.close_all()
    assert done.returncode == 0, done.stderr.decode()
    out = done.stdout.decode()
    assert "quota: writing big would use" in out
    assert "SizeKB 8" in out
    assert out.strip().endswith("done hi hello")
    assert (tmp_path / "storage" / "note.txt").read_bytes() == b"written by the app"
    assert not (tmp_path / "storage" / "big").exists()
    assert dog.deadline(CID) is not None
