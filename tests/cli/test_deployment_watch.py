"""``bastion deployment show --watch``: a live view that ends when the deployment completes, halts or aborts."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from _opcli_support import invoke
from rich.console import Console

from bastion.cli import deployment_watch, rollout_cmds


def _deployment(state: str, installed: int, *, reason: str | None = None) -> dict[str, Any]:
    return {
        "id": 7,
        "group_id": "g-1",
        "counts": {"pending": 10 - installed, "installed": installed},
        "rollout": {
            "id": 3,
            "state": state,
            "stage": 1,
            "halt_reason": reason,
            "stages": [
                {"index": 0, "percent": 10.0, "devices": 1, "installed": 1, "current": False, "health": []},
                {
                    "index": 1,
                    "percent": 100.0,
                    "devices": 9,
                    "installed": installed - 1,
                    "current": True,
                    "health": [{"component_id": "c0", "version": "1.1.0", "crash_free_rate": 0.5}],
                },
            ],
        },
    }


def test_watch_redraws_until_the_rollout_halts() -> None:
    polls = iter([_deployment("running", 1), _deployment("soaking", 4), _deployment("halted", 4, reason="crash drop")])
    slept: list[float] = []
    out = io.StringIO()
    why, last = deployment_watch.watch(
        lambda: next(polls), interval=0.5, sleep=slept.append, console=Console(file=out, force_terminal=True, width=100)
    )
    assert why == "halted"
    assert last["rollout"]["halt_reason"] == "crash drop"
    assert slept == [0.5, 0.5]  # two waits between three polls, at the asked interval
    drawn = out.getvalue()
    assert "halted: crash drop" in drawn
    assert "3/9" in drawn
    assert "50.0% crash-free" in drawn


def test_finished_without_a_rollout_waits_for_pending_and_deferred() -> None:
    assert deployment_watch.finished({"counts": {"pending": 1, "installed": 2}}) is None
    assert deployment_watch.finished({"counts": {"pending": 0, "deferred": 1}}) is None
    assert deployment_watch.finished({"counts": {"pending": 0, "installed": 3, "failed": 1}}) == "completed"
    assert deployment_watch.finished(_deployment("aborted", 1)) == "aborted"
    assert deployment_watch.finished(_deployment("soaking", 1)) is None


class _FakeClient:
    def __init__(self, polls: Iterator[Mapping[str, Any] | BaseException]) -> None:
        self.polls = polls

    def __enter__(self) -> _FakeClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def get_json(self, path: str) -> Mapping[str, Any]:
        assert path == "/deployments/7"
        got = next(self.polls)
        if isinstance(got, BaseException):
            raise got
        return got


@pytest.mark.parametrize(
    ("polls", "code", "said"),
    [
        ([_deployment("running", 1), _deployment("completed", 10)], 0, "deployment 7 completed"),
        ([_deployment("running", 1), _deployment("halted", 2, reason="new bucket")], 1, "deployment 7 halted"),
        ([_deployment("running", 1), KeyboardInterrupt()], 130, "stopped watching"),
    ],
)
def test_the_command_exits_by_how_it_ended(
    monkeypatch: pytest.MonkeyPatch, polls: list[Any], code: int, said: str
) -> None:
    monkeypatch.setattr(rollout_cmds, "_client", lambda: _FakeClient(iter(polls)))
    monkeypatch.setattr("bastion.cli.rollout_cmds.time.sleep", lambda _s: None)
    result = invoke("deployment", "show", "7", "--watch", "--interval", "0.2")
    shown = result.output + str(getattr(result.exception, "message", ""))
    assert result.exit_code == code, shown
    assert said in shown


def test_interval_is_bounded() -> None:
    assert invoke("deployment", "show", "7", "--watch", "--interval", "0.01").exit_code == 2


def test_the_view_never_reads_the_services_words_as_markup() -> None:
    """A hostile service's stage fields show as typed (red-team finding: they were parsed as rich markup)."""
    deployment = _deployment("running", 3)
    deployment["id"] = "[link=http://evil.example]7[/link]"
    deployment["rollout"]["stages"][0]["index"] = "[bold red]0"
    deployment["rollout"]["stages"][0]["percent"] = "[blink]10"
    out = io.StringIO()
    Console(file=out, force_terminal=False, width=120).print(deployment_watch.render(deployment))
    text = out.getvalue()
    assert "[link=http://evil.example]7[/link]" in text
    assert "[bold red]0" in text
    assert "[blink]10%" in text
    assert "100%" in text  # numbers still print as before
