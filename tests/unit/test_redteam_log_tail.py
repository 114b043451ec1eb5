"""Red team, issue 8: the device answers a log request with the app's own log file, never what a symlink names."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bastion.os.reporting.uploader import _tail


def test_the_log_tail_is_read(tmp_path: Path) -> None:
    log = tmp_path / "app1.log"
    log.write_text("one\ntwo\n")
    assert _tail(log, 4) == ("two\n", True)


@pytest.mark.skipif(not hasattr(os, "O_NOFOLLOW"), reason="no O_NOFOLLOW")
def test_a_symlinked_log_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "device.key"
    secret.write_text("-----BEGIN PRIVATE KEY-----\n")
    (tmp_path / "app1.log").symlink_to(secret)
    assert _tail(tmp_path / "app1.log", 1024) == ("", False)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs")
def test_a_fifo_log_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "app1.log")
    assert _tail(tmp_path / "app1.log", 1024) == ("", False)
