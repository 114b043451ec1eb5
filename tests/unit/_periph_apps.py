"""Build signed app images with a chosen manifest, for the peripheral and real-time tests."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.app_build import build_app_image
from bastion.images.manifest import AppManifest, validate_manifest

KEY = generate_private_key()
MAIN = "import time\nwhile True:\n    time.sleep(1)\n"


def manifest_value(
    component_id: str, capabilities: dict[str, Any], *, app_type: str = "Default", name: str = "app"
) -> dict[str, Any]:
    return {
        "SchemaVersion": 1,
        "Name": name,
        "ComponentId": component_id,
        "EntryPoint": "main.py",
        "CmdArgs": [],
        "ApplicationType": app_type,
        "Capabilities": capabilities,
    }


def manifest(
    capabilities: dict[str, Any], *, app_type: str = "Default", component_id: str | None = None
) -> AppManifest:
    value = manifest_value(component_id or str(uuid.uuid4()), capabilities, app_type=app_type)
    return validate_manifest(json.dumps(value).encode())


def app_image(
    root: Path,
    component_id: str,
    version: str,
    capabilities: dict[str, Any],
    *,
    app_type: str = "Default",
    name: str = "app",
    main: str = MAIN,
    key: PrivateKey = KEY,
) -> Path:
    src = root / f"src-{component_id[:8]}-{version}"
    src.mkdir(parents=True, exist_ok=True)
    value = manifest_value(component_id, capabilities, app_type=app_type, name=name)
    (src / "app_manifest.json").write_text(json.dumps(value))
    (src / "main.py").write_text(main)
    out = root / f"{component_id[:8]}-{version}.img"
    build_app_image(src, out, key, version=version)
    return out
