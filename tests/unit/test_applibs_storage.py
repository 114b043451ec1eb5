"""MutableStorage through the choke point: granted, denied, the quota's edges, planted links refused."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from _applibs_rig import AppRig

from bastion.applibs import storage
from bastion.applibs.errors import InvalidArgumentError, NotFoundError, PermissionDeniedError, QuotaExceededError
from bastion.os.appservices.storage import TEMP_PREFIX, StorageLimits, StorageService

SMALL = StorageLimits(block_bytes=4096, file_overhead_bytes=512, max_files=8)


def _rig(tmp_path: Path, size_kb: int | None = 16, limits: StorageLimits = SMALL) -> AppRig:
    caps: dict[str, object] = {"MutableStorage": {"SizeKB": size_kb}} if size_kb is not None else {}
    return AppRig(tmp_path / "data", caps, services=[StorageService(limits)])


def _b(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_write_read_append_list_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with _rig(tmp_path).install(monkeypatch) as app:
        assert storage.write_file("state.json", b'{"n": 1}') == 8
        assert storage.read_file("state.json") == b'{"n": 1}'
        assert storage.append_file("log.txt", b"a") == 1
        assert storage.append_file("log.txt", b"bc") == 3
        assert storage.read_file("log.txt", offset=1, length=1) == b"b"
        assert storage.list_files() == [storage.FileInfo("log.txt", 3), storage.FileInfo("state.json", 8)]
        usage = storage.get_usage()
        assert (usage.used_bytes, usage.quota_bytes, usage.files) == (2 * (4096 + 512), 16 * 1024, 2)
        storage.delete_file("log.txt")
        assert [f.name for f in storage.list_files()] == ["state.json"]
        with pytest.raises(NotFoundError):
            storage.read_file("log.txt")
        assert app.records == []
    assert (tmp_path / "data" / "state.json").read_bytes() == b'{"n": 1}'


def test_a_large_file_is_written_and_read_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(storage.MAX_CHUNK_BYTES * 2 + 10)
    with _rig(tmp_path, size_kb=256, limits=StorageLimits()).install(monkeypatch):
        assert storage.write_file("blob", data) == len(data)
        assert storage.read_file("blob") == data


def test_every_op_is_denied_without_the_capability(tmp_path: Path) -> None:
    with _rig(tmp_path, size_kb=None) as app:
        for op in (
            "storage.write",
            "storage.append",
            "storage.read",
            "storage.delete",
            "storage.list",
            "storage.usage",
        ):
            with pytest.raises(PermissionDeniedError) as info:
                app.call(op, {"name": "x", "data_b64": ""})
            assert info.value.capability == "MutableStorage"
        assert len(app.denied()) == 6
        assert all(d.startswith("MutableStorage: storage.") for d in app.denied())
    assert not (tmp_path / "data").exists()


def test_quota_edge_exactly_full_then_one_byte_more(tmp_path: Path) -> None:
    # SizeKB 9 = 9216 bytes: two one-block files cost 2 * (4096 + 512) = 9216, exactly the quota.
    with _rig(tmp_path, size_kb=9) as app:
        app.call("storage.write", {"name": "a", "data_b64": _b(b"x" * 4096)})
        app.call("storage.write", {"name": "b", "data_b64": _b(b"y")})
        assert app.call("storage.usage")["used_bytes"] == 9216
        with pytest.raises(QuotaExceededError, match="SizeKB 9"):
            app.call("storage.append", {"name": "b", "data_b64": _b(b"z" * 4096)})
        with pytest.raises(QuotaExceededError, match="SizeKB 9"):
            app.call("storage.write", {"name": "c", "data_b64": ""})
        # Nothing partially written, and the usage did not move.
        assert (tmp_path / "data" / "b").read_bytes() == b"y"
        assert not (tmp_path / "data" / "c").exists()
        assert app.call("storage.usage")["used_bytes"] == 9216
        # Replacing a file counts its new size, not both.
        app.call("storage.write", {"name": "a", "data_b64": _b(b"x" * 4000)})
        assert app.call("storage.usage")["used_bytes"] == 9216
        assert app.denied() == []  # a quota refusal is not a security event


def test_empty_files_hit_the_quota_and_the_file_count(tmp_path: Path) -> None:
    with _rig(tmp_path, size_kb=64) as app:
        for i in range(8):
            app.call("storage.write", {"name": f"f{i}", "data_b64": ""})
        with pytest.raises(QuotaExceededError, match="files"):
            app.call("storage.write", {"name": "f8", "data_b64": ""})
    with _rig(tmp_path / "2", size_kb=1, limits=StorageLimits(file_overhead_bytes=512)) as app:
        app.call("storage.write", {"name": "e0", "data_b64": ""})
        app.call("storage.write", {"name": "e1", "data_b64": ""})  # 2 * 512 = 1024
        with pytest.raises(QuotaExceededError):
            app.call("storage.write", {"name": "e2", "data_b64": ""})


def test_files_planted_by_others_count_against_the_quota(tmp_path: Path) -> None:
    with _rig(tmp_path, size_kb=16) as app:
        app.call("storage.usage")  # creates the directory
        (tmp_path / "data" / "sub").mkdir()
        (tmp_path / "data" / "sub" / "hidden").write_bytes(b"h" * 5000)  # 2 blocks + overhead
        used = app.call("storage.usage")["used_bytes"]
        directory = (tmp_path / "data" / "sub").stat()
        assert used == StorageLimits().cost(max(directory.st_size, directory.st_blocks * 512)) + (8192 + 512)
        with pytest.raises(QuotaExceededError):
            app.call("storage.write", {"name": "a", "data_b64": _b(b"a" * (16384 - used))})


@pytest.mark.parametrize(
    "name", ["", ".hidden", "..", "a/b", "../x", "a..b", "x" * 65, "sp ace", "é", TEMP_PREFIX + "x", "a\x00b"]
)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    with _rig(tmp_path) as app, pytest.raises(InvalidArgumentError):
        app.call("storage.write", {"name": name, "data_b64": ""})


def test_a_planted_symlink_is_refused_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not read")
    with _rig(tmp_path) as app:
        app.call("storage.usage")
        (tmp_path / "data" / "link").symlink_to(secret)
        for op, args in (
            ("storage.read", {"name": "link"}),
            ("storage.append", {"name": "link", "data_b64": _b(b"!")}),
            ("storage.write", {"name": "link", "data_b64": _b(b"!")}),
        ):
            with pytest.raises(PermissionDeniedError, match="symbolic link") as info:
                app.call(op, args)
            assert info.value.capability == "MutableStorage"
        assert secret.read_bytes() == b"do not read"
        assert len(app.denied()) == 3
        assert "symbolic link" in app.denied()[0]
        app.call("storage.delete", {"name": "link"})  # removed, not followed
        assert secret.exists()
        assert not (tmp_path / "data" / "link").is_symlink()


def test_a_planted_hard_link_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.write_bytes(b"other file")
    with _rig(tmp_path) as app:
        app.call("storage.usage")
        os.link(outside, tmp_path / "data" / "hard")
        for op, args in (
            ("storage.read", {"name": "hard"}),
            ("storage.append", {"name": "hard", "data_b64": _b(b"!")}),
            ("storage.write", {"name": "hard", "data_b64": _b(b"!")}),
        ):
            with pytest.raises(PermissionDeniedError, match="hard links"):
                app.call(op, args)
        assert outside.read_bytes() == b"other file"


def test_a_fifo_or_directory_is_refused(tmp_path: Path) -> None:
    with _rig(tmp_path) as app:
        app.call("storage.usage")
        os.mkfifo(tmp_path / "data" / "fifo")
        (tmp_path / "data" / "dir").mkdir()
        with pytest.raises(PermissionDeniedError, match="not a regular file"):
            app.call("storage.read", {"name": "fifo"})  # never blocks on the FIFO
        with pytest.raises(PermissionDeniedError, match="not a regular file"):
            app.call("storage.read", {"name": "dir"})
        with pytest.raises(InvalidArgumentError, match="directory"):
            app.call("storage.delete", {"name": "dir"})


def test_the_storage_directory_itself_may_not_be_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "data").symlink_to(target)
    with _rig(tmp_path) as app, pytest.raises(PermissionDeniedError, match="not a plain directory"):
        app.call("storage.write", {"name": "a", "data_b64": ""})
    assert list(target.iterdir()) == []


def test_stale_temp_files_are_removed_and_not_listed(tmp_path: Path) -> None:
    with _rig(tmp_path) as app:
        app.call("storage.usage")
        (tmp_path / "data" / (TEMP_PREFIX + "dead")).write_bytes(b"x" * 9000)
        assert app.call("storage.usage")["used_bytes"] == 0
        assert app.call("storage.list") == {"files": []}
        assert not (tmp_path / "data" / (TEMP_PREFIX + "dead")).exists()


def test_chunk_and_argument_bounds(tmp_path: Path) -> None:
    with _rig(tmp_path, size_kb=256, limits=StorageLimits()) as app:
        with pytest.raises(InvalidArgumentError, match="over"):
            app.call("storage.write", {"name": "a", "data_b64": _b(b"x" * (64 * 1024 + 1))})
        with pytest.raises(InvalidArgumentError):
            app.call("storage.read", {"name": "a", "length": 64 * 1024 + 1})
        with pytest.raises(InvalidArgumentError):
            app.call("storage.read", {"name": "a", "offset": -1})
        with pytest.raises(InvalidArgumentError, match="base64"):
            app.call("storage.write", {"name": "a", "data_b64": "!!"})


def test_data_survives_a_new_service_and_app_version(tmp_path: Path) -> None:
    with _rig(tmp_path) as app:
        app.call("storage.write", {"name": "keep", "data_b64": _b(b"v1 data")})
    with _rig(tmp_path) as app:  # a new boot: new service, same per-component directory
        assert base64.b64decode(app.call("storage.read", {"name": "keep"})["data_b64"]) == b"v1 data"


def test_a_tree_with_too_many_planted_entries_is_refused(tmp_path: Path) -> None:
    limits = StorageLimits(max_files=8, max_scan_entries=20)
    with _rig(tmp_path, size_kb=1024, limits=limits) as app:
        app.call("storage.usage")
        planted = tmp_path / "data" / "planted"
        planted.mkdir()
        for i in range(25):
            (planted / f"f{i}").touch()
        with pytest.raises(PermissionDeniedError, match="too many entries"):
            app.call("storage.write", {"name": "a", "data_b64": ""})
        assert "too many entries" in app.denied()[0]
