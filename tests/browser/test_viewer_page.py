"""End to end in headless Debian Chromium: the hub's /viewer/ page (cornerstone3D) shows a SYNTHETIC CT
series read over the hub's own DICOMweb with a researcher's token; slices are checked as canvas pixels.
Without a token, or with one the hub refuses, the page asks to sign in and shows no data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.live_hub import hub_in_thread

from .conftest import CHROMIUM
from .synthetic_ct import ct_series, jpeg_series, radius

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
BUILT = Path(__file__).resolve().parents[2] / "src" / "medcloud" / "web" / "viewer" / "index.html"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SLICES = 7
STUDY = "2.25.4242001"

needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
)
needs_build = pytest.mark.skipif(
    not BUILT.exists(), reason="the viewer is not built: run `make` (npm ci && npm run build in frontend/)"
)


@dataclass
class ViewerHub:
    url: str
    researcher: str  # a token for project "lung", which holds the study
    outsider: str  # a researcher of another project


def _ingest(url: str, token: str, data: bytes) -> None:
    r = httpx.post(url + "/api/v1/ingest", content=data, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def viewer_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ViewerHub]:
    from medcloud.config import load_settings
    from medcloud.hub.app import create_app
    from medcloud.hub.state import HubState
    from medcloud.security.tokens import issue_token

    settings = load_settings(data_dir=tmp_path_factory.mktemp("viewer-hub") / "data")
    state = HubState.open(settings)
    site = issue_token(state.catalog, role="site", site="site-a", projects=["lung"]).token
    researcher = issue_token(state.catalog, role="researcher", projects=["lung"]).token
    outsider = issue_token(state.catalog, role="researcher", projects=["brain"]).token
    try:
        with hub_in_thread(create_app(settings, state=state)) as url:
            # Series 1: a bright disc growing with z; series 2: the inverse (dark disc on bright).
            for data in ct_series(STUDY, slices=SLICES, number=1, description="DISC"):
                _ingest(url, site, data)
            for data in ct_series(STUDY, slices=3, number=2, inverted=True, description="INVERTED"):
                _ingest(url, site, data)
            for data in jpeg_series(STUDY, slices=3, number=3):  # compressed: decoded by the WebAssembly codec
                _ingest(url, site, data)
            yield ViewerHub(url, researcher, outsider)
    finally:
        state.close()


def poll(page: Any, script: str, timeout: float = 30.0) -> Any:
    """Poll with page.evaluate (wait_for_function is blocked by the page's CSP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


# Reads the viewport canvas: the grey level at the centre and near the image's top-left corner (the
# square image is fitted to the canvas height, centred), and the width of the bright run through the
# centre row (the disc's diameter in canvas pixels).
CANVAS_PROBE = """(() => {
  const c = document.querySelector('#viewport canvas');
  if (!c || !c.width) return null;
  const d = c.getContext('2d', {willReadFrequently: true}).getImageData(0, 0, c.width, c.height).data;
  const grey = (x, y) => d[(y * c.width + x) * 4];
  const cx = Math.floor(c.width / 2), cy = Math.floor(c.height / 2);
  const off = Math.floor(0.45 * Math.min(c.width, c.height));
  let min = 255, max = 0;
  for (let i = 0; i < d.length; i += 4) { min = Math.min(min, d[i]); max = Math.max(max, d[i]); }
  let run = 0;
  for (let x = 0; x < c.width; x++) if (grey(x, cy) > 128) run++;
  return {w: c.width, h: c.height, centre: grey(cx, cy), corner: grey(cx - off, cy - off), min, max, run,
          index: Number(document.body.dataset.imageIndex), rendered: Number(document.body.dataset.rendered || 0)};
})()"""


def probe_after(page: Any, expected_index: int) -> dict[str, Any]:
    """The canvas once slice `expected_index` has been drawn."""
    poll(page, f"Number(document.body.dataset.imageIndex) === {expected_index}")
    time.sleep(0.3)  # the render that set the index has landed on the canvas; take the next frame
    return dict(page.evaluate(CANVAS_PROBE))


def launch(pw: Any) -> Any:
    return pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)


def open_with_token(browser: Any, url: str, token: str | None, console: list[str]) -> Any:
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    if token is not None:
        # The hub's pages share the token through sessionStorage["medcloud.token"] (same origin, same tab).
        page.goto(url + "/healthz")
        page.evaluate(f"sessionStorage.setItem('medcloud.token', {token!r})")
    page.goto(f"{url}/viewer/?study={STUDY}")
    return page


