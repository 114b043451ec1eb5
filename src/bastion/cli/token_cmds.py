"""Operator login and tokens: ``bastion login``, ``bastion token create|list|revoke``.

The token never travels in argv (where ``ps`` and shell history would keep it):
``bastion login`` prompts for it without echo, or reads one line from standard
input (``--token-stdin``, or whenever standard input is not a terminal)::

    bastion login --url http://127.0.0.1:8443            # prompts
    pass show bastion/admin | bastion login --url http://127.0.0.1:8443 --token-stdin
"""

from __future__ import annotations

import datetime as dt
import getpass
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli._client import OperatorConfig, ServiceClient, save_config
from bastion.cli.apps import app, token_app
from bastion.cli.output import (
    JsonOption,
    LimitOption,
    OffsetOption,
    OutputOption,
    console,
    emit_cut_note,
    emit_object,
    emit_table,
    err_console,
    fail,
)

__all__ = ["login_cmd", "parse_expiry", "read_token", "token_create_cmd", "token_list_cmd", "token_revoke_cmd"]

#: Bound on a token read from standard input (a Bastion token is 81 characters).
MAX_TOKEN_INPUT_CHARS = 1024
TOKEN_COLUMNS = ("token_id", "name", "role", "state", "created_at", "expires_at", "revoked_at")
_DURATION_RE = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EXPIRES_HELP = "e.g. 30d, 12h, 90m, or a date/time such as 2027-01-31 or 2027-01-31T12:00Z"


def read_token(*, from_stdin: bool) -> str:
    """Read an operator token: one line of standard input, or a prompt without echo on a terminal.

    Raises:
        CliError: nothing was given, or the input is far longer than a token.
    """
    if from_stdin or not sys.stdin.isatty():
        raw = sys.stdin.readline(MAX_TOKEN_INPUT_CHARS + 1)
        if len(raw) > MAX_TOKEN_INPUT_CHARS:
            fail("the standard input is far longer than a token", hint="pipe only the token, on one line")
    else:
        raw = getpass.getpass("Operator token (input hidden): ")
    token = raw.strip()
    if not token:
        fail(
            "no token given", hint="paste the token at the prompt, or pipe it: `bastion login --url URL --token-stdin`"
        )
    return token


def parse_expiry(text: str, now: dt.datetime) -> int:
    """Seconds from ``now`` until the expiry ``text`` (a duration like ``30d`` or an ISO date/time, UTC if naive).

    Raises:
        CliError: not a duration or date, or not in the future.
    """
    text = text.strip()
    match = _DURATION_RE.fullmatch(text)
    if match:
        return int(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00")) if len(text) <= 40 else None
    except ValueError:
        when = None
    if when is None:
        fail(f"cannot read the expiry {text[:40]!r}", hint=_EXPIRES_HELP)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    seconds = int((when - now).total_seconds())
    if seconds <= 0:
        fail(f"the expiry {when.isoformat()} is in the past", hint=_EXPIRES_HELP)
    return seconds


@app.command("login")
def login_cmd(
    url: Annotated[str, typer.Option("--url", help="Service URL, e.g. http://127.0.0.1:8443")],
    token_stdin: Annotated[
        bool, typer.Option("--token-stdin", help="Read the token from standard input (one line) instead of a prompt.")
    ] = False,
    ca_file: Annotated[
        Path | None, typer.Option("--ca-file", help="CA bundle that signed the service's TLS certificate.")
    ] = None,
    profile: Annotated[
        str | None, typer.Option("--profile", help="Save the login under this profile (default: the one in use).")
    ] = None,
) -> None:
    """Check a token against the service and save the login (0600). The token is prompted for, never an argument."""
    if not url.startswith(("http://", "https://")):
        fail("the URL must start with http:// or https://", hint="e.g. --url http://127.0.0.1:8443")
    if ca_file is not None and not ca_file.is_file():
        fail(f"no CA file at {ca_file}")
    token = read_token(from_stdin=token_stdin)
    config = OperatorConfig(url=url.rstrip("/"), token=token, ca_file=str(ca_file.absolute()) if ca_file else None)
    with ServiceClient(config) as client:
        who = client.get_json("/whoami")
    path, saved_as = save_config(config, profile=profile)
    expiry = f"; the token expires at {who['expires_at']}" if who.get("expires_at") else ""
    console.print(
        f"logged in to {config.url} as tenant [bold]{who['tenant_name']}[/bold] "
        f"({who['tenant_id']}), role {who['role']}; saved as profile {saved_as!r} in {path}{expiry}"
    )


@token_app.command("create")
def token_create_cmd(
    role: Annotated[str, typer.Option("--role", help="reader, contributor or admin.")],
    name: Annotated[str | None, typer.Option("--name", help="A label for the token.")] = None,
    expires: Annotated[
        str | None, typer.Option("--expires", help=f"When it stops working ({_EXPIRES_HELP}); default: the service's.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an operator token for your tenant (admin). The token is shown once."""
    if role not in ("reader", "contributor", "admin"):
        fail(f"unknown role {role!r}", hint="use --role reader, contributor or admin")
    body: dict[str, object] = {"name": name or f"{role} token", "role": role}
    if expires is not None:
        body["expires_in_s"] = parse_expiry(expires, dt.datetime.now(dt.UTC))
    with ServiceClient.from_saved_login() as client:
        created = client.post_json("/tokens", body)
    emit_object(created, as_json=as_json, title="token created")
    err_console.print(
        "[yellow]warning:[/yellow] store this token now; it is shown only once and cannot be recovered. "
        "Log in with it by `bastion login --url URL` (it prompts)."
    )


@token_app.command("list")
def token_list_cmd(
    limit: LimitOption = None, offset: OffsetOption = 0, as_json: JsonOption = False, output: OutputOption = "table"
) -> None:
    """List your tenant's tokens with their state: active, expired or revoked (admin)."""
    with ServiceClient.from_saved_login() as client:
        page = client.get_pages("/tokens", limit=limit, offset=offset)
    emit_table(page.rows, TOKEN_COLUMNS, as_json=as_json, title="operator tokens", output=output)
    emit_cut_note(shown=len(page.rows), offset=offset, more=page.more, what="tokens")


@token_app.command("revoke")
def token_revoke_cmd(
    token_id: Annotated[
        str, typer.Argument(help="The token's public id (32 hex characters; see `bastion token list`).")
    ],
    as_json: JsonOption = False,
) -> None:
    """Revoke a token of your tenant: it stops working at once (admin)."""
    with ServiceClient.from_saved_login() as client:
        revoked = client.post_json(f"/tokens/{token_id}/revoke")
    emit_object(revoked, as_json=as_json, title="token revoked")
