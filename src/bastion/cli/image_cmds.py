"""``bastion image show ID`` and ``bastion image download ID -o FILE`` (checked against the recorded SHA-256).

The download goes to a temporary file next to ``FILE``; only when its SHA-256
and size match what the service recorded at upload is it renamed to ``FILE``.
A mismatch deletes it and fails: what arrived is not the image that was uploaded.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._client import ServiceClient
from bastion.cli.apps import image_app
from bastion.cli.output import JsonOption, console, emit_object, fail

__all__ = ["image_download_cmd", "image_show_cmd"]

ImageRef = Annotated[str, typer.Argument(help="Image id or SHA-256 (see `bastion image list`).")]


def _image(client: ServiceClient, ref: str) -> dict[str, Any]:
    image: dict[str, Any] = client.get_json(f"/app-images/{ref}")
    return image


@image_app.command("show")
def image_show_cmd(image: ImageRef, as_json: JsonOption = False) -> None:
    """Show an app image: component, version, security version, size, SHA-256, signer, upload."""
    with ServiceClient.from_saved_login() as client:
        shown = _image(client, image)
    emit_object(shown, as_json=as_json, title=f"app image {shown['id']}")


@image_app.command("download")
def image_download_cmd(
    image: ImageRef,
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the image.")],
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
) -> None:
    """Download an app image; its SHA-256 is checked against the one recorded at upload."""
    if output.exists() and not force:
        fail(f"{output} exists", hint="pick another -o FILE, or add --force to replace it")
    tmp = output.with_name(f".{output.name}.{secrets.token_hex(8)}.part")
    with ServiceClient.from_saved_login() as client:
        shown = _image(client, image)
        expected, expected_size = str(shown["sha256"]), int(shown["size"])
        try:
            with tmp.open("xb") as sink:
                size, digest = client.download(f"/app-images/{shown['id']}/content", sink, max_bytes=expected_size)
                sink.flush()
                os.fsync(sink.fileno())
            if size != expected_size or not hmac.compare_digest(digest, expected):
                fail(
                    f"the download of image {shown['id']} does not match the recorded SHA-256 {expected} "
                    f"(got {digest}, {size} bytes); nothing was written",
                    hint="try again; if it persists, the service's blob store is damaged",
                )
            tmp.replace(output)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror}")
        finally:
            tmp.unlink(missing_ok=True)
    console.print(f"wrote {output} ({size} bytes, sha256 {digest} verified)", markup=False, soft_wrap=True)
