"""The bootloader image: a deterministic archive of the boot stage's and the monitor's code, plus the boot config.

The code in it must be complete: the boot stage and the monitor run from the
unpacked tree alone, with the host's ``bastion`` package off the path.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import bastion
from bastion.boot.bootloader_image import (
    build_bootloader_image,
    build_bootloader_payload,
    install_bootloader_runtime,
    read_boot_config,
)
from bastion.boot.config import (
    BOOT_CONFIG_FILE,
    BOOTLOADER_COMPONENT_ID,
    BOOTLOADER_LIMITS,
    BOOTLOADER_PACKAGES,
    BootConfig,
)
from bastion.boot.errors import BootConfigError, BootloaderVerificationError
from bastion.crypto.keys import PrivateKey, generate_private_key
from bastion.images.os_build import build_runtime_payload
from bastion.images.os_payload import BOOTLOADER_RUNTIME
from bastion.images.package import ImageHeader, ImageType, build_image, verify_image


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key()


@pytest.fixture(scope="module")
def config(key: PrivateKey) -> BootConfig:
    return BootConfig((key.public_key(),), trial_boot_limit=2, trial_timeout_s=30)


def _image(config: BootConfig, key: PrivateKey, source_root: Path | None = None) -> tuple[bytes, ImageHeader]:
    out = io.BytesIO()
    header = build_bootloader_image(out, config, key, version="1.0.0", security_version=1, source_root=source_root)
    return out.getvalue(), header


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory, config: BootConfig, key: PrivateKey) -> Path:
    image, header = _image(config, key)
    root = tmp_path_factory.mktemp("bl") / "bl"
    install_bootloader_runtime(image, header, root)
    return root


def test_payload_is_deterministic_and_holds_the_code_and_the_config(config: BootConfig, key: PrivateKey) -> None:
    first, manifest = build_bootloader_payload(config, version="1.0.0", security_version=1)
    second, _ = build_bootloader_payload(config, version="1.0.0", security_version=1)
    assert first == second
    # Same sources, configuration and key: byte-identical images, so the measurement can be rebuilt.
    assert _image(config, key)[0] == _image(config, key)[0]
    with tarfile.open(fileobj=io.BytesIO(first)) as archive:
        names = archive.getnames()
    assert names[0] == "bastion-bootloader.json"
    assert names[1:] == sorted(names[1:])
    assert set(names[1:]) == set(manifest.files)
    assert BOOT_CONFIG_FILE in names
    packages = {n.split("/")[1] for n in names if n.startswith("bastion/") and n.count("/") >= 2}
    assert packages == set(BOOTLOADER_PACKAGES)
    assert "bastion/__init__.py" in names
    assert not any(n.startswith(("bastion/os/", "bastion/cli/", "bastion/service/", "bastion/applibs/")) for n in names)
    assert (manifest.name, manifest.entry) == ("bastion-bootloader", "bastion.boot")
    assert json.loads(manifest.to_json())["files"][BOOT_CONFIG_FILE]


def test_image_verifies_under_the_boot_key_and_carries_the_config(config: BootConfig, key: PrivateKey) -> None:
    image, header = _image(config, key)
    assert verify_image(io.BytesIO(image), [key.public_key()], limits=BOOTLOADER_LIMITS) == header
    assert (header.image_type, header.component_id) == (ImageType.BOOTLOADER, BOOTLOADER_COMPONENT_ID)
    assert read_boot_config(image, header) == config
    assert len(image) < 1024 * 1024  # fits the bootloader partition


def test_unpacked_tree_runs_the_stage_and_the_monitor_without_the_host_package(unpacked: Path) -> None:
    # As the ROM starts them: `python -P`, PYTHONPATH = the unpacked tree; and the host's
    # package (editable install or not) is taken off sys.path, so a module missing from the
    # image fails here. Every module of the image is imported, the two entry points included.
    host = str(Path(bastion.__file__).resolve().parent.parent)
    probe = f"""
import importlib, pkgutil, sys
sys.path[:] = [p for p in sys.path if p != {host!r}]
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()]
import bastion
names = [m.name for m in pkgutil.walk_packages(bastion.__path__, "bastion.")]
for name in names:
    importlib.import_module(name)
