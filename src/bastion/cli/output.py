"""Shared output for CLI commands: tables or JSON, and errors that say what to do.

Every list command takes ``--json`` (see :data:`JsonOption`) and calls
:func:`emit_table`; every command that fails raises :class:`CliError` (or lets
a library error be turned into one) so the user sees one clear line and a hint.
"""

from __future__ import annotations

import csv
import io
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
    "OutputOption",
    "console",
    "emit_csv",
    "emit_cut_note",
    "emit_object",
    "emit_table",
    "fail",
    "inert_text",
    "is_whole_column",
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
#: Formats of ``--output`` (``--json`` stays as it is).
OUTPUT_FORMATS = ("table", "csv")
OutputOption = Annotated[
    str,
    typer.Option(
        "--output",
        help="table, or csv (every field, a header row; for a spreadsheet). --json prints JSON.",
        case_sensitive=False,
    ),
]
#: Columns whose values are printed whole on one line, never folded or cut: IDs, tokens, digests.
WHOLE_COLUMNS = frozenset({"id", "token", "sha256", "measurement", "fingerprint", "serial", "key_id"})
#: Narrowest a folded column of a table is allowed to get before the rows are printed as records.
MIN_FOLDED_WIDTH = 6
#: A CSV cell starting with one of these is read as a formula by spreadsheets ("CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


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


def is_whole_column(name: str) -> bool:
    """Whether a column holds IDs, tokens or digests, which are never split across lines."""
    return name in WHOLE_COLUMNS or name.endswith("_id")


def _text(value: Any) -> str:
    """A cell's text as it is: no terminal control sequences, and (as a ``Text``) no rich markup.

    Cells hold remote text (a device's crash description, an app's log, a bucket title):
    as a markup string ``[/bold]`` would crash the table and ``[link=...]`` plant a link,
    and an ESC byte would reach the operator's terminal.
    """
    return "" if value is None else inert_text(str(_jsonable(value)))


def _terminal_width() -> int | None:
    """The width to lay tables out in: the terminal's, or ``None`` into a pipe (nothing is folded there).

    It asks the file itself, not ``console.is_terminal``: FORCE_COLOR makes rich call a pipe a terminal.
    """
    tty = getattr(console.file, "isatty", lambda: False)()
    return console.width if tty else None


def _fits(table: Table, width: int, whole: Sequence[str]) -> bool:
    """Whether ``table`` laid out in ``width`` columns shows every value of ``whole`` on one line."""
    probe = Console(file=io.StringIO(), width=width, color_system=None, highlight=False, legacy_windows=False)
    # Each column: its narrowest width, a space either side and a border; plus the last border.
    narrowest = 1 + sum((column.min_width or 1) + 3 for column in table.columns)
    if narrowest > width:
        return False  # rich would squeeze the whole columns or crop the columns on the right
    probe.print(table)
    lines = probe.file.getvalue().splitlines()  # type: ignore[attr-defined] # a StringIO, made above
    return all(any(value in line for line in lines) for value in whole)


def _print_records(rows: Sequence[Sequence[tuple[str, str]]], *, title: str | None) -> None:
    """Rows as records, one field a line: for a terminal too narrow for the table (IDs stay whole)."""
    if title:
        console.print(Text(title, style="bold"))
    for number, fields in enumerate(rows):
        if number:
            console.print()
        for key, value in fields:
            if is_whole_column(key) and len(key) + 2 + len(value) > console.width:
                # Too long to follow its name: on a line of its own, from the first column.
                console.print(Text(f"{key}:", style="bold"))
                console.print(Text(value), soft_wrap=True)
            else:
                console.print(Text.assemble((f"{key}: ", "bold"), value), soft_wrap=is_whole_column(key))


def _print_table(
    table: Table, whole: Sequence[str], records: Sequence[Sequence[tuple[str, str]]], title: str | None
) -> None:
    """Print ``table`` so that no value of ``whole`` is split: into the terminal's width, else as records."""
    width = _terminal_width()
    if width is None:
        console.print(table, width=PIPE_TABLE_WIDTH)
    elif _fits(table, width, whole):
        console.print(table, width=width)
    else:
        _print_records(records, title=title)


def emit_object(obj: Mapping[str, Any], *, as_json: bool, title: str | None = None) -> None:
    """Print one record as JSON or as a two-column table (an ID or a token is never split)."""
    if as_json:
        sys.stdout.write(json.dumps({k: _jsonable(v) for k, v in obj.items()}, indent=2) + "\n")
        return
    fields = [(str(k), _text(v)) for k, v in obj.items()]
    whole = [v for k, v in fields if is_whole_column(k) and v]
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold", min_width=max(map(len, whole), default=None))
    for key, value in fields:
        table.add_row(Text(key), Text(value))
    _print_table(table, whole, [fields], title)


def _csv_cell(value: Any) -> str:
    if isinstance(value, (list, dict)):
        value = json.dumps(value, default=_jsonable)
    text = "" if value is None else str(_jsonable(value))
    # A cell a spreadsheet would run as a formula is quoted with a leading apostrophe (OWASP CSV injection).
    return "'" + text if text.startswith(_FORMULA_START) else text


def emit_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Print rows as CSV: ``columns`` first, then every other field the rows have, and a header row."""
    names = list(dict.fromkeys([*columns, *(k for row in rows for k in row)]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([_csv_cell(name) for name in names])  # the field names are the service's text too
    for row in rows:
        writer.writerow([_csv_cell(row.get(name)) for name in names])
    sys.stdout.write(out.getvalue())


def emit_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    as_json: bool,
    title: str | None = None,
    output: str = "table",
) -> None:
    """Print a list of records as JSON (all fields), CSV (all fields) or a table (``columns``).

    In a table, ID, token and digest columns (:func:`is_whole_column`) are never
    folded or cut; when the terminal is too narrow for them and the rest, the rows
    are printed as records, one field a line.

    Raises:
        CliError: an unknown ``output`` format, or ``--output csv`` with ``--json``.
    """
    fmt = output.lower()
    if fmt not in OUTPUT_FORMATS:
        fail(f"unknown output format {output[:20]!r}", hint="use --output table or --output csv (or --json)")
    if as_json and fmt != "table":
        fail("--json and --output csv ask for two formats", hint="pick one of them")
    if as_json:
        sys.stdout.write(json.dumps([{k: _jsonable(v) for k, v in r.items()} for r in rows], indent=2) + "\n")
        return
    if fmt == "csv":
        emit_csv(rows, columns)
        return
    cells = [[(c, _text(row.get(c))) for c in columns] for row in rows]
    whole = [v for fields in cells for c, v in fields if is_whole_column(c) and v]
    table = Table(title=title)
    for column in columns:
        if is_whole_column(column):
            longest = max((len(v) for fields in cells for c, v in fields if c == column), default=0)
            table.add_column(column, no_wrap=True, min_width=max(longest, len(column)))
        else:
            table.add_column(column, overflow="fold", min_width=min(MIN_FOLDED_WIDTH, len(column)))
    for fields in cells:
        table.add_row(*(Text(v) for _c, v in fields))
    _print_table(table, whole, cells, title)


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
