"""A server process freezes its start-up heap (gc.freeze); an app built by tests does not."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bastion.service.app import create_app
from bastion.service.config import Settings
from conftest import TestClient


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process goes on collecting as before


@pytest.mark.usefixtures("unfrozen")
def test_a_server_app_freezes_its_start_up_heap(settings: Settings) -> None:
    with TestClient(create_app(settings, freeze_heap_at_start=True)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 10_000  # the imports, routes and schemas at least


@pytest.mark.usefixtures("unfrozen")
def test_an_app_built_for_tests_leaves_the_collector_alone(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() == 0
