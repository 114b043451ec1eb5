"""``bastion os build``: package and sign the device runtime as an OS image."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.apps import os_app
from bastion.cli.output import JsonOption, emit_object, fail, load_signing_key, progress

__all__ = ["build_cmd"]


@os_app.command("build")
def build_cmd(
    *,
    version: Annotated[str, typer.Option("--version", help="OS version (semantic version, e.g. 1.0.0).")],
    key: Annotated[Path, typer.Option("--key", help="OS-publisher signing key (PEM), e.g. VENDOR/os-signing.key.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Image file to write.")],
    security_version: Annotated[int, typer.Option("--security-version", help="Anti-rollback version.")] = 1,
    fault: Annotated[str | None, typer.Option("--fault", help="Test only: inject a fault.", hidden=True)] = None,
    as_json: JsonOption = False,
) -> None:
    """Build a signed OS image of the device runtime."""
    from bastion.images.errors import ImageError
    from bastion.images.os_build import build_os_image

    signing_key = load_signing_key(key, hint="run `bastion vendor init` to create one")
    try:
        result = build_os_image(output, version, security_version, signing_key, fault=fault, progress=progress)
    except ImageError as exc:
        fail(f"cannot build the OS image: {exc}", hint="versions look like 1.2.3; security versions are >= 0")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    emit_object(
        {
            "image": str(result.path),
            "version": result.header.version,
            "security_version": result.header.security_version,
            "files": result.file_count,
            "measurement": result.measurement.hex(),
        },
        as_json=as_json,
        title="OS image built",
    )
