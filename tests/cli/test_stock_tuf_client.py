"""docs/updates.md: a stock python-tuf ``Updater`` (its own fetcher, no Bastion code) reads a group's repository."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _opcli_support import cli_env, run
from tuf.api.exceptions import UnsignedMetadataError
from tuf.ngclient.updater import Updater

from bastion.service.config import Settings
from bastion.service.tenants.service import CreatedTenant

DOCS = Path(__file__).resolve().parents[2] / "docs" / "updates.md"


def _updater(base: str, work: Path, root: bytes) -> Updater:
    (work / "metadata").mkdir(parents=True, exist_ok=True)
    return Updater(
        metadata_dir=str(work / "metadata"),
        metadata_base_url=f"{base}/metadata/",
        target_dir=str(work),
        target_base_url=f"{base}/targets/",
        bootstrap=root,
    )


@pytest.fixture
def real_time(clock: Any) -> None:  # tests/conftest.py's FakeClock
    """The service's clock at the real time: the stock client checks expiry against the real clock."""
    clock.now = dt.datetime.now(dt.UTC).replace(microsecond=0)


@pytest.mark.usefixtures("real_time")
def test_a_stock_updater_reads_a_group_repository(
    tmp_path: Path,
    settings: Settings,
    live_url: str,
    monkeypatch: pytest.MonkeyPatch,
    make_tenant: Callable[[str], CreatedTenant],
) -> None:
    cli_env(monkeypatch, tmp_path, settings)
    run("login", "--url", live_url, "--token-stdin", stdin=make_tenant("acme").admin_token + "\n")
    run("product", "create", "Lamp")
    group_id = json.loads(run("device-group", "show", "Lamp/Field Test", "--json"))["id"]
    base = f"{live_url}/tuf/{group_id}"
    with urllib.request.urlopen(f"{base}/metadata/1.root.json") as answer:  # noqa: S310 - a loopback http URL
        root = answer.read()

    updater = _updater(base, tmp_path / "client", root)
    updater.refresh()  # verifies root, timestamp, snapshot and targets with the ECDSA keys
    assert updater.get_targetinfo("os/none/0.0.0.img") is None
    trusted = json.loads((tmp_path / "client" / "metadata" / "targets.json").read_bytes())
    assert trusted["signed"]["_type"] == "targets"
    assert trusted["signatures"][0]["keyid"] in json.loads(root)["signed"]["keys"]

    # A root signed by another key is refused by the same stock client: the check is real.
    forged = json.loads(root)
    forged["signatures"][0]["sig"] = "00" * 64
    with pytest.raises(UnsignedMetadataError, match="signed by 0/1 keys"):
        _updater(base, tmp_path / "forged", json.dumps(forged).encode())


def test_the_docs_say_how_and_name_the_failure() -> None:
    text = DOCS.read_text()
    assert "pip install tuf 'securesystemslib[crypto]'" in text
    assert "signed by 0/1 keys" in text
    assert re.search(r"from tuf\.ngclient import Updater", text)
