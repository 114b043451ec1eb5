"""Operations every app has: who am I, and a liveness ping (the benchmark's round trip)."""

from __future__ import annotations

from bastion.os.appservices.registry import AppContext, Args, Operation, Reply

__all__ = ["OPERATIONS"]


def _whoami(ctx: AppContext, args: Args) -> Reply:
    del args
    return Reply(
        {
            "component_id": ctx.component_id,
            "version": ctx.version,
            "application_type": ctx.manifest.application_type,
        }
    )


def _ping(ctx: AppContext, args: Args) -> Reply:
    del ctx
    return Reply({"echo": args.get("echo")})


OPERATIONS = (
    Operation("app.whoami", _whoami, capability=None, realtime=True),
    Operation("app.ping", _ping, capability=None, realtime=True),
)
