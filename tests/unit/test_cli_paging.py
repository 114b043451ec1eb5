"""How list commands page through the service's lists (issue 7 section 7), against a fake transport."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from bastion.cli._client import OperatorConfig, ServiceClient
from bastion.cli.output import emit_cut_note


@contextmanager
def fake_service(total: int, *, cap: int = 5000) -> Iterator[tuple[ServiceClient, list[dict[str, int]]]]:
    """A client whose service lists ``total`` rows, pages with limit/offset and never returns more than ``cap``."""
    asked: list[dict[str, int]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params.get("limit", str(cap)))
        offset = int(request.url.params.get("offset", "0"))
        asked.append({"limit": limit, "offset": offset})
        rows = [{"n": i} for i in range(offset, min(total, offset + min(limit, cap)))]
        return httpx.Response(200, json=rows)

    client = ServiceClient(OperatorConfig(url="http://service.test", token="bst_x"))
    client._http = httpx.Client(base_url="http://service.test/api/v1", transport=httpx.MockTransport(handler))
    try:
        yield client, asked
    finally:
        client.close()


def test_get_pages_fetches_every_page() -> None:
    with fake_service(1203) as (client, asked):
        page = client.get_pages("/devices")
    assert [r["n"] for r in page.rows] == list(range(1203))
    assert not page.more
    assert [a["offset"] for a in asked] == [0, 500, 1000]


def test_get_pages_on_request_tells_whether_more_exist() -> None:
    with fake_service(1203) as (client, _asked):
        cut = client.get_pages("/devices", limit=10, offset=100)
        last = client.get_pages("/devices", limit=3, offset=1200)
        exact = client.get_pages("/devices", limit=1203)
    assert [r["n"] for r in cut.rows] == list(range(100, 110))
    assert cut.more
    assert [r["n"] for r in last.rows] == [1200, 1201, 1202]
    assert not last.more
    assert not exact.more


def test_get_pages_stops_at_its_bound_and_says_so() -> None:
    with fake_service(50) as (client, _asked):
        page = client.get_pages("/devices", page_rows=7, max_rows=20)
    assert len(page.rows) == 20
    assert page.more


def test_get_capped_asks_one_more_to_see_a_cut() -> None:
    with fake_service(300) as (client, asked):
        cut = client.get_capped("/audit", limit=None, default=200)
        whole = client.get_capped("/audit", limit=300, default=200)
    assert len(cut.rows) == 200
    assert cut.more
    assert asked[0]["limit"] == 201
    assert len(whole.rows) == 300
    assert not whole.more


def test_get_bounded_flags_an_answer_at_the_services_bound() -> None:
    with fake_service(6000) as (client, _asked):
        assert client.get_bounded("/products").more
        assert not client.get_bounded("/products", bound=6001).more


@pytest.mark.parametrize(
    ("pages", "expected"),
    [(True, "add --offset 30"), (False, "--limit 20")],
)
def test_cut_note_says_how_to_see_the_rest(pages: bool, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    emit_cut_note(shown=10, offset=20, more=True, what="devices", pages=pages)
    _out, err = capsys.readouterr()
    assert "output cut: devices 21-30 shown" in " ".join(err.split())
    assert expected in err
    emit_cut_note(shown=10, offset=20, more=False, what="devices")
    assert capsys.readouterr() == ("", "")
