"""Run the ``bastion`` CLI in-process, as a user would from a shell."""

from __future__ import annotations

import sys

import pytest

from bastion.cli.main import main


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``bastion ARGS``; return its exit code, stdout and stderr."""
    monkeypatch.setattr(sys, "argv", ["bastion", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err
