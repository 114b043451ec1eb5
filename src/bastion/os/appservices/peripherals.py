"""Peripheral operations: GPIO, UART, I2C, SPI, ADC and PWM, each only as the manifest declares.

The choke point refuses an app whose manifest lacks the capability at all
(``Gpio``, ``Uart``, ``I2cMaster``, ``SpiMaster``, ``Adc``, ``Pwm``); here each
request's peripheral is resolved through the chip model (a number, a raw name
such as ``ISU0``, or a ``$NAME`` of the hardware definition) and must be one the
manifest declares, or the request is denied naming the capability (and
recorded). Installs already made ownership exclusive
(:mod:`bastion.os.apps.claims`); at run time an app must open a peripheral
before it uses it, and one in use by another app is busy.

Every op is ``realtime=True``: a real-time app may use its peripherals.

Operations (``id`` is the peripheral as the app names it)::

    gpio.open   {id, mode: input|output, value}     gpio.set {id, value}
    gpio.get    {id} -> {value}                     gpio.close {id}
    uart.open   {id, baud_rate} -> {isu}, fd        (a SOCK_STREAM end; close it to release)
    i2c.open    {id}      i2c.transfer {id, address, write_b64, read} -> {data_b64}      i2c.close {id}
    spi.open    {id}      spi.transfer {id, chip_select, write_b64, read} -> {data_b64}  spi.close {id}
    adc.open    {id} -> {channels, bits, reference_mv}    adc.sample {id, channel} -> {value}   adc.close {id}
    pwm.open    {id} -> {channels}    pwm.apply {id, channel, period_ns, duty_ns, polarity, enabled}   pwm.close {id}
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bastion.hw.bus import MAX_TRANSFER_BYTES
from bastion.hw.chipmodel import Peripheral, PeripheralType
from bastion.hw.errors import BusError, HwError, PeripheralError, StateCorruptError, UnknownPeripheralError
from bastion.hw.peripherals import GPIO_MODES, MAX_PWM_PERIOD_NS, PWM_POLARITIES, Board, PwmState
from bastion.hw.uart import UartBridge, UartLimits
from bastion.os.apps.claims import declared_peripherals
from bastion.os.appservices.registry import (
    AppContext,
    Args,
    BadRequestError,
    DeniedError,
    NotFoundError,
    Operation,
    Reply,
    UnavailableError,
    arg_b64,
    arg_int,
    arg_str,
    b64,
)

__all__ = ["MAX_BAUD_RATE", "OPERATIONS", "PeripheralService"]

#: Bound on a requested UART baud rate (recorded, not emulated).
MAX_BAUD_RATE = 4_000_000
#: Bound on a peripheral name in a request.
_MAX_ID_CHARS = 64

_log = logging.getLogger("bastion.os.appservices.peripherals")


@dataclass
class _Opened:
    peripheral: Peripheral
    bridge: UartBridge | None = None


@dataclass
class PeripheralService:
    """The chip's peripherals as the OS serves them to apps.

    Args:
        board: the peripheral state (``DEV/periph``).
        uart_limits: bounds of each open UART.
    """

    board: Board
    uart_limits: UartLimits = field(default_factory=UartLimits)
    _open: dict[str, dict[str, _Opened]] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def declared(self, ctx: AppContext, kind: PeripheralType, value: object) -> Peripheral:
        """The peripheral ``value`` names, if the app's manifest declares it.

        Raises:
            DeniedError: it does not exist on this chip or is not declared (names the capability).
        """
        try:
            peripheral = self.board.model.resolve(kind, value)
        except UnknownPeripheralError as exc:
            raise DeniedError(f"{kind.value} {value} is not declared: {exc}", capability=kind.value) from None
        if peripheral not in declared_peripherals(ctx.manifest, self.board.model):
            raise DeniedError(
                f"{peripheral.label} is not declared in the manifest's {kind.value}", capability=kind.value
            )
        return peripheral

    def open(self, ctx: AppContext, peripheral: Peripheral, bridge: UartBridge | None = None) -> None:
        """Mark ``peripheral`` open for the app.

        Raises:
            UnavailableError: another app (or this one, for a UART) has it open.
        """
        with self._lock:
            self._reap()
            for owner, opened in self._open.items():
                for entry in opened.values():
                    same_app = owner == ctx.component_id and entry.peripheral == peripheral
                    if entry.peripheral.claims & peripheral.claims and not (same_app and bridge is None):
                        raise UnavailableError(f"{peripheral.label} is already open")
            self._open.setdefault(ctx.component_id, {})[peripheral.label] = _Opened(peripheral, bridge)

    def require_open(self, ctx: AppContext, peripheral: Peripheral) -> None:
        """Raises :class:`BadRequestError` unless the app opened ``peripheral``."""
        with self._lock:
            if peripheral.label not in self._open.get(ctx.component_id, {}):
                raise BadRequestError(f"{peripheral.label} is not open (open it first)")

    def close_one(self, ctx: AppContext, peripheral: Peripheral) -> None:
        """Mark ``peripheral`` closed for the app (stopping a UART's bridge)."""
        with self._lock:
            entry = self._open.get(ctx.component_id, {}).pop(peripheral.label, None)
        if entry is not None and entry.bridge is not None:
            entry.bridge.close()

    def _reap(self) -> None:
        """Forget UARTs whose app end was closed (the app closed its fd)."""
        for opened in self._open.values():
            for label, entry in list(opened.items()):
                if entry.bridge is not None and not entry.bridge.alive:
                    entry.bridge.close()
                    del opened[label]

    def opened(self, component_id: str) -> list[str]:
        """What an app has open (``Gpio 8``, ``Uart ISU0``)."""
        with self._lock:
            self._reap()
            return sorted(self._open.get(component_id, {}))

    def release(self, component_id: str) -> None:
        """Release everything an app holds (its app stopped): UARTs closed, pins and PWM channels freed."""
        with self._lock:
            opened = self._open.pop(component_id, {})
        for entry in opened.values():
            if entry.bridge is not None:
                entry.bridge.close()
        try:
            self.board.release(component_id)
        except (HwError, OSError) as exc:
            _log.warning("cannot release the peripherals of %s: %s", component_id, exc)

    def app_stopped(self, component_id: str) -> None:
        """The app manager's hook: an app's run ended, so its peripherals are released."""
        self.release(component_id)

    def close(self) -> None:
        """Release every app's peripherals (OS exit)."""
        with self._lock:
            owners = list(self._open)
        for owner in owners:
            self.release(owner)


@contextlib.contextmanager
def _hardware() -> Iterator[None]:
    """Map emulated-hardware failures to the app's error codes."""
    try:
        yield
    except BusError as exc:
        raise NotFoundError(str(exc)) from None
    except UnknownPeripheralError as exc:
        raise BadRequestError(str(exc)) from None
    except StateCorruptError as exc:
        _log.error("peripheral state: %s", exc)
        raise UnavailableError("the peripheral state is unreadable") from None
    except PeripheralError as exc:
        raise BadRequestError(str(exc)) from None
    except OSError as exc:
        _log.error("peripheral state: %s", exc)
        raise UnavailableError("the peripheral cannot be reached") from None


def _ref(args: Args) -> int | str:
    value = args.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS:
        return value
    raise BadRequestError("argument 'id' must be a peripheral number or name")


def _target(ctx: AppContext, args: Args, kind: PeripheralType, *, opened: bool = True) -> Peripheral:
    service = ctx.service(PeripheralService)
    peripheral = service.declared(ctx, kind, _ref(args))
    if opened:
        service.require_open(ctx, peripheral)
    return peripheral


def _closer(kind: PeripheralType) -> Callable[[AppContext, Args], Reply]:
    def close(ctx: AppContext, args: Args) -> Reply:
        peripheral = _target(ctx, args, kind)
        service = ctx.service(PeripheralService)
        service.close_one(ctx, peripheral)
        with _hardware():
            if kind is PeripheralType.GPIO:
                service.board.gpio.release(owner=ctx.component_id, pin=int(peripheral.value))
            elif kind is PeripheralType.PWM:
                service.board.pwm.release(owner=ctx.component_id, controller=str(peripheral.value))
        return Reply({"closed": peripheral.label})

    return close


# -- GPIO -----------------------------------------------------------------------------


def _gpio_open(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.GPIO, opened=False)
    mode = arg_str(args, "mode", max_chars=8)
    if mode not in GPIO_MODES:
        raise BadRequestError(f"mode must be one of {GPIO_MODES}")
    value = arg_int(args, "value", low=0, high=1, default=0)
    service = ctx.service(PeripheralService)
    service.open(ctx, peripheral)
    with _hardware():
        service.board.gpio.open(int(peripheral.value), mode, value, owner=ctx.component_id)
    return Reply({"pin": peripheral.value, "mode": mode})


def _gpio_set(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.GPIO)
    value = arg_int(args, "value", low=0, high=1)
    with _hardware():
        ctx.service(PeripheralService).board.gpio.write(int(peripheral.value), value, owner=ctx.component_id)
    return Reply({"value": value})


def _gpio_get(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.GPIO)
    with _hardware():
        return Reply({"value": ctx.service(PeripheralService).board.gpio.read(int(peripheral.value))})


# -- UART -----------------------------------------------------------------------------


def _uart_open(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.UART, opened=False)
    baud = arg_int(args, "baud_rate", low=300, high=MAX_BAUD_RATE, default=115200)
    service = ctx.service(PeripheralService)
    os_end, app_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    bridge = UartBridge(service.board.uart_socket(str(peripheral.value)), os_end, service.uart_limits)
    try:
        service.open(ctx, peripheral, bridge)
    except BaseException:
        bridge.close()
        app_end.close()
        raise
    try:
        bridge.start()
    except OSError as exc:
        service.close_one(ctx, peripheral)
        app_end.close()
        _log.error("cannot serve %s: %s", peripheral.label, exc)
        raise UnavailableError(f"{peripheral.label} cannot be served") from None
    return Reply({"isu": peripheral.value, "baud_rate": baud}, fds=[app_end.detach()])


# -- I2C and SPI ----------------------------------------------------------------------


def _opener(kind: PeripheralType) -> Callable[[AppContext, Args], Reply]:
    def open_(ctx: AppContext, args: Args) -> Reply:
        peripheral = _target(ctx, args, kind, opened=False)
        service = ctx.service(PeripheralService)
        service.open(ctx, peripheral)
        result: dict[str, object] = {"id": peripheral.value}
        block = peripheral.block
        if kind is PeripheralType.ADC and block is not None:
            model = service.board.model
            result.update(channels=block.channels, bits=model.adc_bits, reference_mv=model.adc_reference_mv)
        elif kind is PeripheralType.PWM and block is not None:
            result.update(channels=block.channels)
        elif kind is PeripheralType.SPI:
            result.update(chip_selects=service.board.model.spi_chip_selects)
        return Reply(result)

    return open_


def _i2c_transfer(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.I2C)
    address = arg_int(args, "address", low=0, high=0x7F)
    return _transfer(ctx, args, PeripheralType.I2C, str(peripheral.value), address)


def _spi_transfer(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.SPI)
    chip_select = arg_int(args, "chip_select", low=0, high=15, default=0)
    return _transfer(ctx, args, PeripheralType.SPI, str(peripheral.value), chip_select)


def _transfer(ctx: AppContext, args: Args, kind: PeripheralType, isu: str, where: int) -> Reply:
    write = arg_b64(args, "write", max_bytes=MAX_TRANSFER_BYTES) if "write_b64" in args else b""
    read = arg_int(args, "read", low=0, high=MAX_TRANSFER_BYTES, default=0)
    if not write and not read:
        raise BadRequestError("a transfer writes or reads at least one byte")
    board = ctx.service(PeripheralService).board
    bus = board.i2c if kind is PeripheralType.I2C else board.spi
    with _hardware():
        data = bus.transfer(isu, where, write, read)
    return Reply({"data_b64": b64(data), "written": len(write)})


# -- ADC and PWM ----------------------------------------------------------------------


def _adc_sample(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.ADC)
    channel = arg_int(args, "channel", low=0, high=63)
    with _hardware():
        return Reply({"value": ctx.service(PeripheralService).board.adc.read(str(peripheral.value), channel)})


def _pwm_apply(ctx: AppContext, args: Args) -> Reply:
    peripheral = _target(ctx, args, PeripheralType.PWM)
    channel = arg_int(args, "channel", low=0, high=63)
    period = arg_int(args, "period_ns", low=1, high=MAX_PWM_PERIOD_NS)
    duty = arg_int(args, "duty_ns", low=0, high=period)
    polarity = arg_str(args, "polarity", max_chars=16, optional=True) or "normal"
    if polarity not in PWM_POLARITIES:
        raise BadRequestError(f"polarity must be one of {PWM_POLARITIES}")
    enabled = args.get("enabled", True)
    if not isinstance(enabled, bool):
        raise BadRequestError("argument 'enabled' must be true or false")
    state = PwmState(period, duty, polarity, enabled)
    with _hardware():
        ctx.service(PeripheralService).board.pwm.apply(str(peripheral.value), channel, state, owner=ctx.component_id)
    return Reply({"channel": channel, "enabled": enabled})


_G, _U, _I, _S, _A, _P = (
    PeripheralType.GPIO,
    PeripheralType.UART,
    PeripheralType.I2C,
    PeripheralType.SPI,
    PeripheralType.ADC,
    PeripheralType.PWM,
)

OPERATIONS = (
    Operation("gpio.open", _gpio_open, capability="Gpio", realtime=True),
    Operation("gpio.set", _gpio_set, capability="Gpio", realtime=True),
    Operation("gpio.get", _gpio_get, capability="Gpio", realtime=True),
    Operation("gpio.close", _closer(_G), capability="Gpio", realtime=True),
    Operation("uart.open", _uart_open, capability="Uart", realtime=True),
    Operation("uart.close", _closer(_U), capability="Uart", realtime=True),
    Operation("i2c.open", _opener(_I), capability="I2cMaster", realtime=True),
    Operation("i2c.transfer", _i2c_transfer, capability="I2cMaster", realtime=True),
    Operation("i2c.close", _closer(_I), capability="I2cMaster", realtime=True),
    Operation("spi.open", _opener(_S), capability="SpiMaster", realtime=True),
    Operation("spi.transfer", _spi_transfer, capability="SpiMaster", realtime=True),
    Operation("spi.close", _closer(_S), capability="SpiMaster", realtime=True),
    Operation("adc.open", _opener(_A), capability="Adc", realtime=True),
    Operation("adc.sample", _adc_sample, capability="Adc", realtime=True),
    Operation("adc.close", _closer(_A), capability="Adc", realtime=True),
    Operation("pwm.open", _opener(_P), capability="Pwm", realtime=True),
    Operation("pwm.apply", _pwm_apply, capability="Pwm", realtime=True),
    Operation("pwm.close", _closer(_P), capability="Pwm", realtime=True),
)
