"""Fixtures for gateway tests (the stand-ins live in gateway_fakes.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_fakes import FakeDeid, FakeHub


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def fake_deid() -> FakeDeid:
    return FakeDeid()
