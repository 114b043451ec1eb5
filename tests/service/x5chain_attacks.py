"""Named regression assets for the x5chain inputs that once made the service answer 500 (issue 7).

Each builder returns the DER of a DeviceID certificate that ``cryptography``
loads (its outer structure is sound) but whose lazily decoded parts are bad:

* :func:`unknown_key_type` - the SubjectPublicKeyInfo algorithm is an OID no
  library knows (``UnsupportedAlgorithm`` when the key is read);
* :func:`off_curve_point` - the EC point is not on P-256 (``ValueError``);
* :func:`duplicate_extension` - one extension appears twice, which RFC 5280
  section 4.2 forbids (``DuplicateExtension`` when the extensions are read).

The signatures no longer verify; the service must refuse each before it gets
that far, with a 400 and an attestation record, never a 500.
"""

from __future__ import annotations

import datetime as dt

from attest_sim import SimDevice, SimVendor, der
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pyasn1.codec.der import encoder
from pyasn1.type import univ

from bastion.crypto import eat, keys

#: id-ecPublicKey (RFC 5480), DER.
_EC_PUBLIC_KEY_OID = encoder.encode(univ.ObjectIdentifier("1.2.840.10045.2.1"))
#: The same length, an arc no one assigned.
_UNKNOWN_KEY_OID = encoder.encode(univ.ObjectIdentifier("1.2.840.10045.2.9"))
_EXT_A = "1.3.6.1.4.1.55555.1"
_EXT_B = "1.3.6.1.4.1.55555.2"


def _replace_once(data: bytes, old: bytes, new: bytes) -> bytes:
    if data.count(old) != 1 or len(old) != len(new):
        raise AssertionError("the patch site must be unique and the patch the same length")
    return data.replace(old, new)


def unknown_key_type(chip: SimDevice) -> bytes:
    """The chip's DeviceID certificate with an unknown public key algorithm."""
    return _replace_once(der(chip.device_id_cert), _EC_PUBLIC_KEY_OID, _UNKNOWN_KEY_OID)


def off_curve_point(chip: SimDevice) -> bytes:
    """The chip's DeviceID certificate with its EC point moved off the curve."""
    point = keys.public_key_bytes(chip.device_key.public_key())
    return _replace_once(der(chip.device_id_cert), point, point[:-1] + bytes([point[-1] ^ 1]))


def duplicate_extension(chip: SimDevice, vendor: SimVendor, *, now: dt.datetime) -> bytes:
    """A DeviceID certificate for the chip's key, from the vendor, carrying one extension twice."""
    base = chip.device_id_cert
    builder = (
        x509.CertificateBuilder()
        .subject_name(base.subject)
        .issuer_name(base.issuer)
        .public_key(chip.device_key.public_key())
        .serial_number(base.serial_number)
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    for ext in base.extensions:
        builder = builder.add_extension(ext.value, critical=ext.critical)
    for oid in (_EXT_A, _EXT_B):
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), b"\x05\x00"), critical=False
        )
    cert = builder.sign(vendor.key, hashes.SHA256())
    a, b = (encoder.encode(univ.ObjectIdentifier(o)) for o in (_EXT_A, _EXT_B))
    return _replace_once(der(cert), b, a)


def eat_with_device_id_der(chip: SimDevice, nonce: bytes, device_id_der: bytes) -> bytes:
    """Evidence from the chip whose x5chain carries ``device_id_der`` in place of its DeviceID certificate."""
    return eat.sign_eat(chip.claims(nonce), chip.alias_key, x5chain=[der(chip.alias_cert), device_id_der])
