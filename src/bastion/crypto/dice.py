"""TCG DICE derivations: CDIs and deterministic P-256 key pairs.

The derivations follow the open-dice profile, with P-256 in place of Ed25519:

* ``CDI_next = HKDF-SHA256(ikm=CDI, salt=measurement, info="CDI_Attest", L=32)``
  (open-dice ``DiceMainFlow``: the current CDI is the key, the hash of the next
  stage's inputs the salt). The first CDI is derived from the UDS.
* A key pair is derived in two steps, as open-dice ``DiceDeriveCdiPrivateKeySeed``
  and ``DiceKeypairFromSeed`` do:

  1. ``seed = HKDF-SHA256(ikm=CDI, salt=ASYM_SALT, info="Key Pair", L=32)``;
  2. for ``counter = 0, 1, ...``:
     ``candidate = HKDF-Expand-SHA256(prk=seed, info="Bastion P-256 key" || u32be(counter), L=32)``;
     the first candidate ``d`` with ``1 <= d < n`` (the P-256 group order) is
     the private scalar. This is rejection sampling, so the scalar is uniform;
     a rejection has probability about 2^-32.

The DeviceID key pair is ``derive_key_pair(uds)``: stable for the chip's life.
The Alias key pair is ``derive_key_pair(CDI_OS)``: it changes when the OS does.

Example:
    >>> uds = bytes(32)
    >>> cdi_bl = derive_cdi(uds, bytes(32))
    >>> derive_key_pair(cdi_bl).private_numbers() == derive_key_pair(cdi_bl).private_numbers()
    True
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from bastion.crypto.errors import MalformedInput

__all__ = ["ASYM_SALT", "CDI_SIZE", "derive_cdi", "derive_key_pair"]

#: Size of a CDI and of the UDS, in bytes (open-dice DICE_CDI_SIZE).
CDI_SIZE = 32
#: open-dice's fixed salt for asymmetric key derivation (``kAsymSalt`` in
#: google/open-dice ``src/dice.c``), 64 bytes; pinned by a unit test.
ASYM_SALT = bytes.fromhex(
    "63b6a04d2c077fc10f639f21da793844356cc2b0b441b3a77124035c03f8e1be"
    "6035d31f282821a7450a02222ab1b3cff1679b05ab1ca5d1affb789ccd2b0b3b"
)
#: Order of the P-256 group (SEC 2, section 2.4.2).
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
#: A bound on rejection sampling; reaching it has probability about 2^-32000.
_MAX_KEYGEN_ROUNDS = 1000


def derive_cdi(cdi: bytes, measurement: bytes) -> bytes:
    """Derive the next stage's CDI from the current CDI (or UDS) and a measurement.

    Args:
        cdi: the current stage's 32-byte CDI, or the UDS for the first stage.
        measurement: the SHA-256 digest of what the current stage loads next.

    Raises:
        MalformedInput: ``cdi`` is not 32 bytes or ``measurement`` is empty.
    """
    if len(cdi) != CDI_SIZE:
        raise MalformedInput(f"CDI must be {CDI_SIZE} bytes")
    if not measurement:
        raise MalformedInput("measurement must not be empty")
    return HKDF(algorithm=hashes.SHA256(), length=CDI_SIZE, salt=measurement, info=b"CDI_Attest").derive(cdi)


def derive_key_pair(cdi: bytes) -> ec.EllipticCurvePrivateKey:
    """Derive a deterministic P-256 private key from a CDI (or the UDS).

    Raises:
        MalformedInput: ``cdi`` is not 32 bytes.
    """
    if len(cdi) != CDI_SIZE:
        raise MalformedInput(f"CDI must be {CDI_SIZE} bytes")
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=ASYM_SALT, info=b"Key Pair").derive(cdi)
    for counter in range(_MAX_KEYGEN_ROUNDS):
        info = b"Bastion P-256 key" + counter.to_bytes(4, "big")
        candidate = int.from_bytes(HKDFExpand(algorithm=hashes.SHA256(), length=32, info=info).derive(seed), "big")
        if 1 <= candidate < _P256_ORDER:
            return ec.derive_private_key(candidate, ec.SECP256R1())
    raise MalformedInput("key derivation did not converge")  # pragma: no cover - probability ~0
