"""An app served in-process: its AppContext, an AppServer on a socketpair, and the app's Connection.

Used by the applibs capability tests::

    with AppRig(tmp_path, {"MutableStorage": {"SizeKB": 8}}, services=[StorageService()]) as app:
        app.call("storage.write", {...})
        app.records   # the security events the choke point recorded
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from bastion.applibs import _client
from bastion.applibs._client import Connection
from bastion.images.manifest import AppManifest, validate_manifest
from bastion.os.appservices.registry import AppContext
from bastion.os.appservices.server import AppServer
from bastion.os.appservices.services import AppServices

CID = "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10"
OTHER = "7a1e0c2d-5b3f-4e6a-8c9d-0e1f2a3b4c5d"


def manifest(capabilities: dict[str, object], *, component_id: str = CID, app_type: str = "Default") -> AppManifest:
    value = validate_manifest(
        json.dumps(
            {
                "SchemaVersion": 1,
                "Name": "t",
                "ComponentId": component_id,
                "EntryPoint": "main.py",
                "CmdArgs": [],
                "ApplicationType": "Default",
                "Capabilities": capabilities,
            }
        ).encode()
    )
    # The manifest schema learns RealTimeCapable with the real-time cores; the choke point only reads the field.
    return dataclasses.replace(value, application_type=app_type)


class AppRig:
    """One app: context, server thread and client connection (close with ``with`` or :meth:`close`)."""

    def __init__(
        self,
        storage_dir: Path,
        capabilities: dict[str, object],
        *,
        services: Iterable[object] | AppServices = (),
        component_id: str = CID,
        app_type: str = "Default",
    ) -> None:
        registry = services if isinstance(services, AppServices) else AppServices()
        if not isinstance(services, AppServices):
            for service in services:
                registry.add(service)
        self.records: list[tuple[str, str]] = []
        self.ctx = AppContext(
            component_id=component_id,
            version="1.0.0",
            manifest=manifest(capabilities, component_id=component_id, app_type=app_type),
            storage_dir=storage_dir,
            services=registry.mapping,
            record=lambda kind, detail: self.records.append((kind, detail)),
        )
        os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.server = AppServer(self.ctx, os_end)
        self.server.start()
        self.connection = Connection(app_end)
        self.channels: dict[str, Connection] = {}

    def call(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.connection.call(op, args)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> AppRig:
        """Make this the process's applibs connection (for the app-side modules)."""
        monkeypatch.setattr(_client, "_connection", self.connection)
        monkeypatch.setattr(_client, "_channels", self.channels)
        return self

    def denied(self) -> list[str]:
        return [detail for kind, detail in self.records if kind == "app_denied"]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()
        self.connection.close()
        self.server.close()

    def __enter__(self) -> AppRig:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
