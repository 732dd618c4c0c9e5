"""The slide rows of tests/hub/test_authz.py's route x role table, and how to call each route."""

from __future__ import annotations

from functools import cache
from typing import Any

from tests.hub.conftest import Hub
from tests.wsi.slide_data import deidentified_svs

_R = {"researcher"}
SLIDES_EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/api/v1/slides"): _R,
    ("GET", "/api/v1/slides/{slide_id}"): _R,
    ("GET", "/api/v1/slides/{slide_id}/thumbnail"): _R,
    ("GET", "/api/v1/slides/{slide_id}/dzi/{level}/{tile}"): _R,
    ("GET", "/api/v1/slides/{slide_id}/levels/{level}/tiles/{x}/{y}"): _R,
}


@cache
def _svs() -> bytes:
    return deidentified_svs()


def slides_call(hub: Hub, method: str, path: str, headers: dict[str, str], ctx: dict[str, str]) -> Any:
    """Call one slide route on the real SVS, stored by site_a into project lung on first use."""
    if "svs_id" not in ctx:
        r = hub.client.post("/api/v1/ingest", content=_svs(),
                            headers={**hub.auth("site_a"), "X-Medcloud-Filename": "slide.svs"})  # fmt: skip
        assert r.status_code == 201, r.text
        ctx["svs_id"] = f"svs-{r.json()['image_id']}"
    dzi = "/dzi/" in path
    url = path.format(slide_id=ctx["svs_id"], level="12" if dzi else "0", tile="0_0.jpeg", x="0", y="0")
    return hub.client.request(method, url, headers=headers)
