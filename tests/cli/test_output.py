"""``--output csv`` on the lists, and tables that never split an ID or a one-time token at 80 columns."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from fcntl import ioctl
from pathlib import Path
from typing import ClassVar

import pytest
from _opcli_support import add_device, cli_env, new_device_id, run
from sqlalchemy.orm import Session, sessionmaker

from bastion.cli.output import CliError, emit_csv
from bastion.service.config import Settings
from bastion.service.tenants.service import CreatedTenant

#: Seconds a CLI subprocess on a pseudo-terminal may take.
PTY_TIMEOUT_S = 60
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TOKEN = re.compile(r"bst_[0-9a-f]+_[A-Za-z0-9_-]{43}")


@pytest.fixture
def logged_in(  # noqa: PLR0917 - pytest passes fixtures by name
    tmp_path: Path,
    settings: Settings,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
    make_tenant: Callable[[str], CreatedTenant],
    session_factory: sessionmaker[Session],
) -> tuple[Path, CreatedTenant, list[str]]:
    config = cli_env(monkeypatch, tmp_path, settings)
    tenant = make_tenant("acme")
    run("login", "--url", live_url, "--token-stdin", stdin=tenant.admin_token + "\n")
    devices = sorted(new_device_id() for _ in range(3))
    for device_id in devices:
        add_device(session_factory, tenant.tenant_id, device_id)
    return config, tenant, devices


def _csv(*args: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(run(*args, "--output", "csv"))))


@pytest.mark.usefixtures("live_url")
def test_lists_print_csv(logged_in: tuple[Path, CreatedTenant, list[str]]) -> None:
    _config, tenant, devices = logged_in
    rows = _csv("device", "list")
    assert sorted(r["device_id"] for r in rows) == devices
    assert list(rows[0])[:3] == ["device_id", "last_result", "last_reason"]  # the table's columns first
    tokens = _csv("token", "list")
    assert [t["token_id"] for t in tokens] == [tenant.admin_token_id]
    assert tenant.admin_token not in run("token", "list", "--output", "csv")
    audit = _csv("audit")
    assert {"at", "actor", "action", "target", "outcome", "detail"} <= set(audit[0])
    assert list(csv.reader(io.StringIO(run("deployment", "list", "--output", "csv")))) == [
        ["id", "group_id", "created_at", "created_by"]
    ]  # a header even when there is nothing
    assert run("error-report", "list", "--output", "csv").splitlines()[0].startswith("bucket_id,state,")
    # --json is kept, and asking for both formats is refused.
    assert sorted(d["device_id"] for d in json.loads(run("device", "list", "--json"))) == devices
    with pytest.raises(CliError, match="two formats"):
        run("device", "list", "--json", "--output", "csv")
    with pytest.raises(CliError, match="unknown output format"):
        run("device", "list", "--output", "xlsx")


def test_csv_cells_are_not_formulas(capsys: pytest.CaptureFixture[str]) -> None:
    emit_csv([{"name": '=HYPERLINK("http://evil")', "n": 1, "tags": ["a", "b"], "note": "-1+1"}], ["name"])
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["name", "n", "tags", "note"], ['\'=HYPERLINK("http://evil")', "1", '["a", "b"]', "'-1+1"]]


def test_csv_header_cells_from_the_service_are_not_formulas(capsys: pytest.CaptureFixture[str]) -> None:
    """Red team: the header row names every field the service's rows carry, so a field name is the service's
    text too; a hostile or compromised service must not put a formula into the operator's spreadsheet."""
    emit_csv([{"id": "d1", '=HYPERLINK("http://evil","x")': "v", "@SUM(1)": "w"}], ["id"])
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header == ["id", '\'=HYPERLINK("http://evil","x")', "'@SUM(1)"]


def _on_terminal(args: list[str], *, columns: int, stdin: str | None = None) -> str:
    """Run ``bastion ARGS`` with its stdout on a pseudo-terminal ``columns`` wide; return what it printed."""
    leader, follower = pty.openpty()
    ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "FORCE_COLOR")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.cli.main", *args],
        stdin=subprocess.PIPE,
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(follower)
    chunks: list[bytes] = []
    proc.stdin.write((stdin or "").encode())  # type: ignore[union-attr] # stdin=PIPE
    proc.stdin.close()  # type: ignore[union-attr]
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    code = proc.wait(timeout=PTY_TIMEOUT_S)
    with proc.stderr:  # type: ignore[union-attr] # stderr=PIPE
        assert code == 0, proc.stderr.read()  # type: ignore[union-attr]
    return ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


def test_ids_and_tokens_stay_whole_at_80_columns(
    live_url: str, logged_in: tuple[Path, CreatedTenant, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _config, _tenant, devices = logged_in
    monkeypatch.delenv("COLUMNS")
    shown = _on_terminal(["device", "list"], columns=80)
    lines = shown.splitlines()
    assert max(map(len, lines)) <= 80, shown
    for device_id in devices:
        assert any(device_id in line for line in lines), shown
    assert "last_result" in shown
    created = _on_terminal(["token", "create", "--role", "reader", "--name", "x" * 70], columns=80)
    # The whole token is on one line: logging in with what that line shows works.
    token = next(m.group(0) for m in map(TOKEN.search, created.splitlines()) if m)
    run("login", "--profile", "reader", "--url", live_url, "--token-stdin", stdin=token + "\n")
    assert max(map(len, created.splitlines())) <= 80, created
    listed = _on_terminal(["token", "list"], columns=80)
    token_ids = [t["token_id"] for t in json.loads(run("token", "list", "--json"))]
    for token_id in token_ids:
        assert any(token_id in line for line in listed.splitlines()), listed


class _OsImages:
    """A client whose /os-images list holds three images (the paging of os list asks with limit/offset)."""

    rows: ClassVar[list[dict[str, object]]] = [
        {"version": f"1.{n}.0", "security_version": 1, "feed": "retail", "measurement": "ab" * 32} for n in (2, 1, 0)
    ]

    def __enter__(self) -> _OsImages:
        return self

    def __exit__(self, *_exc: object) -> None:
        return None

    def get_json(self, path: str, *, limit: int, offset: int) -> list[dict[str, object]]:
        assert path == "/os-images"
        return self.rows[offset : offset + limit]


def test_os_list_prints_csv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.cli.fleet_update_cmds._client", _OsImages)
    rows = list(csv.DictReader(io.StringIO(run("os", "list", "--output", "csv"))))
    assert [r["version"] for r in rows] == ["1.2.0", "1.1.0", "1.0.0"]
    assert rows[0]["measurement"] == "ab" * 32
