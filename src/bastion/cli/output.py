"""Shared output for CLI commands: tables or JSON, and errors that say what to do.

Every list command takes ``--json`` (see :data:`JsonOption`) and calls
:func:`emit_table`; every command that fails raises :class:`CliError` (or lets
a library error be turned into one) so the user sees one clear line and a hint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.crypto.keys import PrivateKey

__all__ = [
    "CliError",
    "JsonOption",
    "LimitOption",
    "OffsetOption",
    "console",
    "emit_cut_note",
    "emit_object",
    "emit_table",
    "fail",
    "inert_text",
    "load_signing_key",
    "progress",
]

console = Console(stderr=False, highlight=False)
#: Width of tables printed to a pipe or file: wide enough that no device ID or token is split.
PIPE_TABLE_WIDTH = 512
err_console = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LimitOption = Annotated[
    int | None, typer.Option("--limit", min=1, max=100_000, help="Show at most this many rows (default: all).")
]
OffsetOption = Annotated[int, typer.Option("--offset", min=0, max=10**9, help="Skip this many rows first.")]


class CliError(Exception):
    """A failure to report to the user: what went wrong, and what to do next."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


def fail(message: str, *, hint: str | None = None, exit_code: int = 1) -> NoReturn:
    """Raise a :class:`CliError`."""
    raise CliError(message, hint=hint, exit_code=exit_code)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return value


#: Bidirectional overrides and isolates ("Trojan Source"): text that displays other than it reads.
_BIDI = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))


def _inert_char(ch: str) -> str:
    code = ord(ch)
    if ch in "\n\t" or not (code < 0x20 or 0x7F <= code < 0xA0 or ch in _BIDI):
        return ch
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def inert_text(text: str) -> str:
    """``text`` with control characters (but newline and tab) and bidi overrides shown as escapes."""
    return "".join(map(_inert_char, text))


def _cell(value: Any) -> Text:
    """A table cell shown as the text it is: no rich markup, no terminal control sequences.

    Cells hold remote text (a device's crash description, an app's log, a bucket title):
    as a markup string ``[/bold]`` would crash the table and ``[link=...]`` plant a link,
    and an ESC byte would reach the operator's terminal.
    """
    text = "" if value is None else str(_jsonable(value))
    return Text(inert_text(text))


def emit_object(obj: Mapping[str, Any], *, as_json: bool, title: str | None = None) -> None:
    """Print one record as JSON or as a two-column table."""
    if as_json:
        sys.stdout.write(json.dumps({k: _jsonable(v) for k, v in obj.items()}, indent=2) + "\n")
        return
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in obj.items():
        table.add_row(_cell(key), _cell(value))
    console.print(table)


def emit_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, as_json: bool, title: str | None = None
) -> None:
    """Print a list of records as JSON (all fields) or as a table (``columns``)."""
    if as_json:
        sys.stdout.write(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2) + "\n")
        return
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    # On a terminal the table fits the window; into a pipe (grep, a file) nothing is folded.
    # (the file itself, not console.is_terminal: FORCE_COLOR makes rich call a pipe a terminal).
    tty = getattr(console.file, "isatty", lambda: False)()
    console.print(table, width=None if tty else PIPE_TABLE_WIDTH)


def emit_cut_note(
    *, shown: int, offset: int, more: bool, what: str, pages: bool = True, hint: str | None = None
) -> None:
    """Say on stderr that a list was cut, and how to see the rest (stdout stays clean for ``--json``).

    Args:
        shown: rows printed.
        offset: rows skipped before them.
        more: whether the list goes on.
        what: the rows' noun, e.g. ``"devices"``.
        pages: the command takes ``--offset`` (else only ``--limit``).
        hint: what to do instead of the default advice.
    """
    if not more:
        return
    if hint is None and pages:
        hint = f"more exist: add --offset {offset + shown} (and --limit N) to see the next ones"
    elif hint is None:
        hint = f"more exist: ask for more with --limit {max(2 * shown, 1)}"
    first = offset + 1 if shown else offset
    err_console.print(f"[yellow]note:[/yellow] output cut: {what} {first}-{offset + shown} shown; {hint}")


def load_signing_key(path: Path, *, hint: str) -> PrivateKey:
    """Load a P-256 private key (PEM, bounded) for signing, or fail with ``hint``."""
    from bastion.crypto.errors import CryptoError
    from bastion.crypto.keys import MAX_PEM_BYTES, load_private_key_pem

    try:
        with path.open("rb") as handle:
            return load_private_key_pem(handle.read(MAX_PEM_BYTES + 1))
    except OSError as exc:
        fail(f"cannot read the signing key {path}: {exc.strerror}", hint=hint)
    except CryptoError as exc:
        fail(f"{path} is not a P-256 private key: {exc}")


def progress(message: str) -> None:
    """Report a step of a long-running command on stderr (keeps stdout clean for --json)."""
    err_console.print(f"[dim]…[/dim] {message}")


def report_error(error: CliError) -> None:
    """Print a CLI error and its hint on stderr."""
    err_console.print(f"[bold red]error:[/bold red] {error.message}")
    if error.hint:
        err_console.print(f"[yellow]hint:[/yellow] {error.hint}")
