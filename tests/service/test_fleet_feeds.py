"""OS feeds: publishing stores the image, the feed decides which groups target it, promotion, deltas."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from fastapi import FastAPI
from fleet_world import OCTET, OS_COMPONENT, FakePublisher, Fleet, os_image, trust_os_key
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bastion.crypto.keys import generate_private_key
from bastion.images.delta import DEFAULT_DELTA_METHOD, apply_delta
from bastion.service.blobs.store import BlobStore
from bastion.service.config import Settings
from bastion.service.fleet.limits import DEFAULT_FLEET_LIMITS
from bastion.service.models import OsImage
from bastion.service.tenants.service import CreatedTenant
from conftest import TestClient


@pytest.fixture
def publisher(app: FastAPI) -> FakePublisher:
    fake = FakePublisher()
    app.state.tuf_publisher = fake
    return fake


@pytest.fixture
def fleet(
    client: TestClient, tenant: CreatedTenant, publisher: FakePublisher, session_factory: sessionmaker[Session]
) -> Fleet:
    return Fleet(client, tenant.admin_token, session_factory)


def _os_target(publisher: FakePublisher, group: str) -> list[str]:
    return [p for p in publisher.paths(group) if p.startswith("os/")]


def test_publish_stores_the_image_and_defaults_to_retail(
    fleet: Fleet, publisher: FakePublisher, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    key = trust_os_key(session_factory, generate_private_key())
    data = os_image(key, "1.0.0")
    r = fleet.call("POST", "/os-images", content=data, headers=OCTET)
    assert r.status_code == 201, r.text
    image = r.json()
    assert (image["feed"], image["promoted_at"]) == ("retail", None)
    assert image["measurement"] == hashlib.sha256(data).hexdigest()
    assert BlobStore(settings.home / "blobs").path(image["measurement"]).read_bytes() == data
    expected = [f"os/{OS_COMPONENT}/1.0.0.img"]
    # A retail image reaches both feeds.
    for name in ("Development", "Production", "Production OS Evaluation"):
        assert _os_target(publisher, fleet.groups[name]) == expected
    r = fleet.call("POST", "/os-images", params={"feed": "beta"}, content=os_image(key, "1.0.1"), headers=OCTET)
    assert (r.status_code, r.json()["error"]) == (400, "invalid_feed")


def test_evaluation_then_promotion_changes_what_retail_groups_target(fleet: Fleet, publisher: FakePublisher) -> None:
    key = generate_private_key()
    fleet.os(key, "1.0.0")
    eval_image = fleet.os(key, "1.1.0", feed="retail-eval")
    assert eval_image["feed"] == "retail-eval"
    old, new = f"os/{OS_COMPONENT}/1.0.0.img", f"os/{OS_COMPONENT}/1.1.0.img"
    assert _os_target(publisher, fleet.groups["Production"]) == [old]
    assert _os_target(publisher, fleet.groups["Field Test OS Evaluation"]) == [new]
    r = fleet.call("POST", "/os-feeds/retail/images", json={"image": "1.1.0"})
    assert r.status_code == 200, r.text
    assert r.json()["promoted_at"] is not None
    for name in ("Development", "Field Test", "Production", "Production OS Evaluation"):
        assert _os_target(publisher, fleet.groups[name]) == [new], name
    again = fleet.call("POST", "/os-feeds/retail/images", json={"image": eval_image["measurement"]})
    assert (again.status_code, again.json()["error"]) == (409, "already_on_feed")
    assert fleet.call("POST", "/os-feeds/retail/images", json={"image": "9.9.9"}).status_code == 404
    wrong = fleet.call("POST", "/os-feeds/retail-eval/images", json={"image": "1.0.0"})
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_feed")


def test_newest_is_by_semantic_version_and_skips_revoked(
    fleet: Fleet, publisher: FakePublisher, session_factory: sessionmaker[Session]
) -> None:
    key = generate_private_key()
    fleet.os(key, "1.10.0")
    fleet.os(key, "1.9.0")  # published later, but older
    production = fleet.groups["Production"]
    assert _os_target(publisher, production) == [f"os/{OS_COMPONENT}/1.10.0.img"]
    with session_factory() as session:
        session.execute(update(OsImage).where(OsImage.version == "1.10.0").values(revoked_at=OsImage.published_at))
        session.commit()
    fleet.call("PATCH", f"/device-groups/{production}", json={"os_feed": "retail-eval"})
    assert _os_target(publisher, production) == [f"os/{OS_COMPONENT}/1.9.0.img"]


def test_deltas_from_older_images_of_the_feed(
    fleet: Fleet, publisher: FakePublisher, settings: Settings, tmp_path: Path
) -> None:
    key = generate_private_key()
    images = [fleet.os(key, f"1.{minor}.0") for minor in range(5)]
    newest = images[-1]
    targets = {t.path: t for t in publisher.published[fleet.groups["Production"]]}
    deltas = sorted(p for p in targets if p.startswith("os-delta/"))
    sources = [i["measurement"] for i in images[-1 - DEFAULT_FLEET_LIMITS.max_delta_sources : -1]]
    assert deltas == sorted(f"os-delta/{m}/1.4.0.patch" for m in sources)
    store = BlobStore(settings.home / "blobs")
    for path in deltas:
        spec = targets[path]
        source = path.split("/")[1]
        assert spec.custom["delta"] == {
            "method": DEFAULT_DELTA_METHOD.value,
            "from": source,
            "to": f"os/{OS_COMPONENT}/1.4.0.img",
        }
        assert spec.custom["bastion"]["version"] == "1.4.0"
        out = tmp_path / f"{source}.img"
        apply_delta(
            store.path(source),
            store.path(spec.blob_sha256),
            out,
            method=DEFAULT_DELTA_METHOD,
            expected_sha256=newest["measurement"],
        )
        assert hashlib.sha256(out.read_bytes()).hexdigest() == newest["measurement"]
    # Cached: republishing does not make the patches again.
    index = sorted((store.root / "deltas").rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in index]
    fleet.call("PATCH", f"/device-groups/{fleet.groups['Production']}", json={"update_policy": "No3rdPartyAppUpdates"})
    assert [p.stat().st_mtime_ns for p in index] == stamps
    assert (
        sorted(p.path for p in publisher.published[fleet.groups["Production"]] if p.path.startswith("os-delta/"))
        == deltas
    )
