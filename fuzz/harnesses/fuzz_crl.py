"""atheris harness: CRL input (``bastion.crypto.crl``): what ``bastion tenant download-crl`` parses.

Feeds the bytes to :func:`load_crl` (one CRL, PEM or DER) and
:func:`load_crl_bundle` (a PEM bundle), and verifies what loads against a fixed
CA. Their documented errors are :class:`bastion.crypto.errors.CryptoError`
subclasses (``MalformedInput``, ``InvalidSignature``, ``CertificateError``);
anything else is a finding. Seeds: ``fuzz/corpus/crl/`` (a signed CRL with
entries, DER and a two-CRL PEM bundle).
"""

from __future__ import annotations

import contextlib
import datetime as dt

from bastion.crypto.certs import make_ca
from bastion.crypto.crl import load_crl, load_crl_bundle, verify_crl
from bastion.crypto.errors import CryptoError
from bastion.crypto.keys import generate_private_key

_NOW = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
_CA = make_ca("Tenant CA fuzz", generate_private_key(), now=_NOW, organization="t-fuzz")


def test_one_input(data: bytes) -> None:
    """Parse ``data`` as a CRL and as a CRL bundle; verify what parses."""
    for loader in (load_crl, load_crl_bundle):
        try:
            loaded = loader(data)
        except CryptoError:
            continue
        for crl in loaded if isinstance(loaded, list) else [loaded]:
            with contextlib.suppress(CryptoError):
                verify_crl(crl, _CA, now=_NOW)
            _ = [entry.serial_number for entry in crl]
