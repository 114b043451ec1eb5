"""A real Mosquitto with ``crlfile`` refuses revoked device certificates, across a whole CA rotation.

The broker runs on a free loopback port with ``require_certificate true``,
``cafile`` = the tenant's trust bundle (``GET /ca``) and ``crlfile`` = its CRLs
(``GET /ca/crl``); each device connects with ``mosquitto_pub`` and the 24 h
certificate its attestation got. It is stopped by PID. The service runs
in-process on a clock that starts at the real time (the broker checks validity
against the real clock), SQLite only.

1. One CA: a revoked device's unexpired certificate is refused; another device is accepted.
2. Overlap after ``POST /ca/rotate``: certificates of both CAs are accepted; a
   device revoked now is refused under both; the first revoked device still is.
3. After the overlap: the bundle holds the successor alone, so an unexpired
   certificate of the retired CA is refused; the successor's are accepted.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
from pathlib import Path

import pytest
from attest_sim import SimDevice
from attest_world import World
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from test_ca_crl import attest

from _tls_pki import LOOPBACK, new_ca, server_credentials
from bastion.cli._localstack import free_port, wait_for
from bastion.crypto.crl import load_crl
from bastion.crypto.keys import private_key_pem
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, bearer

pytestmark = [pytest.mark.slow]

MOSQUITTO = "/usr/sbin/mosquitto"


@pytest.fixture
def db_url(tmp_path: Path, _sqlite_template: Path) -> str:
    """SQLite only: the broker half of the test does not depend on the database."""
    path = tmp_path / "service.db"
    path.write_bytes(_sqlite_template.read_bytes())
    return f"sqlite:///{path}"


@pytest.fixture
def clock() -> FakeClock:
    """The real time now (Mosquitto checks certificates and CRLs against the real clock)."""
    return FakeClock(dt.datetime.now(dt.UTC).replace(microsecond=0))


@pytest.fixture
def world(session_factory: sessionmaker[Session], tenant: CreatedTenant, clock: FakeClock) -> World:
    return World.build(session_factory, tenant, clock())


class Broker:
    """Mosquitto on a free loopback port, with the tenant's bundle and CRLs; stopped by PID."""

    def __init__(self, root: Path, *, cafile: Path, crlfile: Path, cert: Path, key: Path) -> None:
        self.port = free_port()
        self.log = root / f"mosquitto-{self.port}.log"
        conf = root / f"mosquitto-{self.port}.conf"
        conf.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    "allow_anonymous true",
                    "persistence false",
                    "user root" if os.geteuid() == 0 else "",
                    f"log_dest file {self.log}",
                    "log_type all",
                    f"listener {self.port} {LOOPBACK}",
                    f"cafile {cafile}",
                    f"crlfile {crlfile}",
                    f"certfile {cert}",
                    f"keyfile {key}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    "",
                ]
            )
        )
        self.cafile, self.crlfile = cafile, crlfile
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for("Mosquitto to listen", self._listening, timeout=20)

    def _listening(self) -> bool:
        if self.process.poll() is not None:
            stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
            raise RuntimeError(f"mosquitto exited {self.process.returncode}: {stderr}")
        try:
            socket.create_connection((LOOPBACK, self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()  # by PID: Popen signals its own child
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()


class Stage:
    """Files for one broker configuration: the server credential, and each device's key and cert."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server_ca = new_ca("broker CA")
        self.server_ca_file = self.server_ca.write(root / "broker-ca.pem")
        self.cert, self.key = server_credentials(root, self.server_ca)

    def publish(self, broker: Broker, chip: SimDevice, cert_pem: object, name: str) -> subprocess.CompletedProcess[str]:
        assert isinstance(cert_pem, str)
        cert, key = self.root / f"{name}.crt", self.root / f"{name}.key"
        cert.write_text(cert_pem)
        key.write_bytes(private_key_pem(chip.tls_key))
        key.chmod(0o600)
        argv = ["mosquitto_pub", "-h", LOOPBACK, "-p", str(broker.port), "--cafile", str(self.server_ca_file)]
        argv += ["--cert", str(cert), "--key", str(key), "-t", "bastion/crl-test", "-m", name, "-q", "1"]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.fixture
def stage(tmp_path: Path) -> Stage:
    return Stage(tmp_path)


def run_broker(stage: Stage, name: str, bundle: bytes, crls: bytes) -> Broker:
    cafile, crlfile = stage.root / f"{name}-bundle.pem", stage.root / f"{name}-crl.pem"
    cafile.write_bytes(bundle)
    crlfile.write_bytes(crls)
    return Broker(stage.root, cafile=cafile, crlfile=crlfile, cert=stage.cert, key=stage.key)


#: What ``openssl verify -crl_check`` must say about each refused certificate,
#: so that a refusal at the broker is known to be for the right reason.
REVOKED = "certificate revoked"
UNTRUSTED = "unable to get local issuer certificate"


def expect(stage: Stage, broker: Broker, cases: dict[str, tuple[SimDevice, object, str | None]]) -> None:
    """Each device connects; ``None`` means accepted, else refused, for the reason openssl names."""
    for name, (chip, cert, refusal) in cases.items():
        result = stage.publish(broker, chip, cert, name)
        log = broker.log.read_text(errors="replace") if broker.log.exists() else ""
        assert (result.returncode == 0) is (refusal is None), (name, result.stdout, result.stderr, log[-2000:])
        argv = ["openssl", "verify", "-CAfile", str(broker.cafile), "-crl_check", "-CRLfile", str(broker.crlfile)]
        why = subprocess.run([*argv, str(stage.root / f"{name}.crt")], capture_output=True, text=True, check=False)
        if refusal is None:
            assert why.returncode == 0, (name, why.stdout, why.stderr)
        else:
            assert refusal in why.stdout + why.stderr, (name, why.stdout, why.stderr)


def test_mosquitto_with_crlfile_refuses_revoked_devices_across_a_rotation(
    client: TestClient, world: World, clock: FakeClock, stage: Stage
) -> None:
    token = world.tenant.admin_token

    def bundle() -> bytes:
        return client.get("/api/v1/ca", headers=bearer(token)).content

    def crls() -> bytes:
        return client.get("/api/v1/ca/crl", headers=bearer(token)).content

    revoked, good, later_revoked, newcomer = (world.device() for _ in range(4))
    revoked_cert = attest(client, revoked)["certificate"]
    good_cert = attest(client, good)["certificate"]
    later_old_cert = attest(client, later_revoked)["certificate"]
    assert client.post(f"/api/v1/devices/{revoked.device_id}/revoke", headers=bearer(token)).status_code == 200

    # 1. One CA.
    broker = run_broker(stage, "one-ca", bundle(), crls())
    try:
        expect(stage, broker, {"revoked": (revoked, revoked_cert, REVOKED), "good": (good, good_cert, None)})
    finally:
        broker.stop()

    # 2. The overlap: both CAs trusted, each with its CRL.
    rotated = client.post("/api/v1/ca/rotate", json={"overlap_hours": 48}, headers=bearer(token))
    assert rotated.status_code == 201, rotated.text
    successor_id = rotated.json()["successor"]["id"]
    newcomer_cert = attest(client, newcomer)["certificate"]
    later_new_cert = attest(client, later_revoked)["certificate"]
    assert client.post(f"/api/v1/devices/{later_revoked.device_id}/revoke", headers=bearer(token)).status_code == 200
    overlap_bundle, overlap_crls = bundle(), crls()
    assert overlap_crls.count(b"BEGIN X509 CRL") == 2
    successor_crl = client.get(
        "/api/v1/ca/crl", params={"format": "der", "ca_id": successor_id}, headers=bearer(token)
    ).content
    broker = run_broker(stage, "overlap", overlap_bundle, overlap_crls)
    try:
        expect(
            stage,
            broker,
            {
                "old-ca-good": (good, good_cert, None),
                "new-ca-good": (newcomer, newcomer_cert, None),
                "old-ca-revoked-now": (later_revoked, later_old_cert, REVOKED),
                "new-ca-revoked-now": (later_revoked, later_new_cert, REVOKED),
                "revoked-before": (revoked, revoked_cert, REVOKED),
            },
        )
    finally:
        broker.stop()

    # 3. After the overlap the bundle is the successor alone. (Its CRL is the one
    # served before the clock moved on: the broker reads CRL times on the real clock.)
    clock.advance(dt.timedelta(hours=48, seconds=1))
    retired_bundle = bundle()
    assert retired_bundle.count(b"BEGIN CERTIFICATE") == 1
    crl_pem = load_crl(successor_crl).public_bytes(Encoding.PEM)
    assert x509.load_pem_x509_certificate(retired_bundle).subject == load_crl(successor_crl).issuer
    broker = run_broker(stage, "retired", retired_bundle, crl_pem)
    try:
        expect(
            stage,
            broker,
            {
                "retired-ca-cert": (good, good_cert, UNTRUSTED),
                "successor-cert": (newcomer, newcomer_cert, None),
                "successor-revoked": (later_revoked, later_new_cert, REVOKED),
            },
        )
    finally:
        broker.stop()
