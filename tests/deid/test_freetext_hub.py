"""Issue 10: after `medcloud deid` with defaults, the hub cannot find the repro file's free text with `q=`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.deid.test_freetext import REPRO, repro_file
from tests.hub.conftest import Hub, _make_hub

from medcloud.deid import Deidentifier, DeidOptions, SiteKey


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    yield from _make_hub(tmp_path, None)


def test_issue10_hub_cannot_find_identifying_free_text(hub: Hub) -> None:
    out = Deidentifier(SiteKey(bytes(range(32))), DeidOptions()).deidentify_bytes(repro_file(), "r.dcm").data
    r = hub.client.post("/api/v1/ingest", content=out, headers=hub.auth("site_a"))
    assert r.status_code == 201, r.text

    def found(q: str) -> int:
        got = hub.client.get("/api/v1/studies", params={"q": q}, headers=hub.auth("researcher"))
        assert got.status_code == 200, got.text
        return int(got.json()["total"])

    assert found("胸部CT") == 1  # the cleaned descriptor is still searchable
    for q in ["山田", "太郎", "03-1234-5678", "12345678", "taro.yamada", "2024年4月1日", "新宿", "2-8-1"]:
        assert found(q) == 0, q
    assert all(found(v[:6]) == 0 for k, v in REPRO.items() if k != "StudyDescription")
