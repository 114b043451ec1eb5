#!/usr/bin/env python3
"""Bastion sample high-level app: asks its real-time partner for a reading, and sets a PWM duty from it.

Each round it sends ``sample`` to ``partner-rt`` (its partner on a real-time
core), reads the ADC value from the answer, and sends back the PWM duty cycle
that follows it (0..full scale -> 0..100 %). The high-level app holds no
peripheral itself: the real-time app drives them. Both manifests list each
other in ``AllowedApplicationConnections``.

    python main.py [--rounds N] [--interval SECONDS]
"""

from __future__ import annotations

import argparse
import sys
import time

from bastion.applibs import application

PARTNER = "00586a70-76ce-461a-901e-e9294b6a8837"
#: The ADC's full scale on mt3620-emu (12 bits).
FULL_SCALE = 4095
#: How long to wait for the partner's answer.
REPLY_TIMEOUT_S = 5.0


def ask(text: str) -> str | None:
    """Send one request to the partner and wait for its answer."""
    application.send_message(PARTNER, text.encode())
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while time.monotonic() < deadline:
        message = application.receive_message(timeout=max(deadline - time.monotonic(), 0.0))
        if message is not None and message.sender == PARTNER:
            return message.data.decode("utf-8", "replace")
    return None


def main(argv: list[str] | None = None) -> int:
    """Run rounds until stopped (or for ``--rounds``)."""
    parser = argparse.ArgumentParser(description="Bastion high-level partner sample")
    parser.add_argument("--rounds", type=int, default=0, help="stop after N rounds (0: never)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between rounds")
    args = parser.parse_args(argv)
    rounds = 0
    while args.rounds <= 0 or rounds < args.rounds:
        rounds += 1
        reading = ask("sample")
        if reading is None or not reading.startswith("adc "):
            sys.stdout.write(f"partner-hl: no reading from the real-time app ({reading!r})\n")
        else:
            value = int(reading.split()[1])
            percent = min(value * 100 // FULL_SCALE, 100)
            sys.stdout.write(f"partner-hl: adc {value} -> {ask(f'duty {percent}')}\n")
        sys.stdout.flush()
        time.sleep(args.interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
