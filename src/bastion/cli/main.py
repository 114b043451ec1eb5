"""Entry point of the ``bastion`` command."""

from __future__ import annotations

import importlib
import sys

import click
import typer

from bastion.cli.apps import app
from bastion.cli.output import CliError, err_console, report_error

__all__ = ["main"]

#: Modules that register commands on the groups in :mod:`bastion.cli.apps`.
_COMMAND_MODULES = (
    "bastion.cli.profile_cmds",
    "bastion.cli.vendor_cmds",
    "bastion.cli.device_local_cmds",
    "bastion.cli.device_run_cmds",
    "bastion.cli.device_update_cmds",
    "bastion.cli.device_periph_cmds",
    "bastion.cli.fleet_cmds",
    "bastion.cli.token_cmds",
    "bastion.cli.os_cmds",
    "bastion.cli.service_cmds",
    "bastion.cli.tuf_cmds",
    "bastion.cli.demo_cmds",
    "bastion.cli.app_cmds",
    "bastion.cli.devmode_cmds",
    # Last: its `os publish` and `device show` replace fleet_cmds' (a later registration wins).
    "bastion.cli.fleet_update_cmds",
    "bastion.cli.fleet_lifecycle_cmds",
    "bastion.cli.image_cmds",
    "bastion.cli.tenant_ca_cmds",
    "bastion.cli.appraisal_cmds",
    "bastion.cli.rollout_cmds",
    "bastion.cli.fleet_sim_cmds",
    "bastion.cli.error_report_cmds",
    "bastion.cli.fleet_health_cmds",
    "bastion.cli.os_blocklist_cmds",
)


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


#: Exit status of a usage error (unknown command, missing argument, bad option), as click uses.
USAGE_EXIT = 2


def _click_classes(name: str) -> tuple[type[Exception], ...]:
    """Click's exception class ``name``, from click and from the copy that typer >= 0.29 vendors.

    Typer 0.29 raises the classes of its own ``typer._click`` copy, which do not
    derive from click's; both are caught so that no usage error ends in a traceback.
    """
    found: list[type[Exception]] = [getattr(click.exceptions, name)]
    for probe in (typer.BadParameter, typer.Abort):
        found.extend(c for c in probe.__mro__ if c.__name__ == name and issubclass(c, Exception))
    return tuple(dict.fromkeys(found))


_USAGE_ERRORS = _click_classes("UsageError")
_CLICK_ERRORS = _click_classes("ClickException")
_ABORTS = _click_classes("Abort")


def _usage_line(exc: Exception) -> str:
    """One line: what was wrong, and the ``--help`` of the command that was being parsed."""
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    ctx = getattr(exc, "ctx", None)
    path = getattr(ctx, "command_path", None) or "bastion"
    hint = f"see `{path} --help`"
    if "--token" in message and path.endswith("login"):
        hint = "the token is never an argument: `bastion login --url URL` prompts for it, or pipe it with --token-stdin"
    return f"error: {' '.join(str(message).split())} ({hint})"


def main() -> None:
    """Run the CLI; errors surface as one line (with a hint), never a traceback.

    Usage errors (an unknown command, a missing argument, a bad option) exit 2.
    """
    _register()
    try:
        result = app(standalone_mode=False)
        # Outside standalone mode click returns the code of typer.Exit instead of exiting.
        if isinstance(result, int) and result != 0:
            sys.exit(result)
    except CliError as error:
        report_error(error)
        sys.exit(error.exit_code)
    except _USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            exc.show()  # type: ignore[attr-defined] # a bare group: its help is the answer
            sys.exit(USAGE_EXIT)
        err_console.print(_usage_line(exc), markup=False, highlight=False, soft_wrap=True)
        sys.exit(USAGE_EXIT)
    except _CLICK_ERRORS as exc:
        exc.show()  # type: ignore[attr-defined] # every ClickException has show()
        sys.exit(getattr(exc, "exit_code", 1))
    except _ABORTS:
        sys.exit(130)


if __name__ == "__main__":
    main()
