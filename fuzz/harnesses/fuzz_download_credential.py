"""Fuzz harness: the download credential parser of the TUF static server (docs/adr/0013-update-eligibility.md).

The input is an ``Authorization`` header value; the parser and verifier may only
raise :class:`bastion.service.eligibility.CredentialError`.
"""

from __future__ import annotations

from bastion.service.eligibility import CredentialError, DownloadKey, mint_credential
from bastion.service.eligibility.credential import credential_from_header, verify_credential

_KEY = DownloadKey.from_master_key(bytes(32))
_GROUP = "3f2c1e0a-0000-4000-8000-000000000001"

SEEDS: list[bytes] = [
    b"Bastion-Download " + mint_credential(_KEY, "ab" * 32, _GROUP, "t1", expires=2**31).encode(),
    b"Bastion-Download v1.....",
    b"bearer x",
    b"",
]


def test_one_input(data: bytes) -> None:
    """Parse and verify one header value."""
    try:
        token = credential_from_header(data)
        verify_credential(_KEY, token, group_id=_GROUP, now=0)
    except CredentialError:
        pass