@needs_browser
@needs_build
def test_viewer_renders_slices_scrolls_and_switches_series(viewer_hub: ViewerHub) -> None:
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            page = open_with_token(browser, viewer_hub.url, viewer_hub.researcher, console)
            poll(page, "['yes', 'failed'].includes(document.body.dataset.ready)", timeout=40)
            assert page.evaluate("document.body.dataset.ready") == "yes", console
            assert page.evaluate("document.body.dataset.seriesCount") == "3"
            assert "SYNTHETIC PHANTOM" in page.inner_text("#study-label")
            labels = page.inner_text("#series-list")
            assert "DISC" in labels and "INVERTED" in labels

            # The middle slice is drawn: bright disc in the centre, dark corner, not a uniform canvas.
            first = probe_after(page, SLICES // 2)
            assert first["max"] - first["min"] > 200, first
            assert first["centre"] > 200 and first["corner"] < 50, first
            assert first["run"] > 0
            page.screenshot(path=str(ARTIFACTS / "browser-viewer-ct.png"))

            # Arrow keys scroll: the disc's width on the canvas follows the known radius per slice.
            page.focus("#viewport")
            page.keyboard.press("ArrowDown")
            down = probe_after(page, SLICES // 2 + 1)
            for _ in range(3):
                page.keyboard.press("ArrowUp")
            up = probe_after(page, SLICES // 2 - 2)
            scale = first["run"] / (2 * radius(SLICES // 2))
            for probe in (down, up):
                want = 2 * radius(probe["index"]) * scale
                assert abs(probe["run"] - want) <= max(3, 0.08 * want), (probe, want)
            assert down["run"] > first["run"] > up["run"]

            # The mouse wheel (cornerstone's StackScrollTool) moves one slice per notch.
            box = page.locator("#viewport").bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            before = int(page.evaluate("Number(document.body.dataset.imageIndex)"))
            page.mouse.wheel(0, 120)
            poll(page, f"Number(document.body.dataset.imageIndex) !== {before}")
            wheeled = probe_after(page, int(page.evaluate("Number(document.body.dataset.imageIndex)")))
            assert abs(wheeled["index"] - before) == 1
            want = 2 * radius(wheeled["index"]) * scale
            assert abs(wheeled["run"] - want) <= max(3, 0.08 * want), (wheeled, want)

            # Left drag is window/level: the VOI range changes and so does the grey of the background.
            voi = page.evaluate("document.body.dataset.voi")
            cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(cx, cy)
            page.mouse.down()
            page.mouse.move(cx + 80, cy + 120, steps=8)
            page.mouse.up()
            poll(page, f"document.body.dataset.voi !== {voi!r}")

            # Series switching: the inverted series shows a dark centre on a bright background.
            page.click("#series-list button:has-text('INVERTED')")
            poll(page, "document.body.dataset.sliceCount === '3' && document.body.dataset.loading === 'no'")
            inverted = probe_after(page, 1)
            assert inverted["centre"] < 50 and inverted["corner"] > 200, inverted

            # JPEG baseline frames (the hub serves them as stored) are decoded by the wasm codec under the CSP.
            page.click("#series-list button:has-text('JPEG')")
            poll(page, "document.body.dataset.series === document.querySelector('[aria-current]').dataset.series")
            poll(page, "document.body.dataset.loading === 'no'")
            jpeg = probe_after(page, 1)
            assert jpeg["centre"] > 200 and jpeg["corner"] < 50, jpeg
            want = 2 * radius(1) * scale
            assert abs(jpeg["run"] - want) <= max(3, 0.08 * want), (jpeg, want)
            assert page.is_hidden("#error") and page.evaluate("document.body.dataset.imageError") is None
        finally:
            browser.close()
    assert not [m for m in console if "Content Security Policy" in m or m.startswith("pageerror")], console


@needs_browser
@needs_build
def test_viewer_without_a_valid_grant_shows_no_data(viewer_hub: ViewerHub) -> None:
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            for who, token in [("none", None), ("invalid", "mc_not-a-real-token"), ("outsider", viewer_hub.outsider)]:
                page = open_with_token(browser, viewer_hub.url, token, console)
                state = poll(page, "['signin', 'failed', 'yes'].includes(document.body.dataset.ready) && "
                                   "document.body.dataset.ready")  # fmt: skip
                assert page.is_hidden("#workspace"), who
                assert page.evaluate("document.querySelectorAll('#series-list li').length") == 0, who
                assert "SYNTHETIC" not in page.inner_text("body"), who
                if who == "outsider":  # a valid token outside the study's project: not found, no sign-in
                    assert state == "failed"
                    assert "not found" in page.inner_text("#error").lower()
                else:
                    assert state == "signin" if who == "none" else state == "failed", (who, state)
                    assert page.is_visible("#signin"), who
                if who == "none":  # this hub offers no hospital sign-in: no button for it
                    assert poll(page, "document.body.dataset.sso") == "no"
                    assert page.is_hidden("#sso-button")
                if who == "invalid":
                    assert "refused" in page.inner_text("#error")
                    assert page.evaluate("sessionStorage.getItem('medcloud.token')") is None
                page.context.close()
        finally:
            browser.close()


def test_viewer_csp_allows_wasm_only_under_viewer(viewer_hub: ViewerHub) -> None:
    r = httpx.get(viewer_hub.url + "/viewer/slide.html?id=x", timeout=10)
    assert r.status_code == (200 if BUILT.exists() else 404)
    viewer_csp = r.headers["content-security-policy"]
    hub_csp = httpx.get(viewer_hub.url + "/healthz", timeout=10).headers["content-security-policy"]
    assert "'wasm-unsafe-eval'" in viewer_csp and "worker-src 'self'" in viewer_csp
    assert "'unsafe-inline'" not in viewer_csp and "'unsafe-eval'" not in viewer_csp
    assert "wasm" not in hub_csp and "script-src 'self';" in hub_csp
