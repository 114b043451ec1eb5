"""docs/updates.md: a stock python-tuf ``Updater`` downloads a group's target with a download credential.

Only the fetcher is the reader's own (a ``FetcherInterface`` that sends the
``Authorization: Bastion-Download`` header, the docs' example); the Updater, its
metadata checks and its hash and length checks of the target are python-tuf's.
"""

from __future__ import annotations

import datetime as dt
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_world import OCTET, OS_COMPONENT, Fleet, os_image, trust_os_key
from sqlalchemy.orm import Session, sessionmaker
from tuf.api import exceptions
from tuf.ngclient import FetcherInterface, Updater
from tuf_attacks import download_headers

from bastion.crypto.keys import generate_private_key
from bastion.service.config import Settings
from bastion.service.tenants.service import CreatedTenant
from conftest import FakeClock, TestClient


class CredentialFetcher(FetcherInterface):
    """The docs' fetcher: urllib, plus the device's download credential on every request."""

    def __init__(self, authorization: str | None) -> None:
        self.authorization = authorization

    def _fetch(self, url: str) -> Iterator[bytes]:
        headers = {"Authorization": self.authorization} if self.authorization else {}
        try:
            answer = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)  # noqa: S310
        except urllib.error.HTTPError as exc:
            exc.close()
            raise exceptions.DownloadHTTPError(str(exc), exc.code) from exc
        return _chunks(answer)


def _chunks(answer: Any) -> Iterator[bytes]:
    with answer:
        yield from iter(lambda: answer.read(65536), b"")


def _updater(base: str, work: Path, root: bytes, authorization: str | None) -> Updater:
    (work / "metadata").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(work / "metadata"),
        metadata_base_url=f"{base}/metadata/",
        target_dir=str(work),
        target_base_url=f"{base}/targets/",
        bootstrap=root,
        fetcher=CredentialFetcher(authorization),
    )


def test_a_stock_updater_downloads_a_target_with_a_credential_and_not_without(
    client: TestClient,
    make_tenant: Callable[[str], CreatedTenant],
    live_url: str,
    tmp_path: Path,
    *,
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: FakeClock,
) -> None:
    clock.now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the stock client checks expiry on the real clock
    fleet = Fleet(client, make_tenant("acme").admin_token, session_factory)
    image = os_image(trust_os_key(session_factory, generate_private_key()), "1.0.0")
    assert fleet.call("POST", "/os-images", content=image, headers=OCTET).status_code == 201
    production = fleet.groups["Production"]
    base = f"{live_url}/tuf/{production}"
    with urllib.request.urlopen(f"{base}/metadata/1.root.json") as answer:  # noqa: S310 - a loopback http URL
        root = answer.read()
    path = f"os/{OS_COMPONENT}/1.0.0.img"

    authorization = download_headers(settings, production, now=clock())["Authorization"]
    updater = _updater(base, tmp_path / "client", root, authorization)
    updater.refresh()
    info = updater.get_targetinfo(path)
    assert info is not None
    saved = updater.download_target(info)  # python-tuf checks the length and the sha256
    assert Path(saved).read_bytes() == image

    # Metadata needs no credential; the target does.
    bare = _updater(base, tmp_path / "bare", root, None)
    bare.refresh()
    info = bare.get_targetinfo(path)
    assert info is not None
    with pytest.raises(exceptions.DownloadHTTPError) as refused:
        bare.download_target(info)
    assert refused.value.status_code == 401
    # Another group's credential opens only that group's targets.
    elsewhere = download_headers(settings, fleet.groups["Development"], now=clock())["Authorization"]
    other = _updater(base, tmp_path / "other", root, elsewhere)
    other.refresh()
    info = other.get_targetinfo(path)
    assert info is not None
    with pytest.raises(exceptions.DownloadHTTPError) as refused:
        other.download_target(info)
    assert refused.value.status_code == 403
