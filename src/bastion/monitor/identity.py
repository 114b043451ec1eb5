"""What the boot stage hands to the monitor, and how it travels over the hand-off pipe.

The boot process writes one deterministic CBOR map to a pipe inherited by the
monitor process (never argv or the environment), then closes it. The map holds
the Alias private key (PKCS#8 PEM), the DER chain ``[Alias, DeviceID]`` and the
claims the boot stage vouches for. The monitor checks that the pieces agree:
the Alias key matches the Alias certificate and the device ID is the hash of
the DeviceID certificate's key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto import keys
from bastion.crypto.certs import load_certificate_der
from bastion.crypto.cose import cbor_loads_exact
from bastion.crypto.eat import DebugStatus, Measurement
from bastion.crypto.errors import CryptoError, MalformedInput
from bastion.monitor.errors import HandoffError

__all__ = ["MAX_HANDOFF_BYTES", "MonitorIdentity", "decode_handoff", "encode_handoff"]

#: Bound on the hand-off message (a key, two certificates and a few claims).
MAX_HANDOFF_BYTES = 64 * 1024
_HANDOFF_VERSION = 1


@dataclass(frozen=True)
class MonitorIdentity:
    """The secrets and boot claims the monitor holds for the life of the boot.

    Attributes:
        alias_key: the OS-level DICE Alias private key.
        cert_chain: DER certificates ``(Alias, DeviceID)``.
        device_id: lowercase hex SHA-256 of the DeviceID public key.
        measurements: the boot-stage digests, in boot order.
        boot_slot: "A" or "B".
        os_version: the version string of the booted OS image.
        os_security_version: the security version of the booted OS image.
        rollback_counters: the anti-rollback fuse counters, by name.
        secboot: True if the boot chain verified every stage.
        dbgstat: the chip's debug status.
        dev_dir: the device directory (flash, fuses, staging), or None: then
            the A/B operations are refused.
        trial: the OS runs from a trial slot that must confirm.
        insecure_no_sandbox: the device runs its OS and apps without sandboxes
            (the device option from the config partition); claimed in every EAT.
    """

    alias_key: keys.PrivateKey
    cert_chain: tuple[bytes, bytes]
    device_id: str
    measurements: tuple[Measurement, ...]
    boot_slot: str
    os_version: str
    os_security_version: int
    rollback_counters: dict[str, int]
    secboot: bool
    dbgstat: DebugStatus
    dev_dir: str | None = None
    trial: bool = False
    insecure_no_sandbox: bool = False

    @property
    def ueid(self) -> bytes:
        """The RAND-type UEID of the DeviceID key (RFC 9711 4.2.1)."""
        key = load_certificate_der(self.cert_chain[1]).public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise HandoffError("the DeviceID certificate does not hold an EC key")
        return keys.ueid_from_public_key(key)

    def check_consistent(self) -> None:
        """Check that the key, chain and device ID belong together.

        Raises:
            HandoffError: the certificates do not parse, the Alias key is not
                the Alias certificate's key, or the device ID does not match.
        """
        try:
            alias_cert = load_certificate_der(self.cert_chain[0])
            device_id_cert = load_certificate_der(self.cert_chain[1])
            cert_key = alias_cert.public_key()
            device_key = device_id_cert.public_key()
        except CryptoError as exc:
            raise HandoffError("hand-off certificate chain does not parse") from exc
        if not isinstance(cert_key, ec.EllipticCurvePublicKey) or not isinstance(device_key, ec.EllipticCurvePublicKey):
            raise HandoffError("hand-off certificates do not hold EC keys")
        if keys.public_key_bytes(cert_key) != keys.public_key_bytes(self.alias_key.public_key()):
            raise HandoffError("the Alias key does not match the Alias certificate")
        if keys.device_id_from_public_key(device_key) != self.device_id:
            raise HandoffError("the device ID does not match the DeviceID certificate")


def encode_handoff(identity: MonitorIdentity) -> bytearray:
    """Serialize an identity for the hand-off pipe.

    Returns a ``bytearray`` so the caller can overwrite it once written.
    """
    message = {
        "v": _HANDOFF_VERSION,
        "alias_key": keys.private_key_pem(identity.alias_key),
        "chain": list(identity.cert_chain),
        "device_id": identity.device_id,
        "measurements": [[m.component, m.digest] for m in identity.measurements],
        "boot_slot": identity.boot_slot,
        "os_version": identity.os_version,
        "os_security_version": identity.os_security_version,
        "counters": dict(identity.rollback_counters),
        "secboot": identity.secboot,
        "dbgstat": int(identity.dbgstat),
        "dev_dir": identity.dev_dir,
        "trial": identity.trial,
        "insecure_no_sandbox": identity.insecure_no_sandbox,
    }
    return bytearray(cbor2.dumps(message, canonical=True))


def _field(message: dict[Any, Any], name: str, kind: type) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise HandoffError(f"hand-off field {name!r} is missing or not a {kind.__name__}")
    return value


def decode_handoff(data: bytes | bytearray) -> MonitorIdentity:
    """Parse and check a hand-off message.

    Raises:
        HandoffError: oversized, not CBOR, a field missing or of the wrong type,
            or the pieces are inconsistent (see :meth:`MonitorIdentity.check_consistent`).
    """
    if len(data) > MAX_HANDOFF_BYTES:
        raise HandoffError(f"hand-off is larger than {MAX_HANDOFF_BYTES} bytes")
    try:
        message = cbor_loads_exact(bytes(data))
    except MalformedInput as exc:
        raise HandoffError("hand-off is not one CBOR item") from exc
    if not isinstance(message, dict):
        raise HandoffError("hand-off is not a CBOR map")
    if _field(message, "v", int) != _HANDOFF_VERSION:
        raise HandoffError("unsupported hand-off version")
    chain = _field(message, "chain", list)
    if len(chain) != 2 or not all(isinstance(c, bytes) for c in chain):
        raise HandoffError("hand-off chain must be two DER certificates")
    raw_measurements = _field(message, "measurements", list)
    measurements = []
    for item in raw_measurements:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], bytes)):
            raise HandoffError("hand-off measurement must be [component, digest]")
        measurements.append(Measurement(component=item[0], digest=item[1]))
    counters = _field(message, "counters", dict)
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in counters.items()):
        raise HandoffError("hand-off counters must map names to integers")
    try:
        alias_key = keys.load_private_key_pem(_field(message, "alias_key", bytes))
        dbgstat = DebugStatus(_field(message, "dbgstat", int))
    except (CryptoError, ValueError) as exc:
        raise HandoffError("hand-off key or debug status is invalid") from exc
    identity = MonitorIdentity(
        alias_key=alias_key,
        cert_chain=(chain[0], chain[1]),
        device_id=_field(message, "device_id", str),
        measurements=tuple(measurements),
        boot_slot=_field(message, "boot_slot", str),
        os_version=_field(message, "os_version", str),
        os_security_version=_field(message, "os_security_version", int),
        rollback_counters=counters,
        secboot=_field(message, "secboot", bool),
        dbgstat=dbgstat,
        dev_dir=None if message.get("dev_dir") is None else _field(message, "dev_dir", str),
        trial=_field(message, "trial", bool),
        insecure_no_sandbox="insecure_no_sandbox" in message and _field(message, "insecure_no_sandbox", bool),
    )
    identity.check_consistent()
    return identity
