"""In-process device simulator for attestation tests (and the benchmark).

Builds the whole DICE picture with :mod:`bastion.crypto` only: a silicon vendor
CA, a chip whose DeviceID key comes from a random UDS and whose certificate the
vendor CA signs, and an Alias key derived from the measured boot chain, whose
certificate (signed by the DeviceID key) carries the measurements in DiceTcbInfo.
``SimDevice.eat(nonce)`` then signs evidence as the device's monitor would.

Each attack the tests reproduce has a named builder here, so the regression
asset is explicit (STYLE.md 15).

Example:
    >>> vendor = SimVendor.create(now=NOW)  # doctest: +SKIP
    >>> device = SimDevice.manufacture(vendor, now=NOW)  # doctest: +SKIP
    >>> token = device.eat(nonce)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from bastion.crypto import certs, dice, eat, keys

BOOTLOADER_DIGEST = hashlib.sha256(b"simulated bootloader 1").digest()
OS_DIGEST = hashlib.sha256(b"simulated os image 1.0.0").digest()
OS_VERSION = "1.0.0"


def der(cert: x509.Certificate) -> bytes:
    """Return a certificate's DER encoding."""
    return cert.public_bytes(Encoding.DER)


@dataclass(frozen=True)
class SimVendor:
    """A silicon vendor CA."""

    key: keys.PrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls, *, now: dt.datetime, name: str = "Simulated Silicon Vendor CA") -> SimVendor:
        """Create a vendor CA valid from ``now``."""
        key = keys.generate_private_key()
        return cls(key=key, cert=certs.make_ca(name, key, now=now - dt.timedelta(minutes=5)))

    @property
    def pem(self) -> str:
        """The vendor CA certificate as PEM text."""
        return self.cert.public_bytes(Encoding.PEM).decode("ascii")


def _tcb(digests: tuple[bytes, ...]) -> certs.TcbInfo:
    return certs.TcbInfo(
        vendor="Bastion",
        model="emulated",
        version=OS_VERSION,
        svn=1,
        layer=1,
        fwids=tuple(certs.Fwid(certs.OID_SHA256, d) for d in digests),
    )


@dataclass
class SimDevice:
    """A simulated chip after a successful boot.

    Attributes:
        device_key: the DeviceID private key (normally only the boot ROM sees it).
        device_id_cert: the DeviceID certificate from the vendor CA.
        alias_key: the Alias private key (normally only the monitor holds it).
        alias_cert: the Alias certificate, signed by the DeviceID key.
        measurements: the boot-stage measurements, boot order.
        tls_key: the key the device asks the service to certify.
    """

    device_key: keys.PrivateKey
    device_id_cert: x509.Certificate
    alias_key: keys.PrivateKey
    alias_cert: x509.Certificate
    measurements: tuple[eat.Measurement, ...]
    tls_key: keys.PrivateKey = field(default_factory=keys.generate_private_key)
    os_version: str = OS_VERSION

    @classmethod
    def manufacture(
        cls,
        vendor: SimVendor,
        *,
        now: dt.datetime,
        bootloader_digest: bytes = BOOTLOADER_DIGEST,
        os_digest: bytes = OS_DIGEST,
    ) -> SimDevice:
        """Make a chip endorsed by ``vendor`` and boot it with the given firmware."""
        uds = os.urandom(dice.CDI_SIZE)
        device_key = dice.derive_key_pair(uds)
        not_before = now - dt.timedelta(minutes=5)
        device_id_cert = certs.issue_device_id_cert(vendor.key, vendor.cert, device_key.public_key(), now=not_before)
        cdi_os = dice.derive_cdi(dice.derive_cdi(uds, bootloader_digest), os_digest)
        alias_key = dice.derive_key_pair(cdi_os)
        digests = (bootloader_digest, os_digest)
        alias_cert = certs.issue_alias_cert(
            device_key, device_id_cert, alias_key.public_key(), _tcb(digests), now=not_before
        )
        return cls(
            device_key=device_key,
            device_id_cert=device_id_cert,
            alias_key=alias_key,
            alias_cert=alias_cert,
            measurements=(eat.Measurement("bootloader", bootloader_digest), eat.Measurement("os", os_digest)),
        )

    @property
    def device_id(self) -> str:
        """The device ID: hex SHA-256 of the DeviceID public key."""
        return keys.device_id_from_public_key(self.device_key.public_key())

    @property
    def os_measurement(self) -> str:
        """Hex digest of the ``os`` measurement."""
        return next(m.digest for m in self.measurements if m.component == "os").hex()

    def claims(self, nonce: bytes, *, now: dt.datetime | None = None) -> eat.EatClaims:
        """The claims an honest device would send for ``nonce``."""
        return eat.EatClaims(
            nonce=nonce,
            ueid=keys.ueid_from_public_key(self.device_key.public_key()),
            secboot=True,
            dbgstat=eat.DebugStatus.DISABLED_PERMANENTLY,
            measurements=self.measurements,
            swname="bastion-os",
            swversion=self.os_version,
            boot_slot="A",
            rollback_counters={"os": 1},
            key_to_certify=keys.public_key_bytes(self.tls_key.public_key()),
            iat=int((now or dt.datetime.now(dt.UTC)).timestamp()),
        )

    def chain(self) -> list[bytes]:
        """The ``x5chain``: [Alias cert, DeviceID cert], DER."""
        return [der(self.alias_cert), der(self.device_id_cert)]

    def eat(self, nonce: bytes, *, claims: eat.EatClaims | None = None) -> bytes:
        """Sign evidence for ``nonce`` with the Alias key, as the monitor does."""
        return eat.sign_eat(claims or self.claims(nonce), self.alias_key, x5chain=self.chain())

    # --- attacks: each returns evidence that must be refused -------------------

    def eat_signed_by_other_key(self, nonce: bytes) -> bytes:
        """Attack: the EAT is signed by a key that is not the Alias certificate's."""
        return eat.sign_eat(self.claims(nonce), keys.generate_private_key(), x5chain=self.chain())

    def eat_with_forged_alias(self, nonce: bytes, *, now: dt.datetime) -> bytes:
        """Attack: an Alias certificate not signed by the DeviceID key (same issuer name)."""
        rogue_key = keys.generate_private_key()
        alias_key = keys.generate_private_key()
        forged = certs.issue_alias_cert(
            rogue_key,
            self.device_id_cert,
            alias_key.public_key(),
            _tcb(tuple(m.digest for m in self.measurements)),
            now=now - dt.timedelta(minutes=5),
        )
        return eat.sign_eat(self.claims(nonce), alias_key, x5chain=[der(forged), der(self.device_id_cert)])

    def eat_with_lying_measurements(self, nonce: bytes, os_digest: bytes) -> bytes:
        """Attack: the claims name an OS digest other than the one in the Alias cert."""
        claims = replace(
            self.claims(nonce),
            measurements=(self.measurements[0], eat.Measurement("os", os_digest)),
        )
        return eat.sign_eat(claims, self.alias_key, x5chain=self.chain())

    def eat_with_ueid(self, nonce: bytes, ueid: bytes) -> bytes:
        """Attack: the ``ueid`` claim names another chip."""
        return eat.sign_eat(replace(self.claims(nonce), ueid=ueid), self.alias_key, x5chain=self.chain())
