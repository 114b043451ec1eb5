"""A simulated chip: real DICE identity and real evidence, no boot chain.

A :class:`SimChip` holds what an emulated chip's boot ROM and bootloader would
derive (:mod:`bastion.boot.rom`, :mod:`bastion.boot.bootloader`) for one OS
image, computed directly with :mod:`bastion.crypto`:

- the Unique Device Secret, from the simulation seed and the chip's index
  (so ``--seed`` gives the same device IDs on every run);
- the DeviceID key derived from the UDS, endorsed by the vendor CA;
- ``CDI_os = KDF(KDF(UDS, bootloader), os image)`` and the Alias key from it,
  with an Alias certificate whose DiceTcbInfo carries the measurements, the OS
  version and its security version, exactly as the bootloader writes it.

What is faked is the *running* of the boot chain (no flash, no verification of
the slot, no monitor process): the chip signs evidence in-process, as the
monitor's ``sign_attestation`` does (:meth:`SimChip.sign_attestation`).

Example:
    >>> chip = SimChip.manufacture(vendor, os_image, seed=7, index=0, now=now)  # doctest: +SKIP
    >>> client = AttestationClient(http, chip, chip.tls_key, device_id=chip.device_id)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from bastion.boot.bootloader import ALIAS_LAYER, TCB_MODEL, TCB_VENDOR
from bastion.boot.vendor import Vendor
from bastion.crypto import certs, dice, eat, keys
from bastion.images.errors import ImageError
from bastion.images.package import ImageType, inspect_image
from bastion.monitor.server import SWNAME
from bastion.sim.errors import SimSetupError

__all__ = ["OsImageFacts", "SimChip"]

#: Bound on the OS image file the simulator reads to measure it.
MAX_OS_IMAGE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class OsImageFacts:
    """What a chip's boot chain learns from the OS image in its active slot."""

    measurement: bytes
    version: str
    security_version: int

    @classmethod
    def read(cls, path: Path) -> OsImageFacts:
        """Measure an OS image package (SHA-256 of the whole file, as the bootloader does) and read its header.

        Raises:
            SimSetupError: the file is missing, too large, or not an OS image package.
        """
        try:
            if path.stat().st_size > MAX_OS_IMAGE_BYTES:
                raise SimSetupError(f"{path} is larger than {MAX_OS_IMAGE_BYTES} bytes")
            data = path.read_bytes()
            header = inspect_image(io.BytesIO(data))
        except OSError as exc:
            raise SimSetupError(f"cannot read the OS image {path}: {exc.strerror or exc}") from exc
        except ImageError as exc:
            raise SimSetupError(f"{path} is not an image package: {exc}") from exc
        if header.image_type is not ImageType.OS:
            raise SimSetupError(f"{path} is a {header.image_type.value} image, not an OS image")
        return cls(hashlib.sha256(data).digest(), header.version, header.security_version)


def _secret(seed: int, index: int, label: bytes) -> bytes:
    return hashlib.sha256(b"bastion-sim/%s/%d/%d" % (label, seed, index)).digest()[: dice.CDI_SIZE]


@dataclass(frozen=True)
class SimChip:
    """One simulated chip after a good boot of one OS image (see the module docstring).

    Attributes:
        device_id: hex SHA-256 of the DeviceID public key.
        alias_key: the Alias private key (on a real device only the monitor holds it).
        chain: ``x5chain`` of the evidence: [Alias cert DER, DeviceID cert DER].
        measurements: the boot measurements, boot order.
        os: the OS image the chip booted.
        tls_key: the key the device asks the service to certify.
        ueid: the EAT ``ueid`` claim.
    """

    device_id: str
    alias_key: keys.PrivateKey
    chain: tuple[bytes, bytes]
    measurements: tuple[eat.Measurement, ...]
    os: OsImageFacts
    tls_key: keys.PrivateKey
    ueid: bytes

    @classmethod
    def manufacture(cls, vendor: Vendor, os_image: OsImageFacts, *, seed: int, index: int, now: dt.datetime) -> SimChip:
        """Make chip ``index`` of the simulation ``seed``, endorsed by ``vendor``, booted on ``os_image``."""
        uds = _secret(seed, index, b"uds")
        device_key = dice.derive_key_pair(uds)
        device_id_cert = certs.issue_device_id_cert(vendor.ca_key, vendor.ca_cert, device_key.public_key(), now=now)
        bootloader = hashlib.sha256(vendor.bootloader_image).digest()
        alias_key = dice.derive_key_pair(dice.derive_cdi(dice.derive_cdi(uds, bootloader), os_image.measurement))
        tcb = certs.TcbInfo(
            vendor=TCB_VENDOR,
            model=TCB_MODEL,
            version=os_image.version,
            svn=os_image.security_version,
            layer=ALIAS_LAYER,
            fwids=(certs.Fwid(certs.OID_SHA256, bootloader), certs.Fwid(certs.OID_SHA256, os_image.measurement)),
        )
        alias_cert = certs.issue_alias_cert(device_key, device_id_cert, alias_key.public_key(), tcb, now=now)
        return cls(
            device_id=keys.device_id_from_public_key(device_key.public_key()),
            alias_key=alias_key,
            chain=(_der(alias_cert), _der(device_id_cert)),
            measurements=(eat.Measurement("bootloader", bootloader), eat.Measurement("os", os_image.measurement)),
            os=os_image,
            tls_key=dice.derive_key_pair(_secret(seed, index, b"tls")),
            ueid=keys.ueid_from_public_key(device_key.public_key()),
        )

    def sign_attestation(
        self,
        *,
        nonce: bytes,
        key_to_certify: bytes,
        installed_apps: Sequence[tuple[str, str]] = (),
        iat: int,
        capability: bytes | None = None,
    ) -> bytes:
        """Sign an EAT with the Alias key, with the claims the monitor would send (:mod:`bastion.monitor.server`)."""
        claims = eat.EatClaims(
            nonce=nonce,
            ueid=self.ueid,
            secboot=True,
            dbgstat=eat.DebugStatus.DISABLED_PERMANENTLY,
            measurements=self.measurements,
            swname=SWNAME,
            swversion=self.os.version,
            boot_slot="A",
            rollback_counters={"os": self.os.security_version},
            key_to_certify=key_to_certify,
            iat=iat,
            installed_apps=tuple(eat.InstalledApp(c, v) for c, v in installed_apps),
            capability=capability,
        )
        return eat.sign_eat(claims, self.alias_key, x5chain=list(self.chain))


def _der(cert: x509.Certificate) -> bytes:
    return certs.certificate_der(cert)
