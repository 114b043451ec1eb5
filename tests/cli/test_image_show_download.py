"""``bastion image show`` and ``image download`` (the bytes checked against the SHA-256 recorded at upload)."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from _opcli_support import cli_env, run

from bastion.cli.output import CliError
from bastion.crypto.keys import generate_private_key, public_key_pem
from bastion.images.package import ImageType, build_image
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.tenants.service import CreatedTenant

COMPONENT = "6a0e7a2c-3f4b-4c1d-9e8f-0a1b2c3d4e5f"


@pytest.fixture
def uploaded(
    tmp_path: Path,
    settings: Settings,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
    make_tenant: Callable[[str], CreatedTenant],
) -> tuple[dict[str, object], bytes]:
    cli_env(monkeypatch, tmp_path, settings)
    run("login", "--url", live_url, "--token-stdin", stdin=make_tenant("acme").admin_token + "\n")
    key = generate_private_key()
    (tmp_path / "release.pub.pem").write_bytes(public_key_pem(key.public_key()))
    run("keys", "register", str(tmp_path / "release.pub.pem"))
    out = io.BytesIO()
    build_image(
        out,
        io.BytesIO(b"lamp app " * 500),
        image_type=ImageType.APP,
        component_id=COMPONENT,
        version="1.2.0",
        security_version=1,
        key=key,
    )
    (tmp_path / "lamp.img").write_bytes(out.getvalue())
    added = json.loads(run("image", "add", str(tmp_path / "lamp.img"), "--json"))
    return added, out.getvalue()


def test_show_and_download_check_the_recorded_hash(
    uploaded: tuple[dict[str, object], bytes], tmp_path: Path, settings: Settings
) -> None:
    added, data = uploaded
    shown = json.loads(run("image", "show", str(added["id"]), "--json"))
    assert shown["sha256"] == hashlib.sha256(data).hexdigest()
    assert (shown["component_id"], shown["version"], shown["size"]) == (COMPONENT, "1.2.0", len(data))
    assert json.loads(run("image", "show", str(shown["sha256"]), "--json"))["id"] == added["id"]

    target = tmp_path / "got" / "lamp.img"
    target.parent.mkdir()
    said = run("image", "download", str(added["id"]), "-o", str(target))
    assert "verified" in said
    assert target.read_bytes() == data
    with pytest.raises(CliError, match="exists"):
        run("image", "download", str(added["id"]), "-o", str(target))

    # The blob store's copy changes under the service: the download is refused and nothing is written.
    blob = BlobStore(settings.home / "blobs").path(str(shown["sha256"]))
    blob.chmod(0o600)
    blob.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CliError, match="does not match the recorded SHA-256"):
        run("image", "download", str(added["id"]), "-o", str(tmp_path / "got" / "bad.img"))
    assert sorted(p.name for p in target.parent.iterdir()) == ["lamp.img"]  # no partial file left


def test_another_tenant_cannot_see_or_download_the_image(
    uploaded: tuple[dict[str, object], bytes], live_url: str, make_tenant: Callable[[str], CreatedTenant]
) -> None:
    added, _data = uploaded
    other = {"Authorization": f"Bearer {make_tenant('globex').admin_token}"}
    with httpx.Client(base_url=live_url + "/api/v1", headers=other) as http:
        assert http.get(f"/app-images/{added['id']}").status_code == 404
        assert http.get(f"/app-images/{added['id']}/content").status_code == 404
        assert http.get("/app-images/..%2f..%2fetc/content").status_code in (400, 404)
    with pytest.raises(CliError, match="neither an image id nor a SHA-256"):
        run("image", "show", "lamp")
