"""The partner examples in their sandboxes: a high-level app and its real-time partner, talking to drive a peripheral.

partner-hl asks partner-rt (``RealTimeCapable``, on real-time core 0) for an ADC
reading over AllowedApplicationConnections messages, and has it set a PWM duty
cycle from it. The ADC value is put on the channel from outside; the duty cycle
is read back from outside.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _sandbox_support import KEY, NOW, Device, install_app, make_device, wait_for

from bastion.hw.chipmodel import get_model
from bastion.hw.peripherals import Board
from bastion.images.app_build import build_app_image, load_app_manifest
from bastion.images.manifest import AppManifest
from bastion.os.appservices.device import capability_services
from bastion.os.appservices.peripherals import PeripheralService
from bastion.os.appservices.services import AppServices

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "apps"
HL, RT = EXAMPLES / "partner-hl", EXAMPLES / "partner-rt"
HL_ID, RT_ID = load_app_manifest(HL).component_id, load_app_manifest(RT).component_id
STRANGER = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"


@dataclass
class Bench:
    device: Device
    board: Board


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    board = Board.prepare(tmp_path / "periph", get_model("mt3620-emu"))
    services = AppServices()
    peripherals = PeripheralService(board)
    services.add(peripherals)
    holder: list[Device] = []

    def manifest_of(component_id: str) -> AppManifest | None:
        app = holder[0].store.get(component_id)
        return app.manifest if app is not None else None

    (tmp_path / "os-state").mkdir()
    capability_services(services, state_dir=tmp_path / "os-state", manifest_of=manifest_of, stop=threading.Event())
    device = make_device(tmp_path, services=services.mapping)
    holder.append(device)
    yield Bench(device, board)
    device.manager.stop_all()
    peripherals.close()


def _install(bench: Bench, app_dir: Path) -> None:
    image = bench.device.root / f"{app_dir.name}.img"
    result = build_app_image(app_dir, image, KEY)
    bench.device.store.install(image, component_id=result.header.component_id, version=result.header.version)


def test_high_level_and_real_time_partners_drive_the_pwm_from_the_adc(bench: Bench) -> None:
    _install(bench, RT)
    _install(bench, HL)
    bench.board.adc.set("ADC-CONTROLLER-0", 0, 3000)
    bench.device.manager.start_all(NOW)

    def duty() -> float | None:
        rows = [r for r in bench.board.pwm.snapshot() if (r["controller"], r["channel"]) == ("PWM-CONTROLLER-0", 0)]
        return rows[0]["duty_percent"] if rows else None

    wait_for(lambda: duty() == 73.0, timeout=30)  # 3000 of 4095 -> 73 %
    wait_for(lambda: "partner-hl: adc 3000 -> ok duty 73" in bench.device.log(HL_ID))
    bench.board.adc.set("ADC-CONTROLLER-0", 0, 1024)  # the potentiometer turns
    wait_for(lambda: duty() == 25.0, timeout=30)
    rt = bench.device.manager.layers(RT_ID)
    assert rt["realtime_core"] == 0
    assert rt["sandbox"] == "bubblewrap"
    assert "realtime_core" not in bench.device.manager.layers(HL_ID)
    assert bench.board.pwm.channels()[0].owner == RT_ID  # the real-time app drives it; the high-level app holds none
    assert bench.device.events_of("app_denied") == []


STRANGER_CODE = """
from bastion.applibs import application
try:
    application.send_message("00586a70-76ce-461a-901e-e9294b6a8837", b"duty 100")
except PermissionError as exc:
    print("denied", exc.capability, flush=True)
"""


def test_an_app_the_real_time_partner_does_not_list_cannot_reach_it(bench: Bench) -> None:
    _install(bench, RT)
    install_app(
        bench.device.root / "build",
        bench.device.store,
        STRANGER,
        STRANGER_CODE,
        capabilities={"AllowedApplicationConnections": [RT_ID]},  # one-way: partner-rt lists only partner-hl
    )
    bench.device.manager.start_all(NOW)
    wait_for(lambda: "denied AllowedApplicationConnections" in bench.device.log(STRANGER), timeout=30)
    assert bench.board.pwm.snapshot() == []
    assert any(e.component_id == STRANGER for e in bench.device.events_of("app_denied"))
