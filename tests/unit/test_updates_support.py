"""A real TUF repository (python-tuf Metadata API) served over httpx.MockTransport, and a fake monitor.

Shared by the update-agent tests. The repository follows docs/updates.md:
consistent snapshots, targets stored as ``<sha256>.<basename>``, static files with
a strong ETag and ``304 Not Modified`` on ``If-None-Match``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import httpx
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, MetaFile, Root, Snapshot, TargetFile, Targets, Timestamp
from tuf.api.serialization.json import JSONSerializer

from bastion.crypto.certs import load_certificate_der
from bastion.crypto.cose import decode_sign1, verify_sign1
from bastion.crypto.keys import PrivateKey
from bastion.hw.flash import BootEvent
from bastion.images.app_build import build_app_image
from bastion.images.package import ImageType, build_image
from bastion.os.updates.reporter import STATUS_PATH

ROLES = ("root", "targets", "snapshot", "timestamp")
GROUP = "g1"
OS_COMPONENT = "6f0b3a52-5f0e-4d55-9d38-2a3f3b1f5e01"
APP_A = "5b1e2f0a-7c3d-4e8b-9a61-2f4c8d0e1a37"
APP_B = "0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10"
# ngclient checks expiry against the wall clock, so metadata expiry is relative to the real time.
REAL_NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


class TufRepo:
    """One device group's repository, in memory, with the attacks the tests need."""

    def __init__(self, group: str = GROUP) -> None:
        self.group = group
        self.signers = {role: CryptoSigner.generate_ecdsa() for role in ROLES}
        expires = REAL_NOW + dt.timedelta(days=30)
        root = Root(expires=expires, consistent_snapshot=True)
        for role, signer in self.signers.items():
            root.add_key(signer.public_key, role)
        self.root = Metadata(root)
        self.targets = Metadata(Targets(expires=expires))
        self.snapshot = Metadata(Snapshot(expires=expires))
        self.timestamp = Metadata(Timestamp(expires=expires))
        self.files: dict[str, bytes] = {}
        self.requests: list[httpx.Request] = []
        self.not_modified = 0
        self.root_bytes = self._sign(self.root, "root")
        self.files["metadata/1.root.json"] = self.root_bytes
        self._published = False
        self.publish()

    def _sign(self, md: Metadata[Any], role: str) -> bytes:
        md.signatures.clear()
        md.sign(self.signers[role])
        return md.to_bytes(JSONSerializer())

    def add_target(self, path: str, data: bytes, custom: dict[str, Any]) -> TargetFile:
        info = TargetFile.from_data(path, data, ["sha256"])
        info.unrecognized_fields["custom"] = custom
        self.targets.signed.targets[path] = info
        directory, _, base = path.rpartition("/")
        self.files[f"targets/{directory}/{info.hashes['sha256']}.{base}"] = data
        return info

    def target_file_key(self, path: str) -> str:
        info = self.targets.signed.targets[path]
        directory, _, base = path.rpartition("/")
        return f"targets/{directory}/{info.hashes['sha256']}.{base}"

    def publish(self, *, timestamp_expires: dt.datetime | None = None) -> None:
        if self._published:
            self.targets.signed.version += 1
            self.snapshot.signed.version += 1
            self.timestamp.signed.version += 1
        self._published = True
        targets = self._sign(self.targets, "targets")
        self.files[f"metadata/{self.targets.signed.version}.targets.json"] = targets
        self.snapshot.signed.meta["targets.json"] = MetaFile(version=self.targets.signed.version)
        snapshot = self._sign(self.snapshot, "snapshot")
        self.files[f"metadata/{self.snapshot.signed.version}.snapshot.json"] = snapshot
        self.timestamp.signed.snapshot_meta = MetaFile(version=self.snapshot.signed.version)
        self.timestamp.signed.expires = timestamp_expires or REAL_NOW + dt.timedelta(days=1)
        self.files["metadata/timestamp.json"] = self._sign(self.timestamp, "timestamp")

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        prefix = f"/tuf/{self.group}/"
        path = request.url.path
        if not path.startswith(prefix) or path[len(prefix) :] not in self.files:
            return httpx.Response(404)
        body = self.files[path[len(prefix) :]]
        etag = _etag(body)
        if request.headers.get("if-none-match") == etag:
            self.not_modified += 1
            return httpx.Response(304, headers={"ETag": etag})
        return httpx.Response(200, content=body, headers={"ETag": etag})


