"""Exclusive peripherals and real-time cores, checked when the app store installs an app."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from _periph_apps import app_image, manifest

from bastion.hw.chipmodel import get_model
from bastion.os.apps.claims import Holder, allocate_core, check_peripherals
from bastion.os.apps.store import AppStore
from bastion.os.updates.errors import UpdateRefusedError

MT3620 = get_model("mt3620-emu")
A, B, C, D = (str(uuid.UUID(int=n)) for n in (0xA, 0xB, 0xC, 0xD))


def _install(store: AppStore, root: Path, cid: str, caps: dict[str, Any], **kw: Any) -> None:
    version = kw.pop("version", "1.0.0")
    store.install(app_image(root, cid, version, caps, **kw), component_id=cid, version=version)


def _refused(store: AppStore, root: Path, cid: str, caps: dict[str, Any], **kw: Any) -> UpdateRefusedError:
    with pytest.raises(UpdateRefusedError) as info:
        _install(store, root, cid, caps, **kw)
    assert store.get(cid) is None
    return info.value


def test_second_app_declaring_a_held_gpio_is_refused_naming_both(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    _install(store, tmp_path, A, {"Gpio": ["$SAMPLE_LED", 12]}, name="blink")
    error = _refused(store, tmp_path, B, {"Gpio": [8]}, name="other")
    assert error.reason == "peripheral"
    assert "Gpio 8" in str(error)
    assert f"app blink ({A})" in str(error)
    assert "GPIO8" in str(error)
    _install(store, tmp_path, B, {"Gpio": [9]}, name="other")  # a free pin is fine


def test_isu_roles_are_exclusive_across_apps(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    _install(store, tmp_path, A, {"Uart": ["ISU0"]}, name="serial")
    error = _refused(store, tmp_path, B, {"I2cMaster": ["ISU0"]})
    assert error.reason == "peripheral"
    assert "I2cMaster ISU0 conflicts with app serial" in str(error)
    assert "as Uart ISU0" in str(error)
    _install(store, tmp_path, B, {"I2cMaster": ["ISU1"]})


def test_blocks_share_pins_with_gpios(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    _install(store, tmp_path, A, {"Gpio": [26]}, name="pin")
    error = _refused(store, tmp_path, B, {"Uart": ["$SAMPLE_UART_LOOPBACK"]})
    assert "Uart ISU0 conflicts with app pin" in str(error)
    assert "GPIO26" in str(error)
    error = _refused(store, tmp_path, C, {"Pwm": ["PWM-CONTROLLER-2"], "Gpio": [8]})
    assert "both need GPIO8" in str(error)  # one app overlapping itself


def test_one_app_cannot_use_an_isu_in_two_roles(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    error = _refused(store, tmp_path, A, {"Uart": ["ISU1"], "SpiMaster": ["ISU1"]})
    assert "Uart ISU1 and SpiMaster ISU1 both need ISU1" in str(error)


@pytest.mark.parametrize(
    ("caps", "message"),
    [
        ({"Gpio": [200]}, "no GPIO 200"),
        ({"Gpio": ["$NO_SUCH_LED"]}, "not in the mt3620-emu hardware definition"),
        ({"Gpio": ["$SAMPLE_UART_LOOPBACK"]}, "is a Uart, not a Gpio"),
        ({"Uart": ["ISU9"]}, "has no Uart ISU9"),
        ({"Adc": ["ADC-CONTROLLER-3"]}, "has no Adc"),
        ({"Pwm": [0]}, "has no Pwm 0"),
    ],
)
def test_peripherals_must_exist_on_the_chip_model(tmp_path: Path, caps: dict[str, Any], message: str) -> None:
    error = _refused(AppStore(tmp_path / "apps"), tmp_path, A, caps)
    assert error.reason == "peripheral"
    assert message in str(error)


def test_an_update_of_the_same_app_keeps_its_peripherals(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    _install(store, tmp_path, A, {"Gpio": [8]})
    _install(store, tmp_path, A, {"Gpio": [8, 9]}, version="1.1.0")
    store.remove(A)
    _install(store, tmp_path, B, {"Gpio": [8]})  # freed by the removal


def test_the_model_decides_what_exists(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps", model=get_model("tiny-emu"))
    error = _refused(store, tmp_path, A, {"Uart": ["ISU2"]})
    assert "tiny-emu chip has no Uart ISU2 (it has ISU0)" in str(error)


def test_realtime_apps_get_cores_and_a_third_is_refused_naming_the_cores(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    _install(store, tmp_path, A, {"Gpio": [9]}, app_type="RealTimeCapable", name="rt-one")
    _install(store, tmp_path, B, {}, app_type="RealTimeCapable", name="rt-two")
    _install(store, tmp_path, C, {"Gpio": [10]}, name="high-level")  # not real-time: no core needed
    assert store.cores() == {A: 0, B: 1}
    assert store.core_of(C) is None
    error = _refused(store, tmp_path, D, {}, app_type="RealTimeCapable")
    assert error.reason == "core"
    assert f"core 0 runs app rt-one ({A})" in str(error)
    assert f"core 1 runs app rt-two ({B})" in str(error)
    assert "has 2" in str(error)
    _install(store, tmp_path, A, {"Gpio": [9]}, app_type="RealTimeCapable", name="rt-one", version="1.1.0")
    assert store.core_of(A) == 0  # an update keeps its core
    store.remove(A)
    _install(store, tmp_path, D, {}, app_type="RealTimeCapable", name="rt-three")
    assert store.cores() == {B: 1, D: 0}


def test_core_count_is_per_model(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps", model=get_model("tiny-emu"))
    _install(store, tmp_path, A, {}, app_type="RealTimeCapable")
    assert _refused(store, tmp_path, B, {}, app_type="RealTimeCapable").reason == "core"


def test_lost_core_record_is_rebuilt(tmp_path: Path) -> None:
    store = AppStore(tmp_path / "apps")
    _install(store, tmp_path, A, {}, app_type="RealTimeCapable")
    _install(store, tmp_path, B, {}, app_type="RealTimeCapable")
    (tmp_path / "apps" / ".cores.json").write_text("{not json")
    cores = store.cores()
    assert sorted(cores.values()) == [0, 1]
    assert set(cores) == {A, B}


def test_pure_checks() -> None:
    mine = manifest({"Gpio": ["$SAMPLE_BUTTON_1"]})
    other = Holder(A, "x", manifest({"Gpio": [12]}))
    with pytest.raises(UpdateRefusedError, match="Gpio 12 conflicts with app x"):
        check_peripherals(mine, MT3620, [other])
    assert [p.label for p in check_peripherals(mine, MT3620, [])] == ["Gpio 12"]
    rt = [Holder(A, "a", manifest({}, app_type="RealTimeCapable"))]
    assert allocate_core(B, MT3620, {A: 0}, rt) == 1
    assert allocate_core(B, MT3620, {A: 0, B: 0}, rt) == 1  # a stale record for a core in use is not kept
    assert allocate_core(A, MT3620, {A: 1}, rt) == 1
