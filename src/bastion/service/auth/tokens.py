"""The operator token format: ``bst_<token id>_<secret>``.

The token id (32 hex characters) is public and names the database row; the
secret (32 random bytes, base64url without padding) is never stored: the row
keeps its SHA-256 and presented secrets are compared in constant time.

Example:
    >>> token = new_token()
    >>> token_id, digest = parse_token(token.token)
    >>> token_id == token.token_id and digest == token.secret_hash
    True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Literal

from bastion.service.errors import Unauthenticated

__all__ = [
    "ROLES",
    "ROLE_RANK",
    "NewToken",
    "Role",
    "check_secret",
    "new_token",
    "parse_token",
    "role_allows",
]

TOKEN_PREFIX = "bst_"  # noqa: S105 - a public prefix, not a secret
TOKEN_ID_BYTES = 16
SECRET_BYTES = 32
#: Bound on a presented token, checked before any parsing.
MAX_TOKEN_CHARS = 128

Role = Literal["reader", "contributor", "admin"]
ROLES: tuple[Role, ...] = ("reader", "contributor", "admin")
ROLE_RANK: dict[str, int] = {role: rank for rank, role in enumerate(ROLES)}

_TOKEN_ID_RE = re.compile(r"[0-9a-f]{32}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class NewToken:
    """A freshly minted token; ``token`` is shown once and never stored."""

    token_id: str
    token: str = field(repr=False)
    secret_hash: bytes = field(repr=False)


def _hash(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def new_token() -> NewToken:
    """Mint a token from the OS CSPRNG."""
    token_id = secrets.token_hex(TOKEN_ID_BYTES)
    secret = secrets.token_bytes(SECRET_BYTES)
    encoded = base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")
    return NewToken(token_id=token_id, token=f"{TOKEN_PREFIX}{token_id}_{encoded}", secret_hash=_hash(secret))


def parse_token(raw: str) -> tuple[str, bytes]:
    """Split a presented token into its id and the SHA-256 of its secret.

    Raises:
        Unauthenticated: the token is not in the ``bst_<id>_<secret>`` format.
    """
    if len(raw) > MAX_TOKEN_CHARS or not raw.startswith(TOKEN_PREFIX):
        raise Unauthenticated("the token is not a Bastion API token")
    body = raw[len(TOKEN_PREFIX) :]
    token_id, sep, encoded = (
        body[: 2 * TOKEN_ID_BYTES],
        body[2 * TOKEN_ID_BYTES : 2 * TOKEN_ID_BYTES + 1],
        body[2 * TOKEN_ID_BYTES + 1 :],
    )
    if sep != "_" or not _TOKEN_ID_RE.fullmatch(token_id) or not _SECRET_RE.fullmatch(encoded):
        raise Unauthenticated("the token is not a Bastion API token")
    try:
        secret = base64.urlsafe_b64decode(encoded + "=")
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated("the token is not a Bastion API token") from exc
    if len(secret) != SECRET_BYTES:
        raise Unauthenticated("the token is not a Bastion API token")
    return token_id, _hash(secret)


def check_secret(stored_hash: bytes, presented_hash: bytes) -> None:
    """Compare secret hashes in constant time.

    Raises:
        Unauthenticated: they differ.
    """
    if not hmac.compare_digest(stored_hash, presented_hash):
        raise Unauthenticated("the token is not valid")


def role_allows(have: str, need: str) -> bool:
    """Whether role ``have`` is at least role ``need`` (admin > contributor > reader)."""
    return ROLE_RANK.get(have, -1) >= ROLE_RANK[need]