@dataclass
class StatusSink:
    """The service's status endpoint: verifies each report's COSE signature with the cert it carries."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    accept: bool = True

    def __call__(self, request: httpx.Request) -> httpx.Response:
        message = decode_sign1(request.content)
        cert = load_certificate_der(message.x5chain[0])
        verify_sign1(message, cert.public_key())  # raises if the signature does not verify
        self.reports.append(cbor2.loads(message.payload))
        return httpx.Response(200 if self.accept else 503, json={})


class Service:
    """Routes TUF files to the repository and status reports to the sink."""

    def __init__(self, repo: TufRepo) -> None:
        self.repo = repo
        self.status = StatusSink()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == STATUS_PATH:
            return self.status(request)
        return self.repo(request)


@dataclass(frozen=True)
class Facts:
    trial: bool = False
    last_event: BootEvent | None = None


@dataclass
class FakeMonitor:
    """The monitor's A/B operations, in memory (same method names and results as MonitorClient)."""

    trial: bool = False
    last_event: BootEvent | None = None
    installed: list[str] = field(default_factory=list)
    installed_bytes: list[bytes] = field(default_factory=list)
    confirmed: int = 0
    acked: int = 0
    refuse_install: bool = False
    failed_at: list[int] = field(default_factory=list)

    def read_counters(self) -> Facts:
        return Facts(self.trial, self.last_event)

    def install_os(self, path: str) -> dict[str, str]:
        from bastion.monitor.errors import MonitorRefusedError

        if self.refuse_install:
            raise MonitorRefusedError("image_refused", "not newer than the running OS")
        self.installed.append(path)
        self.installed_bytes.append(Path(path).read_bytes())
        return {"slot": "B"}

    def confirm_boot(self) -> dict[str, str]:
        self.confirmed += 1
        self.trial = False
        return {"active_slot": "B"}

    def ack_boot_event(self) -> None:
        self.acked += 1
        self.last_event = None

    def fail_trial(self, *, at: int) -> bool:
        self.failed_at.append(at)
        was_trial, self.trial = self.trial, False
        return was_trial


APP_MAIN = """\
import os, signal, sys, time
from bastion import applibs
print("hello from", os.environ["BASTION_APP_VERSION"], flush=True)
# The OS answers over the applibs socket: the line proves the app runs, with its socket, as this version.
print("started", applibs.whoami()["version"], flush=True)
if {crash}:
    sys.exit(3)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    time.sleep(0.05)
"""


def started_version(log: Path) -> str | None:
    """The version in the last ``started`` line an app wrote to its log (None before the first)."""
    try:
        lines = [line for line in log.read_text().splitlines() if line.startswith("started ")]
    except OSError:
        return None
    return lines[-1].split()[1] if lines else None


def make_app_dir(
    root: Path,
    component_id: str,
    *,
    name: str = "app",
    deferral: bool = False,
    crash: bool = False,
    notifications: bool = False,
) -> Path:
    app = root / f"src-{component_id[:8]}-{'crash' if crash else 'ok'}"
    app.mkdir(parents=True, exist_ok=True)
    manifest = {
        "SchemaVersion": 1,
        "Name": name,
        "ComponentId": component_id,
        "EntryPoint": "main.py",
        "CmdArgs": [],
        "ApplicationType": "Default",
        "Capabilities": {
            **({"SoftwareUpdateDeferral": True} if deferral else {}),
            **({"SystemEventNotifications": True} if notifications else {}),
        },
    }
    (app / "app_manifest.json").write_text(json.dumps(manifest))
    (app / "main.py").write_text(APP_MAIN.replace("{crash}", str(crash)))
    return app


def build_app(
    root: Path,
    key: PrivateKey,
    component_id: str,
    version: str,
    *,
    deferral: bool = False,
    crash: bool = False,
    notifications: bool = False,
) -> bytes:
    out = root / f"app-{component_id[:8]}-{version}.img"
    app_dir = make_app_dir(root, component_id, deferral=deferral, crash=crash, notifications=notifications)
    build_app_image(app_dir, out, key, version=version)
    return out.read_bytes()


def build_os(key: PrivateKey, version: str, svn: int, payload: bytes) -> bytes:
    out = io.BytesIO()
    build_image(
        out,
        io.BytesIO(payload),
        image_type=ImageType.OS,
        component_id=OS_COMPONENT,
        version=version,
        security_version=svn,
        key=key,
    )
    return out.getvalue()


def app_custom(component_id: str, version: str) -> dict[str, Any]:
    return {"bastion": {"image_type": "app", "component_id": component_id, "version": version, "security_version": 1}}


def os_custom(version: str, svn: int) -> dict[str, Any]:
    return {"bastion": {"image_type": "os", "component_id": OS_COMPONENT, "version": version, "security_version": svn}}
