#!/usr/bin/env python3
"""Bastion sample real-time app: samples an ADC channel and drives a PWM channel for its partner.

It runs on a real-time core (``ApplicationType: RealTimeCapable``), so it has
only its peripherals and messages with its partner, the high-level app
``partner-hl`` (Azure Sphere's IntercoreComms sample, with a job to do). It
answers two messages:

* ``sample`` -> ``adc <value>``: channel 0 of ADC-CONTROLLER-0;
* ``duty <percent>`` -> ``ok duty <percent>``: channel 0 of PWM-CONTROLLER-0
  at 1 kHz with that duty cycle.

Messages from any other app are ignored (the OS delivers only from partners
listed in both manifests, and names the sender). Watch it from outside::

    bastion device adc --dir DEV --set 0=3000     # the voltage it samples
    bastion device pwm --dir DEV                  # the duty cycle it drives
"""

from __future__ import annotations

import sys

from bastion.applibs import adc, application, pwm

PARTNER = "ca6f8848-7329-47ae-8dbb-09d8b47e5809"
ADC_CHANNEL = 0
PWM_CHANNEL = 0
#: 1 kHz.
PWM_PERIOD_NS = 1_000_000
#: How long one wait for a message lasts (the loop then waits again).
RECEIVE_TIMEOUT_S = 1.0


def answer(text: str, sensor: adc.Adc, output: pwm.Pwm) -> str:
    """The reply to one request from the partner."""
    if text == "sample":
        return f"adc {sensor.sample(ADC_CHANNEL)}"
    verb, _, value = text.partition(" ")
    if verb == "duty" and value.isdigit() and 0 <= int(value) <= 100:
        percent = int(value)
        output.apply(PWM_CHANNEL, period_ns=PWM_PERIOD_NS, duty_ns=PWM_PERIOD_NS * percent // 100)
        return f"ok duty {percent}"
    return f"error unknown request {text[:32]!r}"


def main() -> int:
    """Serve the partner until stopped."""
    sensor = adc.open("ADC-CONTROLLER-0")
    output = pwm.open("PWM-CONTROLLER-0")
    sys.stdout.write(f"partner-rt: {sensor.channels} ADC channels, {output.channels} PWM channels\n")
    sys.stdout.flush()
    while True:
        message = application.receive_message(timeout=RECEIVE_TIMEOUT_S)
        if message is None or message.sender != PARTNER:
            continue
        reply = answer(message.data.decode("utf-8", "replace"), sensor, output)
        application.send_message(PARTNER, reply.encode())


if __name__ == "__main__":
    sys.exit(main())
