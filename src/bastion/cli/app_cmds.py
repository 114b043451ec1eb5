"""``bastion keys create``, ``bastion app validate`` and ``bastion app package``.

The app-signing key is created on the operator's machine; only its public half
(``NAME.pub.pem``) goes to the service (``bastion keys register``) and to
devices (``bastion device provision --app-key``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from bastion.cli.apps import app_app, keys_app
from bastion.cli.output import JsonOption, emit_object, fail, load_signing_key, progress

if TYPE_CHECKING:
    from bastion.images.manifest import ManifestError

__all__ = ["create_key_cmd", "default_keys_dir", "package_cmd", "validate_cmd"]

_MAX_KEY_NAME = 64


def default_keys_dir() -> Path:
    """Where app-signing keys go by default: ``$XDG_CONFIG_HOME/bastion/keys``, else ``~/.config/bastion/keys``.

    Read at call time, never at import, so that the variable that keeps the
    operator's configuration out of the home directory keeps the keys out of it
    too (docs/design.md, "Data directories"). ``BASTION_CONFIG`` names the login
    file only.
    """
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bastion" / "keys"


def _write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``data`` durably, refusing to replace anything (link() does not overwrite)."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@keys_app.command("create")
def create_key_cmd(
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Directory for the key pair [default: $XDG_CONFIG_HOME/bastion/keys, else ~/.config/bastion/keys].",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="File name stem: NAME.key and NAME.pub.pem.")] = "app-signing",
    as_json: JsonOption = False,
) -> None:
    """Create a P-256 app-signing key pair (private key 0600; never overwrites)."""
    from bastion.crypto.keys import generate_private_key, private_key_pem, public_key_pem
    from bastion.images.package import key_id

    if not name or len(name) > _MAX_KEY_NAME or not all(c.isalnum() or c in "-_." for c in name) or name[0] == ".":
        fail(f"invalid key name {name[:_MAX_KEY_NAME]!r}", hint="use letters, digits, '-', '_' and '.'")
    if out_dir is None:
        out_dir = default_keys_dir()
    private_path = out_dir / f"{name}.key"
    public_path = out_dir / f"{name}.pub.pem"
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            fail(f"{path} already exists; refusing to overwrite a key", hint="choose another --name or -o directory")
    key = generate_private_key()
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_new_file(private_path, private_key_pem(key), 0o600)
        try:
            _write_new_file(public_path, public_key_pem(key.public_key()), 0o644)
        except BaseException:
            private_path.unlink(missing_ok=True)
            raise
    except FileExistsError as exc:
        fail(f"{exc.filename or out_dir} already exists; refusing to overwrite a key")
    except OSError as exc:
        fail(f"cannot write the key pair in {out_dir}: {exc.strerror}")
    emit_object(
        {
            "private_key": str(private_path),
            "public_key": str(public_path),
            "key_id": key_id(key.public_key()).hex(),
        },
        as_json=as_json,
        title="app-signing key created (keep the private key secret; share the .pub.pem)",
    )


def _report_manifest_errors(exc: ManifestError, app_dir: Path) -> NoReturn:
    for issue in exc.errors:
        typer.echo(f"  {issue}", err=True)
    count = len(exc.errors)
    fail(
        f"{app_dir / 'app_manifest.json'} has {count} error{'s' if count != 1 else ''} (listed above)",
        hint="fix each JSON path listed; the JSON Schema is bastion/images/schemas/app_manifest.schema.json",
    )


@app_app.command("validate")
def validate_cmd(
    app_dir: Annotated[Path, typer.Argument(help="The app directory (with app_manifest.json).")],
    model: Annotated[
        str, typer.Option("--model", help="Chip model whose peripherals the manifest must name.")
    ] = "mt3620-emu",
    as_json: JsonOption = False,
) -> None:
    """Validate an app's manifest (and its peripherals against a chip model); report every error with its JSON path."""
    import json
    import sys

    from bastion.hw.chipmodel import get_model
    from bastion.hw.errors import UnknownPeripheralError
    from bastion.images.app_build import load_app_manifest
    from bastion.images.errors import ImageBuildError
    from bastion.images.manifest import ManifestError, ManifestIssue
    from bastion.os.apps.claims import peripheral_issues

    try:
        chip_model = get_model(model)
    except UnknownPeripheralError as exc:
        fail(str(exc), hint="see `bastion device manufacture --help` for the models")
    try:
        manifest = load_app_manifest(app_dir)
        issues = peripheral_issues(manifest, chip_model)
        if issues:
            raise ManifestError([ManifestIssue(path, message) for path, message in issues])
    except ImageBuildError as exc:
        fail(str(exc), hint="an app directory holds app_manifest.json at its root")
    except ManifestError as exc:
        if as_json:
            errors = [{"path": issue.path, "message": issue.message} for issue in exc.errors]
            sys.stdout.write(json.dumps({"valid": False, "errors": errors}, indent=2) + "\n")
            raise typer.Exit(1) from exc
        _report_manifest_errors(exc, app_dir)
    if as_json:
        sys.stdout.write(json.dumps({"valid": True, "errors": [], "manifest": manifest.raw}, indent=2) + "\n")
        return
    emit_object(
        {
            "name": manifest.name,
            "component_id": manifest.component_id,
            "entry_point": manifest.entry_point,
            "version": manifest.version,
            "capabilities": ", ".join(sorted(manifest.raw.get("Capabilities", {}))) or "(none)",
        },
        as_json=False,
        title="app manifest is valid",
    )


@app_app.command("package")
def package_cmd(
    app_dir: Annotated[Path, typer.Argument(help="The app directory (with app_manifest.json).")],
    *,
    key: Annotated[Path, typer.Option("--key", help="App-signing private key (PEM) from `bastion keys create`.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Image file to write.")],
    version: Annotated[
        str | None, typer.Option("--version", help="Image version (default: the manifest's Version).")
    ] = None,
    security_version: Annotated[int, typer.Option("--security-version", help="Security version.")] = 1,
    as_json: JsonOption = False,
) -> None:
    """Validate, package and sign an app directory as an app image."""
    from bastion.images.app_build import build_app_image
    from bastion.images.errors import ImageError
    from bastion.images.manifest import ManifestError

    signing_key = load_signing_key(key, hint="run `bastion keys create` to make one")
    try:
        result = build_app_image(
            app_dir, output, signing_key, version=version, security_version=security_version, progress=progress
        )
    except ManifestError as exc:
        _report_manifest_errors(exc, app_dir)
    except ImageError as exc:
        fail(f"cannot build the app image: {exc}", hint="versions look like 1.2.3; apps hold regular files only")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror}")
    emit_object(
        {
            "image": str(result.path),
            "name": result.manifest.name,
            "component_id": result.header.component_id,
            "version": result.header.version,
            "files": result.file_count,
            "signer": result.header.signer.hex(),
            "measurement": result.measurement.hex(),
        },
        as_json=as_json,
        title="app image built",
    )
