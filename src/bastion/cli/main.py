"""Entry point of the ``bastion`` command."""

from __future__ import annotations

import importlib
import sys

import click

from bastion.cli.apps import app
from bastion.cli.output import CliError, report_error

__all__ = ["main"]

#: Modules that register commands on the groups in :mod:`bastion.cli.apps`.
_COMMAND_MODULES = (
    "bastion.cli.vendor_cmds",
    "bastion.cli.device_local_cmds",
    "bastion.cli.device_run_cmds",
    "bastion.cli.device_update_cmds",
    "bastion.cli.device_periph_cmds",
    "bastion.cli.fleet_cmds",
    "bastion.cli.os_cmds",
    "bastion.cli.service_cmds",
    "bastion.cli.tuf_cmds",
    "bastion.cli.demo_cmds",
    "bastion.cli.app_cmds",
    "bastion.cli.devmode_cmds",
    # Last: its `os publish` and `device show` replace fleet_cmds' (a later registration wins).
    "bastion.cli.fleet_update_cmds",
    "bastion.cli.appraisal_cmds",
)


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise


def main() -> None:
    """Run the CLI; library errors surface as one line with a hint, never a traceback."""
    _register()
    try:
        result = app(standalone_mode=False)
        # Outside standalone mode click returns the code of typer.Exit instead of exiting.
        if isinstance(result, int) and result != 0:
            sys.exit(result)
    except CliError as error:
        report_error(error)
        sys.exit(error.exit_code)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)


if __name__ == "__main__":
    main()
