"""Attacks on the OS's record of the app: forging its sandbox report, flooding its event queue.

The in-sandbox launcher reports the layers it applied in one
``sandbox.hello``, sent before any app code runs; the OS accepts one, first.
The app ships a planted ``bastion`` package (``/app/bastion``) that would
send a forged hello if the launcher imported it. Refusals are recorded, but
the record stays bounded: a flood of refusals must not push older events
(another app's violation, a rollback) out of the queue.
"""

from __future__ import annotations

import bastion
from attacks import Context, Outcome, attack
from attacks.applibs_abuse import capability_ops
from bastion.applibs import RequestError, connection

__all__: list[str] = []

#: Requests of each kind the flood sends.
FLOOD_REQUESTS = 400
#: What the forged hello claims (a Landlock ABI that does not exist, seven seccomp filters).
FORGED_HELLO = {
    "landlock": {"abi": 99, "fs": True, "net": True, "scoped": ["forged"]},
    "rlimits": {"nproc": 1},
    "seccomp_filters": 7,
    "no_new_privs": True,
    "capabilities": 0,
    "uid": 0,
}


@attack("forge_hello", "own")
def forge_hello(ctx: Context) -> Outcome:
    """Rewrite the OS's record of its confinement with a hello of its own."""
    del ctx
    in_launcher = getattr(bastion, "FORGED", None)  # set by /app/bastion if the launcher imported it
    try:
        connection().call("sandbox.hello", FORGED_HELLO)
    except RequestError as exc:
        now = type(exc).__name__
    else:
        now = "accepted"
    detail = {"in_launcher": in_launcher, "now": now, "bastion_from": getattr(bastion, "__file__", None)}
    return Outcome(in_launcher != "accepted" and now != "accepted", now, detail)


@attack("applibs_flood", "own")
def applibs_flood(ctx: Context) -> Outcome:
    """Hundreds of refused requests of each kind, to flood the event queue (and wear the flash)."""
    del ctx
    ops = ["no.such.op", "sandbox.hello", *list(capability_ops())[:4]]
    refused = 0
    for _ in range(FLOOD_REQUESTS):
        for op in ops:
            try:
                connection().call(op, {})
            except RequestError:
                refused += 1
    return Outcome(None, "judged by the OS: its record stays bounded", {"refused": refused})
