"""Bounded reads and atomic writes shared by every layer that touches files."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.images.fileio import FileTooLargeError, atomic_write_bytes, read_bounded


def test_read_bounded(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    atomic_write_bytes(path, b"x" * 10, mode=0o600)
    assert (path.stat().st_mode & 0o777) == 0o600
    assert read_bounded(path, 10) == b"x" * 10
    with pytest.raises(FileTooLargeError, match="larger than 9 bytes"):
        read_bounded(path, 9)
    with pytest.raises(FileNotFoundError):
        read_bounded(tmp_path / "missing", 10)