import bastion.boot.__main__, bastion.monitor.__main__
loaded = sorted(n for n in sys.modules if n == "bastion" or n.startswith("bastion."))
outside = [n for n in loaded if not (sys.modules[n].__file__ or "").startswith({str(unpacked)!r})]
print(len(loaded), outside)
"""
    env = {"PYTHONPATH": str(unpacked), "PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == 0, done.stderr
    count, outside = done.stdout.split(maxsplit=1)
    assert outside.strip() == "[]"
    assert int(count) > 40
    for entry in ("bastion.boot", "bastion.monitor"):
        shown = subprocess.run(
            [sys.executable, "-P", "-m", entry, "--help"], env=env, capture_output=True, text=True, check=False
        )
        assert shown.returncode == 0, shown.stderr
    assert not list(unpacked.rglob("__pycache__"))


def test_a_legacy_bootloader_image_is_refused_with_the_way_out(config: BootConfig, key: PrivateKey) -> None:
    # Before this format the payload was the bare boot configuration.
    out = io.BytesIO()
    header = build_image(
        out,
        io.BytesIO(config.to_json()),
        image_type=ImageType.BOOTLOADER,
        component_id=BOOTLOADER_COMPONENT_ID,
        version="1.0.0",
        security_version=1,
        key=key,
        limits=BOOTLOADER_LIMITS,
    )
    with pytest.raises(BootloaderVerificationError, match="re-provision") as info:
        read_boot_config(out.getvalue(), header)
    assert info.value.check == "format"
    assert "bastion device manufacture" in info.value.reason


def test_an_archive_without_a_boot_config_is_refused(key: PrivateKey) -> None:
    payload, _ = build_runtime_payload(BOOTLOADER_RUNTIME, "1.0.0", 1, BOOTLOADER_PACKAGES)
    out = io.BytesIO()
    header = build_image(
        out,
        io.BytesIO(payload),
        image_type=ImageType.BOOTLOADER,
        component_id=BOOTLOADER_COMPONENT_ID,
        version="1.0.0",
        security_version=1,
        key=key,
        limits=BOOTLOADER_LIMITS,
    )
    with pytest.raises(BootloaderVerificationError, match=r"holds no 'boot-config\.json'") as info:
        read_boot_config(out.getvalue(), header)
    assert info.value.check == "archive"


def test_manifest_must_agree_with_the_signed_header(config: BootConfig, key: PrivateKey) -> None:
    payload, _ = build_bootloader_payload(config, version="1.0.0", security_version=1)
    out = io.BytesIO()
    header = build_image(
        out,
        io.BytesIO(payload),
        image_type=ImageType.BOOTLOADER,
        component_id=BOOTLOADER_COMPONENT_ID,
        version="2.0.0",
        security_version=1,
        key=key,
        limits=BOOTLOADER_LIMITS,
    )
    with pytest.raises(BootloaderVerificationError, match="disagrees with its signed header"):
        read_boot_config(out.getvalue(), header)


def test_boot_config_bounds_still_apply_inside_the_archive(key: PrivateKey) -> None:
    image, header = _image(BootConfig((key.public_key(),), trial_boot_limit=99), key)
    with pytest.raises(BootConfigError, match="trial_boot_limit is out of range"):
        read_boot_config(image, header)


def test_an_os_image_is_not_a_bootloader_archive(key: PrivateKey) -> None:
    from bastion.images.os_build import build_os_payload

    payload, _ = build_os_payload("1.0.0", 1)
    out = io.BytesIO()
    header = build_image(
        out,
        io.BytesIO(payload),
        image_type=ImageType.BOOTLOADER,
        component_id=BOOTLOADER_COMPONENT_ID,
        version="1.0.0",
        security_version=1,
        key=key,
    )
    with pytest.raises(BootloaderVerificationError) as info:
        read_boot_config(out.getvalue(), header)
    assert info.value.check == "archive"


def test_tampered_or_polluted_tree_is_unpacked_again(tmp_path: Path, config: BootConfig, key: PrivateKey) -> None:
    image, header = _image(config, key)
    root = tmp_path / "bl"
    install_bootloader_runtime(image, header, root)
    server = root / "bastion" / "monitor" / "server.py"
    original = server.read_bytes()
    inode = server.stat().st_ino
    install_bootloader_runtime(image, header, root)  # intact: reused
    assert server.stat().st_ino == inode
    server.write_bytes(original + b"\nimport os  # owned\n")
    install_bootloader_runtime(image, header, root)
    assert server.read_bytes() == original
    # A planted bytecode cache would run instead of the measured source: not intact either.
    cache = root / "bastion" / "monitor" / "__pycache__"
    cache.mkdir()
    (cache / "server.cpython-311.pyc").write_bytes(b"owned")
    install_bootloader_runtime(image, header, root)
    assert not cache.exists()
    (root / "bastion" / "extra.py").write_text("owned = True\n")
    install_bootloader_runtime(image, header, root)
    assert not (root / "bastion" / "extra.py").exists()
