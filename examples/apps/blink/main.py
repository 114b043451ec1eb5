#!/usr/bin/env python3
"""Bastion sample app: blink $SAMPLE_LED; each press of $SAMPLE_BUTTON_1 changes the blink rate.

Azure Sphere's Blink sample, on Bastion's applibs. The LED and the button are
named through the chip model's hardware definition (on ``mt3620-emu``, GPIO 8
and GPIO 12). Watch and press them from outside while the device runs::

    bastion device gpio --dir DEV                 # the LED's level and owner
    bastion device gpio --dir DEV --set 12=0      # press the button (it reads 0 while pressed)
    bastion device gpio --dir DEV --set 12=1      # release it

    python main.py [--toggles N]

``--toggles N`` stops after N LED changes (default: run until stopped).
"""

from __future__ import annotations

import argparse
import sys
import time

from bastion.applibs import gpio

#: Blink half-periods in seconds; a button press moves to the next one.
INTERVALS = (0.5, 0.25, 0.125)
#: How often the button is read.
BUTTON_POLL_S = 0.02


def main(argv: list[str] | None = None) -> int:
    """Blink until stopped (or for ``--toggles`` changes)."""
    parser = argparse.ArgumentParser(description="Bastion blink sample")
    parser.add_argument("--toggles", type=int, default=0, help="stop after N LED changes (0: never)")
    args = parser.parse_args(argv)
    led = gpio.open_as_output("$SAMPLE_LED", gpio.HIGH)
    button = gpio.open_as_input("$SAMPLE_BUTTON_1")
    level, index, toggles, was_pressed = gpio.HIGH, 0, 0, False
    next_toggle = time.monotonic() + INTERVALS[index]
    sys.stdout.write(f"blink: LED every {INTERVALS[index]} s\n")
    sys.stdout.flush()
    while args.toggles <= 0 or toggles < args.toggles:
        pressed = button.get_value() == gpio.LOW  # the board's buttons pull up; pressed reads low
        if pressed and not was_pressed:
            index = (index + 1) % len(INTERVALS)
            sys.stdout.write(f"blink: button pressed, LED every {INTERVALS[index]} s\n")
            sys.stdout.flush()
        was_pressed = pressed
        now = time.monotonic()
        if now >= next_toggle:
            level = gpio.LOW if level == gpio.HIGH else gpio.HIGH
            led.set_value(level)
            toggles += 1
            next_toggle = now + INTERVALS[index]
        time.sleep(BUTTON_POLL_S)
    led.close()
    button.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
