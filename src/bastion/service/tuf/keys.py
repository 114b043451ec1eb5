"""The online signing keys of a group's TUF repository, sealed at rest.

One ECDSA P-256 key per top-level role. Each private key is stored as PKCS#8
DER sealed (AES-256-GCM) under the service master key, with associated data
that binds it to its group and role, in ``keys/<role>.key`` (0600). A key file
copied to another group or role does not open. A key that does not open fails
closed (:class:`~bastion.service.tuf.errors.TufKeyError`); it is never
silently re-created, because that would orphan every device's trusted root.

These keys cannot make a device run code: images carry their publisher's
signature, which devices check against pinned keys (docs/updates.md).
"""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion.crypto.aead import MAX_SEALED_BYTES, open_sealed, seal
from bastion.crypto.errors import CryptoError
from bastion.service.config import Settings, write_private_file
from bastion.service.tuf._tuf import CryptoSigner, Root, SSlibKey
from bastion.service.tuf.errors import TufKeyError
from bastion.service.tuf.layout import ROLES, keys_dir

__all__ = ["KEY_FILE_SUFFIX", "create_signers", "load_signers", "role_key_aad"]

KEY_FILE_SUFFIX = ".key"


def role_key_aad(group_id: str, role: str) -> bytes:
    """Associated data binding a sealed key to its group and role."""
    return f"bastion/tuf-key/v1/{group_id}/{role}".encode()


def create_signers(settings: Settings, group_id: str) -> dict[str, CryptoSigner]:
    """Generate one P-256 key per role and store each sealed; return their signers.

    Raises:
        FileExistsError: a key file already exists (the caller holds the group lock,
            so this means a half-created repository: refuse rather than overwrite).
    """
    directory = keys_dir(settings, group_id)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    signers: dict[str, CryptoSigner] = {}
    for role in ROLES:
        private = ec.generate_private_key(ec.SECP256R1())
        der = private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        sealed = seal(settings.master_key, der, aad=role_key_aad(group_id, role))
        write_private_file(directory / f"{role}{KEY_FILE_SUFFIX}", sealed, exclusive=True)
        signers[role] = CryptoSigner(private, SSlibKey.from_crypto(private.public_key()))
    return signers


def load_signers(settings: Settings, group_id: str, root: Root) -> dict[str, CryptoSigner]:
    """Open the sealed keys of a group and pair each with its public key in ``root``.

    Raises:
        TufKeyError: a key file is missing, does not open under the master key,
            or does not match the key that ``root`` names for its role.
    """
    directory = keys_dir(settings, group_id)
    signers: dict[str, CryptoSigner] = {}
    for role in ROLES:
        try:
            with (directory / f"{role}{KEY_FILE_SUFFIX}").open("rb") as fh:
                sealed = fh.read(MAX_SEALED_BYTES + 1)
        except OSError as exc:
            raise TufKeyError(f"the {role} key of group {group_id} is missing") from exc
        try:
            der = open_sealed(settings.master_key, sealed, aad=role_key_aad(group_id, role))
        except CryptoError as exc:
            raise TufKeyError(
                f"the {role} key of group {group_id} does not open under this master key",
            ) from exc
        try:
            private = serialization.load_der_private_key(der, password=None)
            keyids = root.roles[role].keyids
            public = root.get_key(keyids[0])
            if not isinstance(public, SSlibKey) or not isinstance(private, ec.EllipticCurvePrivateKey):
                raise TypeError("unexpected key type")
            signers[role] = CryptoSigner(private, public)
        except (ValueError, TypeError, IndexError, KeyError) as exc:
            raise TufKeyError(f"the {role} key of group {group_id} does not match its root") from exc
    return signers
