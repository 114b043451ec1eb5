"""Red team, issue 8: remote text (a device's crash description, an app's log) in CLI tables is shown inert."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from bastion.cli import output


@pytest.fixture
def screen(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    buffer = io.StringIO()
    monkeypatch.setattr(output, "console", Console(file=buffer, force_terminal=True, width=200, highlight=False))
    return buffer


@pytest.mark.parametrize(
    "text",
    ["[/bold]", "[link=https://evil.example]update now[/link]", "ok\x1b]0;pwned\x07\x1b[2J", "\u202eexe.txt"],
)
def test_device_text_in_a_table_is_neither_markup_nor_terminal_control(screen: io.StringIO, text: str) -> None:
    output.emit_table([{"description": text}], ["description"], as_json=False)  # "[/bold]" raised MarkupError
    output.emit_object({"title": text}, as_json=False)
    shown = screen.getvalue()
    assert "evil.example\x1b" not in shown  # no OSC 8 hyperlink
    assert "\x1b]0;" not in shown
    assert "\x1b[2J" not in shown
    assert "\u202e" not in shown
    assert "[/bold]" in shown or "link=" in shown or "\\x1b" in shown or "\\u202e" in shown


def test_newlines_and_plain_text_are_kept() -> None:
    assert output.inert_text("line 1\n\tline 2 é 中") == "line 1\n\tline 2 é 中"
