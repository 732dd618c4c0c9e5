"""End to end in headless Debian Chromium: sign in by keyboard, fake webcam shows a SYNTHETIC smear,
capture, boxes come back from the real hub and are drawn on the canvas; no token means 401."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcloud.vision.synth import render_smear

from .conftest import CHROMIUM, LiveHub

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
]


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 6) -> None:
    """A YUV4MPEG2 clip (C420, 4:2:0 planes) repeating one RGB frame: Chromium's fake webcam input."""
    h, w = rgb.shape[:2]
    ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    y = ycc[..., 0]
    cb = np.asarray(Image.fromarray(ycc[..., 1]).resize((w // 2, h // 2), Image.Resampling.BOX))
    cr = np.asarray(Image.fromarray(ycc[..., 2]).resize((w // 2, h // 2), Image.Resampling.BOX))
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F10:1 Ip A1:1 C420\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n" + y.tobytes() + cb.tobytes() + cr.tobytes())


def poll(page: Any, script: str, timeout: float = 30.0) -> Any:
    """Poll with page.evaluate (wait_for_function is blocked by the page's CSP)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = page.evaluate(script)
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for: {script}")


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
)
def test_webcam_capture_draws_boxes(live_hub: LiveHub, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    smear = render_smear(31337, "site-a", (480, 640), 1.0, species=["s_aureus"] * 5 + ["enterobacterales"] * 3)
    clip = tmp_path / "smear.y4m"
    write_y4m(clip, smear.image)
    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=[*FLAGS, f"--use-file-for-fake-video-capture={clip}"]
        )
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            context.grant_permissions(["camera"], origin=live_hub.url)
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(live_hub.url + "/")
            poll(page, "document.body.dataset.ready === 'yes'")
            assert page.is_visible("#synthetic-notice")

            # A request without a token is refused, from the page's own origin.
            status = page.evaluate("fetch('/api/v1/inference', {method: 'POST', body: 'x'}).then(r => r.status)")
            assert status == 401

            # Sign in with the keyboard only.
            page.focus("#token")
            page.keyboard.type(live_hub.clinician_token)
            page.keyboard.press("Enter")
            poll(page, "document.body.dataset.signedIn === 'yes'")
            assert "SYNTHETIC" in page.inner_text("#model-info")

            page.click("#camera-start")
            poll(page, "document.getElementById('video').videoWidth > 0")
            page.keyboard.press("Enter")  # focus moved to "Capture and analyse"
            boxes = int(poll(page, "Number(document.getElementById('canvas').dataset.boxesDrawn || 0)"))
            assert boxes >= 3
            status_text = page.inner_text("#status")
            assert "Staphylococcus aureus" in status_text
            assert page.evaluate("document.getElementById('status').getAttribute('aria-live')") == "polite"
            assert "黄色ブドウ球菌" in page.inner_text("#counts")

            # The boxes really are on the canvas: pixels exactly in the first box colours (#e6194b, #3cb44b).
            coloured = page.evaluate(
                """(() => {
                    const c = document.getElementById('canvas');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 0; i < d.length; i += 4) {
                      if ((d[i] === 230 && d[i + 1] === 25 && d[i + 2] === 75) ||
                          (d[i] === 60 && d[i + 1] === 180 && d[i + 2] === 75)) n++;
                    }
                    return n;
                })()"""
            )
            assert coloured > 200
            page.screenshot(path=str(ARTIFACTS / "browser-gram-stain.png"), full_page=True)
        finally:
            browser.close()
    assert not [m for m in console if m.startswith("error") and "Content Security Policy" in m], console


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
)
def test_a_turned_phone_photo_and_a_tiff_are_analysed_in_the_frame_the_page_draws(
    live_hub: LiveHub, tmp_path: Path
) -> None:
    """A JPEG whose EXIF tag turns it upright (a phone held sideways): Chromium draws it upright and the hub
    answers in that frame. A TIFF (Chromium cannot draw it) is still analysed, boxes on a blank field."""
    from playwright.sync_api import sync_playwright

    smear = render_smear(4242, "site-a", (480, 640), 1.0, species=["s_aureus"] * 5 + ["enterobacterales"] * 3)
    turned = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # the sensor's pixels are turned; shown turned 90 degrees clockwise they are upright
    Image.fromarray(smear.image).transpose(Image.Transpose.ROTATE_90).save(turned, quality=92, exif=exif.tobytes())
    tiff = tmp_path / "camera.tif"
    Image.fromarray(smear.image).save(tiff)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page.goto(live_hub.url + "/")
            poll(page, "document.body.dataset.ready === 'yes'")
            page.fill("#token", live_hub.clinician_token)
            page.keyboard.press("Enter")
            poll(page, "document.body.dataset.signedIn === 'yes'")

            page.set_input_files("#file", str(turned))
            poll(page, "document.body.dataset.boxes !== undefined")
            assert page.evaluate("document.body.dataset.imageSize") == "640x480"  # the hub's answer
            canvas = page.evaluate(
                "[document.getElementById('canvas').width, document.getElementById('canvas').height]"
            )
            assert canvas == [640, 480]  # Chromium drew it upright: the boxes' frame and the picture agree
            assert "Staphylococcus aureus" in page.inner_text("#status")

            page.evaluate("delete document.body.dataset.boxes; delete document.body.dataset.imageSize")
            page.set_input_files("#file", str(tiff))
            poll(page, "document.body.dataset.boxes !== undefined")
            assert page.evaluate("document.body.dataset.imageSize") == "640x480"
            assert "no preview" in page.inner_text("#canvas-caption")
            assert "Staphylococcus aureus" in page.inner_text("#status")
            white = page.evaluate(
                """(() => {
                    const c = document.getElementById('canvas');
                    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    let n = 0;
                    for (let i = 0; i < d.length; i += 4) if (d[i] === 255 && d[i + 1] === 255 && d[i + 2] === 255) n++;
                    return [c.width, c.height, n / (d.length / 4)];
                })()"""
            )
            assert white[:2] == [640, 480] and white[2] > 0.5  # a blank field with boxes, not a stale photo
        finally:
            browser.close()
