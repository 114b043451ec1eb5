"""OS image build: the real runtime, deterministic, and safe extraction."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.errors import ImageArchiveError, ImageBuildError
from bastion.images.os_build import OS_COMPONENT_ID, build_os_image, build_os_payload
from bastion.images.os_payload import (
    FAULT_FILE,
    MANIFEST_NAME,
    OsArchiveLimits,
    OsManifest,
    read_fault,
    read_os_manifest,
    runtime_is_intact,
    unpack_os_payload,
    unpack_os_stream,
)
from bastion.images.package import ImageType, build_image, verify_image


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key()


def test_build_verify_unpack(tmp_path: Path, key: PrivateKey) -> None:
    result = build_os_image(tmp_path / "os.img", "1.0.0", 3, key)
    with result.path.open("rb") as stream:
        header = verify_image(stream, [key.public_key()])
    assert header.image_type is ImageType.OS
    assert header.component_id == OS_COMPONENT_ID
    assert (header.version, header.security_version) == ("1.0.0", 3)
    assert result.measurement == hashlib.sha256(result.path.read_bytes()).digest()

    dest = tmp_path / "run" / "os"
    manifest = unpack_os_payload(result.path, dest)
    assert manifest.version == "1.0.0"
    assert (dest / "bastion" / "__init__.py").is_file()
    assert (dest / "bastion" / "os" / "__init__.py").is_file()
    assert (dest / "bastion" / "images" / "os_payload.py").is_file()
    assert not (dest / "bastion" / "service").exists()
    assert not (dest / "bastion" / "cli").exists()
    assert not list(dest.rglob("__pycache__"))
    assert all(p.suffix == ".py" for p in dest.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    assert runtime_is_intact(dest, manifest)
    assert read_fault(dest) is None
    with result.path.open("rb") as stream:
        assert read_os_manifest(stream) == manifest


def test_payload_is_deterministic() -> None:
    first, manifest = build_os_payload("2.0.0", 1)
    second, _ = build_os_payload("2.0.0", 1)
    assert first == second
    assert build_os_payload("2.0.1", 1)[0] != first
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        members = archive.getmembers()
    assert members[0].name == MANIFEST_NAME
    assert [m.name for m in members[1:]] == sorted(manifest.files)
    assert {(m.mtime, m.uid, m.gid, m.mode, m.uname) for m in members} == {(315532800, 0, 0, 0o644, "")}


def test_images_are_reproducible(tmp_path: Path, key: PrivateKey) -> None:
    a = build_os_image(tmp_path / "a.img", "1.0.0", 1, key)
    b = build_os_image(tmp_path / "b.img", "1.0.0", 1, key)
    assert a.header == b.header  # same payload digest, same signed fields
    # Deterministic signatures (RFC 6979) make the whole package byte-identical,
    # so anyone can rebuild a published OS and compare measurements.
    assert a.path.read_bytes() == b.path.read_bytes()
    assert a.measurement == b.measurement


def test_fault_build(tmp_path: Path, key: PrivateKey) -> None:
    result = build_os_image(tmp_path / "os.img", "1.0.0", 1, key, fault="fail-at-start")
    dest = tmp_path / "rt"
    manifest = unpack_os_payload(result.path, dest)
    assert manifest.fault == "fail-at-start"
    assert read_fault(dest) == "fail-at-start"
    with pytest.raises(ImageBuildError, match="unknown fault"):
        build_os_payload("1.0.0", 1, fault="explode")


def test_tampered_runtime_is_not_intact(tmp_path: Path, key: PrivateKey) -> None:
    result = build_os_image(tmp_path / "os.img", "1.0.0", 1, key)
    dest = tmp_path / "rt"
    manifest = unpack_os_payload(result.path, dest)
    (dest / "bastion" / "os" / "__pycache__").mkdir()
    (dest / "bastion" / "os" / "__pycache__" / "x.pyc").write_bytes(b"cache")
    assert runtime_is_intact(dest, manifest)
    (dest / "bastion" / "extra.py").write_text("print('evil')")
    assert not runtime_is_intact(dest, manifest)
    (dest / "bastion" / "extra.py").unlink()
    init = dest / "bastion" / "os" / "__init__.py"
    init.write_text(init.read_text() + "\n# changed\n")
    assert not runtime_is_intact(dest, manifest)
    # Unpacking again restores it.
    unpack_os_payload(result.path, dest)
    assert runtime_is_intact(dest, manifest)


def test_payload_changed_after_verification_installs_nothing(tmp_path: Path, key: PrivateKey) -> None:
    result = build_os_image(tmp_path / "os.img", "1.0.0", 1, key)
    data = bytearray(result.path.read_bytes())
    data[-700] ^= 0x01  # inside the tar's zero padding: the archive still parses
    dest = tmp_path / "rt"
    with pytest.raises(ImageArchiveError, match="changed since it was verified"):
        unpack_os_stream(io.BytesIO(bytes(data)), dest)
    assert not dest.exists()
    assert list(tmp_path.iterdir()) == [result.path]  # no staging directory left


# --- evil archives: each is a correctly signed OS image whose archive is hostile ---


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buffer.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _manifest(files: dict[str, bytes]) -> tuple[tarfile.TarInfo, bytes]:
    manifest = OsManifest("1.0.0", 1, {k: hashlib.sha256(v).hexdigest() for k, v in files.items()})
    return _file(MANIFEST_NAME, manifest.to_json())


def _image(key: PrivateKey, payload: bytes) -> io.BytesIO:
    out = io.BytesIO()
    build_image(
        out,
        io.BytesIO(payload),
        image_type=ImageType.OS,
        component_id=OS_COMPONENT_ID,
        version="1.0.0",
        security_version=1,
        key=key,
    )
    out.seek(0)
    return out


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, b""


def _hardlink(name: str, target: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, b""


def _dir(name: str) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, b""


EVIL = {
    "absolute path": [_manifest({}), _file("/tmp/evil.py")],
    "dot-dot": [_manifest({}), _file("bastion/../../evil.py")],
    "symlink": [_manifest({}), _symlink("bastion/link", "/etc")],
    "hardlink": [_manifest({}), _hardlink("bastion/link", "/etc/passwd")],
    "directory member": [_manifest({}), _dir("bastion")],
    "no manifest first": [_file("bastion/a.py"), _manifest({"bastion/a.py": b"x"})],
    "file not in manifest": [_manifest({}), _file("bastion/a.py")],
    "manifest lists a missing file": [_manifest({"bastion/a.py": b"x"})],
    "duplicate member": [_manifest({"bastion/a.py": b"x"}), _file("bastion/a.py"), _file("bastion/a.py")],
    "hidden name": [_manifest({".bashrc": b"x"}), _file(".bashrc")],
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_evil_archive_refused(tmp_path: Path, key: PrivateKey, case: str) -> None:
    image = _image(key, _tar(*EVIL[case]))
    dest = tmp_path / "run" / "os"
    with pytest.raises(ImageArchiveError):
        unpack_os_stream(image, dest)
    assert not dest.exists()
    assert list((tmp_path / "run").iterdir()) == []
    assert not (tmp_path / "evil.py").exists()


def test_archive_bounds(tmp_path: Path, key: PrivateKey) -> None:
    files = {f"bastion/m{i}.py": b"x" for i in range(5)}
    payload = _tar(_manifest(files), *(_file(name, data) for name, data in files.items()))
    with pytest.raises(ImageArchiveError, match="more than 3 members"):
        unpack_os_stream(_image(key, payload), tmp_path / "a", limits=OsArchiveLimits(max_members=3))
    big = {"bastion/big.py": b"y" * 5000}
    payload = _tar(_manifest(big), _file("bastion/big.py", big["bastion/big.py"]))
    with pytest.raises(ImageArchiveError, match="size bounds"):
        unpack_os_stream(_image(key, payload), tmp_path / "b", limits=OsArchiveLimits(max_member_bytes=4096))
    # Within bounds the same archive unpacks.
    unpack_os_stream(_image(key, payload), tmp_path / "c")
    assert (tmp_path / "c" / "bastion" / "big.py").read_bytes() == big["bastion/big.py"]


def test_not_an_archive(tmp_path: Path, key: PrivateKey) -> None:
    with pytest.raises(ImageArchiveError):
        unpack_os_stream(_image(key, b"this is not a tar archive" * 40), tmp_path / "x")


def test_fault_file_outside_known_faults_ignored(tmp_path: Path) -> None:
    (tmp_path / FAULT_FILE).write_text("rm -rf")
    assert read_fault(tmp_path) is None
