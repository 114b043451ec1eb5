"""Fuzz harness: the operator token parser and the CLI's ``--expires`` parser.

``parse_token`` may only raise :class:`~bastion.service.errors.Unauthenticated`;
``parse_expiry`` may only raise :class:`~bastion.cli.output.CliError`. Anything
else is a finding.
"""

from __future__ import annotations

import contextlib
import datetime as dt

from bastion.cli.output import CliError
from bastion.cli.token_cmds import parse_expiry
from bastion.service.auth.tokens import new_token, parse_token
from bastion.service.errors import Unauthenticated

_NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

SEEDS: list[bytes] = [
    new_token().token.encode(),
    b"bst_" + b"0" * 32 + b"_" + b"A" * 43,
    b"bst_nope",
    b"30d",
    b"2027-01-31T12:00Z",
]


def test_one_input(data: bytes) -> None:
    """Feed one input to both parsers."""
    text = data.decode("utf-8", "replace")
    with contextlib.suppress(Unauthenticated):
        parse_token(text)
    with contextlib.suppress(CliError):
        parse_expiry(text, _NOW)
