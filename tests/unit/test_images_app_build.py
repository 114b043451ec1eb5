"""App images: deterministic build, signature, version rules, and safe unpacking of evil archives."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.app_build import AppArchiveLimits, build_app_image, build_app_payload, unpack_app_payload
from bastion.images.errors import ImageArchiveError, ImageBuildError, ImageSignatureError
from bastion.images.manifest import ManifestError
from bastion.images.os_build import build_os_image
from bastion.images.package import ImageType, build_image, verify_image

HELLO = Path(__file__).resolve().parents[2] / "examples" / "apps" / "hello"
CID = "5b1e2f0a-7c3d-4e8b-9a61-2f4c8d0e1a37"


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key()


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    target = tmp_path / "hello"
    shutil.copytree(HELLO, target)
    return target


def manifest_bytes(**changes: Any) -> bytes:
    value = json.loads((HELLO / "app_manifest.json").read_bytes())
    value.update(changes)
    return json.dumps(value).encode()


def test_build_verify_unpack_and_run(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    (app_dir / "lib").mkdir()
    (app_dir / "lib" / "data.txt").write_text("data\n")
    (app_dir / "__pycache__").mkdir()
    (app_dir / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (app_dir / ".secret").write_text("not packaged")
    lines: list[str] = []
    result = build_app_image(app_dir, tmp_path / "out" / "hello.img", key, progress=lines.append)
    assert "validating" in lines[0]
    with result.path.open("rb") as stream:
        header = verify_image(stream, [key.public_key()])
    assert header == result.header
    assert (header.image_type, header.component_id, header.version) == (ImageType.APP, CID, "1.0.0")
    assert result.manifest.version == "1.0.0"
    assert result.file_count == 3

    dest = tmp_path / "apps" / CID / "1.0.0"
    manifest = unpack_app_payload(result.path, dest)
    assert manifest == result.manifest
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "app_manifest.json",
        "lib/data.txt",
        "main.py",
    ]
    assert stat.S_IMODE((dest / "main.py").stat().st_mode) == 0o755
    assert stat.S_IMODE((dest / "lib" / "data.txt").stat().st_mode) == 0o644
    run = subprocess.run(
        [sys.executable, str(dest / "main.py"), "--beats", "2", "--interval", "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert run.stdout.splitlines() == ["hello 1.0.0 heartbeat 1", "hello 1.0.0 heartbeat 2"]


def test_build_is_deterministic(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    first = build_app_image(app_dir, tmp_path / "a.img", key)
    os.utime(app_dir / "main.py", (1, 1))
    second = build_app_image(app_dir, tmp_path / "b.img", key)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert first.measurement == second.measurement
    (app_dir / "main.py").write_text((app_dir / "main.py").read_text() + "# changed\n")
    third = build_app_image(app_dir, tmp_path / "c.img", key)
    assert third.measurement != first.measurement


def test_version_flag_overrides_and_is_written_into_the_manifest(
    tmp_path: Path, app_dir: Path, key: PrivateKey
) -> None:
    result = build_app_image(app_dir, tmp_path / "v2.img", key, version="2.0.0")
    assert result.header.version == result.manifest.version == "2.0.0"
    dest = tmp_path / "v2"
    unpack_app_payload(result.path, dest)
    assert json.loads((dest / "app_manifest.json").read_text())["Version"] == "2.0.0"
    run = subprocess.run(
        [sys.executable, str(dest / "main.py"), "--beats", "1"], capture_output=True, text=True, check=True
    )
    assert run.stdout == "hello 2.0.0 heartbeat 1\n"


def test_no_version_anywhere_is_refused(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    value = json.loads((app_dir / "app_manifest.json").read_text())
    del value["Version"]
    (app_dir / "app_manifest.json").write_text(json.dumps(value))
    with pytest.raises(ImageBuildError, match="--version"):
        build_app_image(app_dir, tmp_path / "x.img", key)
    with pytest.raises(ImageBuildError, match="semantic version"):
        build_app_image(app_dir, tmp_path / "x.img", key, version="one")
    assert not (tmp_path / "x.img").exists()


def test_invalid_manifest_lists_every_error(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    (app_dir / "app_manifest.json").write_bytes(
        manifest_bytes(Name="", Capabilities={"AllowedTcpServerPorts": [70000]})
    )
    with pytest.raises(ManifestError) as info:
        build_app_image(app_dir, tmp_path / "x.img", key)
    assert [i.path for i in info.value.errors] == ["$.Name", "$.Capabilities.AllowedTcpServerPorts[0]"]
    assert not (tmp_path / "x.img").exists()


def test_missing_entry_point_or_manifest(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    (app_dir / "main.py").unlink()
    with pytest.raises(ManifestError, match=r"\$\.EntryPoint"):
        build_app_image(app_dir, tmp_path / "x.img", key)
    (app_dir / "app_manifest.json").unlink()
    with pytest.raises(ImageBuildError, match="cannot read"):
        build_app_image(app_dir, tmp_path / "x.img", key)


def test_symlinks_and_special_files_are_refused(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    (app_dir / "link").symlink_to("/etc/passwd")
    with pytest.raises(ImageBuildError, match="regular file"):
        build_app_payload(app_dir)
    (app_dir / "link").unlink()
    (app_dir / "dirlink").symlink_to(tmp_path)
    with pytest.raises(ImageBuildError, match="symlink"):
        build_app_payload(app_dir)
    (app_dir / "dirlink").unlink()
    (app_dir / "bad name!").write_text("x")
    with pytest.raises(ImageBuildError, match="plain file names"):
        build_app_payload(app_dir)


def test_size_bounds_when_building(app_dir: Path) -> None:
    (app_dir / "big.bin").write_bytes(b"x" * 2048)
    with pytest.raises(ImageBuildError, match="size bounds"):
        build_app_payload(app_dir, limits=AppArchiveLimits(max_member_bytes=1024))
    with pytest.raises(ImageBuildError, match="more than 2 files"):
        build_app_payload(app_dir, limits=AppArchiveLimits(max_members=2))


def test_other_key_is_refused_by_verification(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    result = build_app_image(app_dir, tmp_path / "a.img", key)
    with result.path.open("rb") as stream, pytest.raises(ImageSignatureError):
        verify_image(stream, [generate_private_key().public_key()])


# -- evil archives: each is a validly signed image whose payload is hostile ------------------


def _member(archive: tarfile.TarFile, name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    else:
        info.linkname = "/etc/passwd"
        archive.addfile(info)


def _evil_image(
    path: Path, key: PrivateKey, fill: Callable[[tarfile.TarFile], None], *, version: str = "1.0.0"
) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        fill(archive)
    with path.open("wb") as out:
        build_image(
            out,
            io.BytesIO(buffer.getvalue()),
            image_type=ImageType.APP,
            component_id=CID,
            version=version,
            security_version=1,
            key=key,
        )
    return path


def _manifest_first(archive: tarfile.TarFile) -> None:
    _member(archive, "app_manifest.json", manifest_bytes())


EVIL: dict[str, tuple[Callable[[tarfile.TarFile], None], str]] = {
    "dotdot": (lambda a: (_manifest_first(a), _member(a, "../evil.py")), "unsafe path"),
    "absolute": (lambda a: (_manifest_first(a), _member(a, "/tmp/evil.py")), "unsafe path"),
    "nested-dotdot": (lambda a: (_manifest_first(a), _member(a, "lib/../../evil")), "unsafe path"),
    "symlink": (lambda a: (_manifest_first(a), _member(a, "main.py", kind=tarfile.SYMTYPE)), "not a regular file"),
    "hardlink": (lambda a: (_manifest_first(a), _member(a, "main.py", kind=tarfile.LNKTYPE)), "not a regular file"),
    "directory": (lambda a: (_manifest_first(a), _member(a, "lib", kind=tarfile.DIRTYPE)), "not a regular file"),
    "device": (lambda a: (_manifest_first(a), _member(a, "dev", kind=tarfile.CHRTYPE)), "not a regular file"),
    "manifest-not-first": (lambda a: (_member(a, "main.py"), _manifest_first(a)), "start with its manifest"),
    "duplicate": (
        lambda a: (_manifest_first(a), _member(a, "main.py"), _member(a, "main.py")),
        "duplicate path",
    ),
    "file-over-dir": (
        lambda a: (_manifest_first(a), _member(a, "main.py"), _member(a, "lib"), _member(a, "lib/x")),
        "duplicate path",
    ),
    "no-entry-point": (lambda a: (_manifest_first(a), _member(a, "other.py")), "entry point"),
    "invalid-manifest": (lambda a: _member(a, "app_manifest.json", b'{"Name": 1}'), "manifest in the image"),
    "other-component": (
        lambda a: _member(a, "app_manifest.json", manifest_bytes(ComponentId="0c5d4f2e-1b6a-4c57-9a2e-3f1d2b7a9e10")),
        "does not match the image header",
    ),
    "other-version": (
        lambda a: _member(a, "app_manifest.json", manifest_bytes(Version="9.9.9")),
        "does not match the image header",
    ),
    "not-a-tar": (lambda a: None, "app archive is empty"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_evil_archives_are_refused_and_leave_nothing(tmp_path: Path, key: PrivateKey, case: str) -> None:
    fill, message = EVIL[case]
    image = _evil_image(tmp_path / "evil.img", key, fill)
    with image.open("rb") as stream:
        verify_image(stream, [key.public_key()])  # the signature is fine: the archive is what is hostile
    apps = tmp_path / "apps"
    dest = apps / "1.0.0"
    dest.mkdir(parents=True)
    (dest / "keep").write_text("old version")
    with pytest.raises(ImageArchiveError, match=message):
        unpack_app_payload(image, dest)
    assert sorted(p.name for p in apps.iterdir()) == ["1.0.0"]  # no staging directory left
    assert (dest / "keep").read_text() == "old version"
    assert not (tmp_path / "evil.py").exists()
    assert not Path("/tmp/evil.py").exists()


def test_unpack_bounds(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    (app_dir / "big.bin").write_bytes(b"x" * 4096)
    image = build_app_image(app_dir, tmp_path / "a.img", key).path
    with pytest.raises(ImageArchiveError, match="size bounds"):
        unpack_app_payload(image, tmp_path / "d1", limits=AppArchiveLimits(max_member_bytes=1024))
    with pytest.raises(ImageArchiveError, match="more than 2 members"):
        unpack_app_payload(image, tmp_path / "d2", limits=AppArchiveLimits(max_members=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.img", "hello"]


def test_payload_changed_after_verification_installs_nothing(tmp_path: Path, app_dir: Path, key: PrivateKey) -> None:
    image = build_app_image(app_dir, tmp_path / "a.img", key).path
    data = bytearray(image.read_bytes())
    index = data.rindex(b"heartbeat")
    data[index] ^= 0x01
    image.write_bytes(bytes(data))
    with pytest.raises(ImageArchiveError, match="changed since it was verified"):
        unpack_app_payload(image, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_an_os_image_is_not_an_app(tmp_path: Path, key: PrivateKey) -> None:
    image = build_os_image(tmp_path / "os.img", "1.0.0", 1, key).path
    with pytest.raises(ImageArchiveError, match="not an app image"):
        unpack_app_payload(image, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
