"""Pin the public names of bastion.hw, bastion.boot and bastion.images (STYLE 12)."""

from __future__ import annotations

import bastion.boot
import bastion.hw
from bastion.boot import errors as boot_errors
from bastion.hw import errors as hw_errors
from bastion.images import errors as image_errors
from bastion.images import package


def test_hw_exports() -> None:
    assert set(bastion.hw.__all__) == {
        "PARTITION_SIZES", "BootState", "Chip", "Flash", "FuseBank", "FuseState",
        "Lifecycle", "OsTrng", "Partition", "Slot", "Trng",
    }  # fmt: skip


def test_boot_exports() -> None:
    assert set(bastion.boot.__all__) == {"BootError", "BootResult", "boot_device"}


def test_boot_stage_exports() -> None:
    from bastion.boot import bootloader_image, chain, handoff

    assert set(chain.__all__) == {
        "STAGE_ENV_ALLOWLIST", "STAGE_TIMEOUT_S", "boot_device", "run_bootloader_stage", "stage_env",
    }  # fmt: skip
    assert set(handoff.__all__) == {
        "HANDOFF_VERSION", "MAX_STAGE_INPUT_BYTES", "MAX_STAGE_REPLY_BYTES", "StageInput", "decode_stage_input",
        "decode_stage_reply", "encode_stage_error", "encode_stage_input", "encode_stage_result",
    }  # fmt: skip
    assert set(bootloader_image.__all__) == {
        "LEGACY_BOOTLOADER_HINT", "build_bootloader_image", "build_bootloader_payload",
        "install_bootloader_runtime", "read_boot_config",
    }  # fmt: skip


def test_package_exports() -> None:
    assert set(package.__all__) == {
        "FORMAT_VERSION", "MAGIC", "ImageHeader", "ImageLimits", "ImageType", "build_image",
        "inspect_image", "key_id", "measure_image", "measure_stream", "verify_image",
    }  # fmt: skip


def test_error_trees_have_one_root() -> None:
    for module, roots in (
        (hw_errors, (hw_errors.HwError,)),
        (image_errors, (image_errors.ImageError,)),
        (boot_errors, (boot_errors.BootError, boot_errors.ProvisioningError)),
    ):
        for name in module.__all__:
            assert issubclass(getattr(module, name), roots), name
