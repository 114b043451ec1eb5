"""Fuzz the app manifest validator (:func:`bastion.images.manifest.validate_manifest`).

Documented error: :class:`ManifestError`. Also checked: an accepted manifest
survives its own ``to_json`` (the app builder writes that into every image, and
the device validates it again).
"""

from __future__ import annotations

from bastion.images.manifest import ManifestError, validate_manifest

SEEDS: list[bytes] = [
    b'{"SchemaVersion": 1, "Name": "hello", "ComponentId": "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10", '
    b'"EntryPoint": "main.py", "CmdArgs": ["--x", "1"], "ApplicationType": "Default", "Version": "1.2.3", '
    b'"Capabilities": {"AllowedTcpServerPorts": [8080], "AllowedConnections": ["example.com", "10.0.0.1"], '
    b'"Gpio": [1, "$LED"], "Uart": ["$UART0"], "MutableStorage": {"SizeKB": 64}, "CertStore": true, '
    b'"PowerControls": ["ForceReboot"], "DeviceAuthentication": "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e11"}}',
    b'{"SchemaVersion": 1, "Name": "rt", "ComponentId": "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e12", '
    b'"EntryPoint": "rt.py", "ApplicationType": "RealTimeCapable", '
    b'"Capabilities": {"Gpio": [4], "AllowedApplicationConnections": ["0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10"]}}',
    b'{"SchemaVersion": 2, "Name": "", "ComponentId": "x", "EntryPoint": "../m.py", "Name": 1}',
]


def test_one_input(data: bytes) -> None:
    """Validate ``data`` as an app_manifest.json."""
    try:
        manifest = validate_manifest(data)
    except ManifestError as exc:
        if not exc.errors:
            raise RuntimeError("ManifestError without any issue") from exc
        return
    try:
        validate_manifest(manifest.to_json(version=manifest.version))
    except ManifestError as exc:
        raise RuntimeError(f"an accepted manifest does not survive to_json: {exc}") from exc
