"""Global options and named logins: ``bastion --version``, ``--profile``, ``logout``, ``profile list|show|use``.

A profile is one saved login (service URL, token, CA bundle). A command uses
``--profile NAME`` (before the command), else ``$BASTION_PROFILE``, else the
current profile (``bastion profile use NAME``)::

    bastion login --profile staging --url https://staging.example:8443
    bastion --profile staging device list
    BASTION_PROFILE=staging bastion device list
    bastion logout --profile staging
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

import bastion
from bastion.cli._client import (
    DEFAULT_PROFILE,
    ProfileStore,
    config_path,
    load_profiles,
    parse_profile_name,
    save_profiles,
    select_profile,
)
from bastion.cli.apps import app, profile_app
from bastion.cli.output import JsonOption, console, emit_object, emit_table, fail

__all__ = ["logout_cmd", "profile_list_cmd", "profile_show_cmd", "profile_use_cmd", "root_callback"]

PROFILE_COLUMNS = ("current", "name", "url", "logged_in", "ca_file")
ProfileOption = Annotated[
    str | None, typer.Option("--profile", help="The profile to use (default: $BASTION_PROFILE, else the current one).")
]


def _print_version(value: bool) -> None:
    if value:
        console.print(f"bastion {bastion.__version__}", markup=False)
        raise typer.Exit


@app.callback()
def root_callback(
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            help="Use this saved login (see `bastion profile list`); also $BASTION_PROFILE.",
        ),
    ] = None,
    _version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Bastion: secure connected devices for their whole life."""
    select_profile(profile)


def _chosen(store: ProfileStore, profile: str | None) -> str:
    if profile is not None:
        select_profile(profile)
    return store.chosen()[0]


def _row(store: ProfileStore, name: str, login: dict[str, Any]) -> dict[str, Any]:
    return {
        "current": "*" if name == store.current else "",
        "name": name,
        "url": login["url"],
        "logged_in": "yes" if login["token"] else "no",
        "ca_file": login["ca_file"] or "",
    }


def _existing(store: ProfileStore, name: str) -> dict[str, Any]:
    login = store.profiles.get(name)
    if login is None:
        known = ", ".join(sorted(store.profiles)) or "none"
        flag = "" if name == DEFAULT_PROFILE else f" --profile {name}"
        fail(
            f"no profile named {name!r}; the saved profiles are: {known}",
            hint=f"create it with `bastion login{flag} --url URL`",
        )
    return login


@app.command("logout")
def logout_cmd(profile: ProfileOption = None) -> None:
    """Forget the token of a profile (the config is rewritten atomically, mode 0600). The URL stays."""
    store = load_profiles()
    name = _chosen(store, profile)
    login = _existing(store, name)
    if not login["token"]:
        console.print(f"profile {name!r} was already logged out", markup=False)
        return
    login["token"] = None
    path = save_profiles(store)
    console.print(f"logged out of profile {name!r} ({login['url']}); its token is removed from {path}", markup=False)


@profile_app.command("list")
def profile_list_cmd(as_json: JsonOption = False) -> None:
    """List the saved profiles (never their tokens); the current one is marked *."""
    store = load_profiles()
    rows = [_row(store, name, login) for name, login in sorted(store.profiles.items())]
    emit_table(rows, PROFILE_COLUMNS, as_json=as_json, title=f"profiles in {config_path()}")


@profile_app.command("show")
def profile_show_cmd(
    name: Annotated[str | None, typer.Argument(help="Profile name (default: the one in use).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Show one profile (never its token) and how it was chosen."""
    store = load_profiles()
    chosen, why = (parse_profile_name(name), "argument") if name is not None else store.chosen()
    row = _row(store, chosen, _existing(store, chosen))
    row["chosen_by"] = why
    emit_object(row, as_json=as_json, title=f"profile {chosen}")


@profile_app.command("use")
def profile_use_cmd(name: Annotated[str, typer.Argument(help="The profile to make current.")]) -> None:
    """Make a saved profile the current one."""
    store = load_profiles()
    name = parse_profile_name(name)
    _existing(store, name)
    store.current = name
    path = save_profiles(store)
    console.print(f"profile {name!r} is now current (saved to {path})", markup=False)
