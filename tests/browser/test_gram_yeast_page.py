"""The clinician page in headless Debian Chromium: the model card's robustness warning is shown as the card
states it, and a yeast-only SYNTHETIC smear reads "yeast seen (Candida)" with no bacterial Gram verdict."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from medcloud.vision.registry import resolve
from medcloud.vision.synth import render_smear

from .conftest import CHROMIUM, LiveHub
from .test_gram_page import FLAGS, poll

pytestmark = pytest.mark.browser


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)"
)
def test_robustness_warning_and_yeast_answer(live_hub: LiveHub, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    smear = render_smear(777, "site-a", (640, 640), 1.0, species=["candida"] * 4)
    photo = tmp_path / "yeast.png"
    buf = io.BytesIO()
    Image.fromarray(smear.image).save(buf, format="PNG")
    photo.write_bytes(buf.getvalue())
    warning = resolve(None).summary().get("robustness_warning")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(live_hub.url + "/")
            poll(page, "document.body.dataset.ready === 'yes'")
            page.fill("#token", live_hub.clinician_token)
            page.press("#token", "Enter")
            poll(page, "document.body.dataset.signedIn === 'yes'")
            poll(page, "document.body.dataset.robustnessWarning !== undefined")
            if warning:  # the shipped card's own figures decide; the page shows what the card says
                assert page.is_visible("#robustness-warning")
                assert page.inner_text("#robustness-warning-en") == warning
                assert page.inner_text("#robustness-warning-ja")
            else:
                assert not page.is_visible("#robustness-warning")
            assert "never-seen" in page.inner_text("#model-info")

            page.set_input_files("#file", str(photo))
            poll(page, "document.body.dataset.yeast === 'yes' || document.body.dataset.yeast === 'no'")
            assert page.evaluate("document.body.dataset.yeast") == "yes"
            yeast = page.inner_text("#yeast")
            assert "yeast seen (Candida)" in yeast and "酵母様真菌 (カンジダ)" in yeast
            verdict = page.inner_text("#verdict")
            assert "No bacterial Gram verdict" in verdict and "Gram-positive" not in verdict
            assert "yeast seen (Candida)" in page.inner_text("#status")
        finally:
            browser.close()
