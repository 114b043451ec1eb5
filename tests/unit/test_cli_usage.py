"""CLI usage errors and hints (issue 7 section 7).

Usage errors (an unknown command, a missing argument, a bad option) print one
line on stderr and exit 2, with no traceback; every ``bastion ...`` hint in the
source names a command, and options, that exist.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer

from bastion.cli.apps import app
from bastion.cli.main import _register, main

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "bastion"
_HINT_RE = re.compile(r"`bastion ([^`\n]*)`")
#: A command line in a shell block of the docs (up to a comment).
_DOC_LINE_RE = re.compile(r"^\s*bastion ([^\n#]*)", re.MULTILINE)
#: A command substitution in a shell block: VAR=$(bastion ...).
_SUBST_RE = re.compile(r"\$\(bastion ([^)\n]*)\)")


def _commands(found: str) -> list[str]:
    """The bastion commands of a shell line: a pipeline's segments that run bastion (`a | jq | bastion b`)."""
    first, *rest = found.split(" | ")
    return [first.strip()] + [p.strip().removeprefix("bastion ") for p in rest if p.strip().startswith("bastion ")]


USAGE_ERRORS = [
    ["nosuch"],
    ["device", "nosuch"],
    ["device", "revoke"],  # missing argument
    ["token", "create"],  # missing option
    ["device", "list", "--bogus"],  # unknown option
    ["device", "list", "--limit", "0"],  # out of range
    ["device", "list", "--limit", "many"],  # not a number
    ["token", "list", "--offset"],  # option without its value
    ["login", "--url", "http://127.0.0.1:9", "--token", "bst_secret"],  # the removed token-in-argv option
]


def _run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["bastion", *argv])
    with pytest.raises(SystemExit) as exited:
        main()
    code = exited.value.code
    return code if isinstance(code, int) else 1


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=" ".join)
def test_usage_errors_are_one_line_and_exit_2(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # a narrow terminal must not wrap the line either
    assert _run_main(argv, monkeypatch) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    assert "--help`" in lines[0] or "bastion login --url URL" in lines[0]
    assert "bst_secret" not in err


def test_a_usage_error_in_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from bastion.cli.main import main; main()", "device", "list", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "No such option: --bogus" in result.stderr
    assert "Traceback" not in result.stderr


def _options(command: Any) -> set[str]:
    names: set[str] = {"--help"}
    for param in getattr(command, "params", []):
        names.update(getattr(param, "opts", []))
        names.update(getattr(param, "secondary_opts", []))
    return names


def _check_hint(root: Any, hint: str) -> str | None:
    """None if every command and option of ``hint`` exists, else what is missing."""
    words = hint.split()
    command = root
    leaves = [root]
    path = "bastion"
    index = 0
    while index < len(words) and hasattr(command, "commands") and not words[index].startswith("-"):
        alternatives = words[index].split("|")
        missing = [a for a in alternatives if a not in command.commands]
        if missing:
            return f"`{path} {words[index]}`: no command {missing}"
        leaves = [command.commands[a] for a in alternatives]
        command = leaves[0]
        path += f" {words[index]}"
        index += 1
    if hasattr(command, "commands") and index == len(words) and command is not root:
        return None  # a group named on its own
    for word in words[index:]:
        if word.startswith("--"):
            option = word.split("=", 1)[0]
            for leaf in leaves:
                if option not in _options(leaf):
                    return f"`{path}` has no option {option}"
    return None


def test_every_bastion_hint_in_the_source_names_a_real_command() -> None:
    _register()
    root = typer.main.get_command(app)
    hints: set[str] = set()
    for path in SRC.rglob("*.py"):
        hints.update(_HINT_RE.findall(path.read_text(encoding="utf-8")))
    checked = [h for h in sorted(hints) if "{" not in h]  # f-string templates are filled at run time
    assert len(checked) > 40, "the hint extraction found too few hints; is SRC right?"
    problems = [f"{h!r}: {p}" for h in checked if (p := _check_hint(root, h)) is not None]
    assert problems == []


def test_every_bastion_command_in_the_readme_and_docs_exists() -> None:
    _register()
    root = typer.main.get_command(app)
    hints: set[str] = set()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        for found in _HINT_RE.findall(text) + _DOC_LINE_RE.findall(text) + _SUBST_RE.findall(text):
            hints.update(_commands(found))
    checked = [h for h in sorted(hints) if h and "{" not in h]
    assert len(checked) > 20
    problems = [f"{h!r}: {p}" for h in checked if (p := _check_hint(root, h)) is not None]
    assert problems == []


def test_the_hint_checker_catches_a_wrong_hint() -> None:
    _register()
    root = typer.main.get_command(app)
    assert _check_hint(root, "device list --limit 5") is None
    assert _check_hint(root, "device claim|list|show|revoke") is None
    assert _check_hint(root, "device frobnicate") is not None
    assert _check_hint(root, "login --url URL --token TOKEN") is not None
    assert _check_hint(root, "token create|explode") is not None
