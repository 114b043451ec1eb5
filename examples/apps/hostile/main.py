#!/usr/bin/env python3
"""Bastion's hostile app: tries to escape its sandbox in every way it knows, and says how each try went.

It is what the sandbox tests run (tests/unit/test_sandbox_hostile.py). Each
attack prints one JSON line on stdout, which the OS appends to the app's log::

    {"attack": "read_uds", "blocked": true, "how": "FileNotFoundError", "detail": {...}}

    python main.py --safe                      every attack that does not end the app
    python main.py --attack ptrace_attach      one attack (repeatable)
    python main.py --list                      the attacks, one "name group" per line

What the attacker knows of the host comes as options (a real one could guess
it): ``--dev`` the device directory, ``--os-pid``, ``--victim`` another app's
component ID, ``--port`` a loopback port and ``--abstract`` an abstract socket
name where the host listens. Attacks of the ``kill`` group end the app by
SIGSYS (the seccomp filter), so each needs its own start; see attacks/__init__.py.
It uses the standard library and ``bastion.applibs`` only.
"""

from __future__ import annotations

import argparse
import sys

from attacks import ATTACKS, Context, Outcome, report

# The order of the imports is the order of the safe run: the applibs attacks last,
# because a broken server would take the OS's answers away from what follows.
from attacks import files, procs, network, kernel, system, resources, record, peripherals, applibs_abuse  # noqa: F401, I001


def run(name: str, ctx: Context) -> Outcome:
    """Run one attack; a bug of the attack itself is reported, not raised."""
    try:
        return ATTACKS[name].run(ctx)
    except Exception as exc:  # noqa: BLE001 - report it and go on with the next attack
        return Outcome(None, f"the attack itself failed: {type(exc).__name__}: {exc}")


def main(argv: list[str] | None = None) -> int:
    """Run the attacks asked for."""
    parser = argparse.ArgumentParser(description="Bastion hostile app")
    parser.add_argument("--attack", action="append", default=[], help="run this attack (repeatable)")
    parser.add_argument("--safe", action="store_true", help="run every attack of the safe group")
    parser.add_argument("--list", action="store_true", help="list the attacks")
    parser.add_argument("--dev", default="", help="the device directory's host path")
    parser.add_argument("--os-pid", type=int, default=0, help="the OS process's host pid")
    parser.add_argument("--victim", default="", help="another app's component ID")
    parser.add_argument("--port", type=int, default=0, help="a loopback port where the host listens")
    parser.add_argument("--abstract", default="", help="an abstract unix socket name where the host listens")
    args = parser.parse_args(argv)
    if args.list:
        for attack in ATTACKS.values():
            sys.stdout.write(f"{attack.name} {attack.group}\n")
        return 0
    unknown = [name for name in args.attack if name not in ATTACKS]
    if unknown:
        parser.error(f"unknown attacks: {', '.join(unknown)}")
    names = list(args.attack) + ([a.name for a in ATTACKS.values() if a.group == "safe"] if args.safe else [])
    ctx = Context(args.dev, args.os_pid, args.victim, args.port, args.abstract)
    for name in names:
        report({"attack": name, "trying": True})
        outcome = run(name, ctx)
        report({"attack": name, "blocked": outcome.blocked, "how": outcome.how, "detail": outcome.detail})
    report({"done": True, "attacks": len(names)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
