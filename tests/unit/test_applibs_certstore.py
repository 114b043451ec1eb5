"""CertStore through the choke point: validated, bounded, per app, exposed to the network broker."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from _applibs_rig import CID, OTHER, AppRig
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.applibs import certstore
from bastion.applibs.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError, QuotaExceededError
from bastion.os.appservices.certstore import CertStoreLimits, CertStoreService

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def _cert(name: str, *, ca: bool, key: ec.EllipticCurvePrivateKey | None = None) -> tuple[str, str]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


ROOT, _ = _cert("Broker CA", ca=True)
LEAF, LEAF_KEY = _cert("device-client", ca=False)


def test_install_list_delete_and_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CertStoreService(tmp_path / "certstore")
    with AppRig(tmp_path, {"CertStore": True}, services=[store]).install(monkeypatch) as app:
        full = certstore.get_available_space()
        certstore.install_root_ca_certificate("broker-ca", ROOT)
        certstore.install_client_certificate("client", LEAF, LEAF_KEY)
        listed = certstore.list_certificates()
        assert [(c.identifier, c.kind, c.subject) for c in listed] == [
            ("broker-ca", "root_ca", "CN=Broker CA"),
            ("client", "client", "CN=device-client"),
        ]
        assert listed[0].not_after == NOW + dt.timedelta(days=30)
        assert certstore.get_available_space() == full - len(ROOT) - len(LEAF) - len(LEAF_KEY)
        assert store.roots(CID) == [ROOT.encode()]
        assert store.client_certificate(CID, "client") == (LEAF.encode(), LEAF_KEY.encode())
        assert store.roots(OTHER) == []  # per app
        certstore.install_root_ca_certificate("broker-ca", ROOT)  # replacing is not a second entry
        assert len(certstore.list_certificates()) == 2
        certstore.delete_certificate("broker-ca")
        with pytest.raises(NotFoundError):
            certstore.delete_certificate("broker-ca")
        assert store.roots(CID) == []
        assert app.records == []
    entry = tmp_path / "certstore" / CID / "client.json"
    assert entry.stat().st_mode & 0o777 == 0o600


def test_without_the_capability_every_op_is_denied(tmp_path: Path) -> None:
    with AppRig(tmp_path, {}, services=[CertStoreService(tmp_path / "cs")]) as app:
        ops = ("install_root_ca", "install_client", "list", "delete", "available_space")
        for op in ops:
            with pytest.raises(PermissionDeniedError) as info:
                app.call(f"certstore.{op}", {"identifier": "x", "cert_pem": ROOT})
            assert info.value.capability == "CertStore"
        assert len(app.denied()) == len(ops)
    assert not (tmp_path / "cs").exists()


@pytest.mark.parametrize(
    ("op", "args", "match"),
    [
        ("install_root_ca", {"identifier": "leaf", "cert_pem": LEAF}, "CA:TRUE"),
        ("install_root_ca", {"identifier": "two", "cert_pem": ROOT + ROOT}, "exactly one"),
        ("install_root_ca", {"identifier": "junk", "cert_pem": "-----BEGIN CERTIFICATE-----\nAA==\n"}, "PEM"),
        ("install_root_ca", {"identifier": ".hidden", "cert_pem": ROOT}, "identifier"),
        ("install_root_ca", {"identifier": "a/b", "cert_pem": ROOT}, "identifier"),
        ("install_root_ca", {"identifier": "x" * 17, "cert_pem": ROOT}, "16"),
        ("install_client", {"identifier": "ca", "cert_pem": ROOT, "key_pem": LEAF_KEY}, "must not be a CA"),
        ("install_client", {"identifier": "c", "cert_pem": LEAF, "key_pem": _cert("o", ca=False)[1]}, "match"),
        ("install_client", {"identifier": "c", "cert_pem": LEAF, "key_pem": "not a key"}, "unencrypted PEM key"),
    ],
)
def test_bad_certificates_are_refused(tmp_path: Path, op: str, args: dict[str, str], match: str) -> None:
    with AppRig(tmp_path, {"CertStore": True}, services=[CertStoreService(tmp_path / "cs")]) as app:
        with pytest.raises(InvalidArgumentError, match=match) as info:
            app.call(f"certstore.{op}", args)
        assert "PRIVATE KEY" not in str(info.value)
        assert app.call("certstore.list") == {"certificates": []}


def test_count_and_space_are_bounded(tmp_path: Path) -> None:
    limits = CertStoreLimits(max_certs=2, max_total_bytes=len(ROOT) * 2 + 10)
    store = CertStoreService(tmp_path / "cs", limits)
    with AppRig(tmp_path, {"CertStore": True}, services=[store]) as app:
        app.call("certstore.install_root_ca", {"identifier": "a", "cert_pem": ROOT})
        with pytest.raises(QuotaExceededError, match="bytes"):
            app.call("certstore.install_client", {"identifier": "c", "cert_pem": LEAF, "key_pem": LEAF_KEY})
        app.call("certstore.install_root_ca", {"identifier": "b", "cert_pem": ROOT})
        with pytest.raises(QuotaExceededError, match="2 certificates"):
            app.call("certstore.install_root_ca", {"identifier": "c", "cert_pem": ROOT})
        with pytest.raises(InvalidArgumentError, match="8192"):
            app.call("certstore.install_root_ca", {"identifier": "big", "cert_pem": "A" * 8193})


def test_a_tampered_entry_is_skipped_not_trusted(tmp_path: Path) -> None:
    store = CertStoreService(tmp_path / "cs")
    store.install_root_ca(CID, "good", ROOT.encode())
    (tmp_path / "cs" / CID / "bad.json").write_text("{not json")
    (tmp_path / "cs" / CID / "link.json").symlink_to(tmp_path / "cs" / CID / "good.json")
    assert [e.identifier for e in store.entries(CID)] == ["good"]
