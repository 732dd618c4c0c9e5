"""The researcher's page in headless Debian Chromium against a real hub over uvicorn: progress chart per
society and hospital, study filters, thumbnails (or their placeholder), Japanese labels, saving a cohort;
no Content-Security-Policy violation on the way. The studies are synthetic (pydicom samples re-labelled)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.hub.research_data import STUDIES, TARGETS, study
from tests.live_hub import hub_in_thread

from .conftest import CHROMIUM
from .test_gram_page import poll

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip
SITE_PROJECTS = {
    "site_a": ("site-a", ["lung"]),
    "site_b": ("site-b", ["lung", "brain"]),
    "site_c": ("site-c", ["brain"]),
}


@dataclass
class ResearchHub:
    url: str
    researcher: str
    admin: str


@pytest.fixture(scope="module")
def research_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ResearchHub]:
    from medcloud.config import load_settings
    from medcloud.hub.app import create_app
    from medcloud.hub.state import HubState
    from medcloud.security.tokens import issue_token

    settings = load_settings(data_dir=tmp_path_factory.mktemp("research") / "data")
    state = HubState.open(settings)
    cat = state.catalog
    with cat.write() as conn:
        cat.societies.load(conn, TARGETS)
    site_tokens = {k: issue_token(cat, role="site", site=s, projects=p).token for k, (s, p) in SITE_PROJECTS.items()}
    researcher = issue_token(cat, role="researcher", projects=["lung"], label="browser-test").token
    admin = issue_token(cat, role="admin").token
    try:
        with hub_in_thread(create_app(settings, state=state)) as url:
            # Ingested over HTTP like a gateway would, one synthetic study per upload.
            with httpx.Client(base_url=url, timeout=30) as client:
                for who, patient, modality, sex, age, part in STUDIES:
                    project = "brain" if who == "site_c" else "lung"
                    r = client.post(
                        "/api/v1/ingest",
                        content=study(patient, modality=modality, sex=sex, age=age, body_part=part),
                        headers={"Authorization": f"Bearer {site_tokens[who]}", "X-Medcloud-Project": project},
                    )
                    assert r.status_code == 201, r.text
            yield ResearchHub(url, researcher, admin)
    finally:
        state.close()


def _rows(page: Any) -> list[dict[str, str]]:
    return list(
        page.evaluate(
            """[...document.querySelectorAll('#progress-chart g.row')].map(g => ({
                kind: g.dataset.kind, id: g.dataset.id, count: g.dataset.count, target: g.dataset.target,
                text: g.textContent}))"""
        )
    )


def _study_rows(page: Any) -> list[dict[str, str]]:
    return list(
        page.evaluate(
            """[...document.querySelectorAll('#studies tbody tr')].map(tr => ({
                uid: tr.dataset.study, modalities: tr.dataset.modalities,
                href: tr.querySelector('a.open').getAttribute('href'),
                thumb: tr.querySelector('img.thumb') ? 'image'
                     : (tr.querySelector('.placeholder') ? 'placeholder' : '')}))"""
        )
    )


def test_research_page_end_to_end(research_hub: ResearchHub) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 1000}, locale="en-US")
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"error: pageerror {e}"))
            response = page.goto(research_hub.url + "/research")
            assert response is not None and "script-src 'self'" in response.headers["content-security-policy"]
            poll(page, "document.body.dataset.ready === 'yes'")
            assert page.evaluate("document.documentElement.lang") == "en"
            assert page.is_visible("#signin") and not page.is_visible("#workspace")

            page.fill("#token", research_hub.researcher)
            page.keyboard.press("Enter")
            poll(page, "document.body.dataset.loaded === 'yes'")
            assert page.evaluate("sessionStorage.getItem('medcloud.token')") == research_hub.researcher

            # The chart: society A (lung data of site-a and site-b) against its targets; the brain-only
            # society C and the society without sites are not shown to a lung researcher.
            rows = {(r["kind"], r["id"]): r for r in _rows(page)}
            assert set(rows) == {("society", "soc-a"), ("site", "site-a"), ("site", "site-b")}
            assert (rows["society", "soc-a"]["count"], rows["society", "soc-a"]["target"]) == ("5", "10")
            assert "5 / 10 (50%)" in rows["society", "soc-a"]["text"]
            assert (rows["site", "site-a"]["count"], rows["site", "site-a"]["target"]) == ("3", "4")
            assert "3 / 4 (75%)" in rows["site", "site-a"]["text"]
            assert rows["site", "site-b"]["target"] == "" and "no target" in rows["site", "site-b"]["text"]
            assert "Hospital A" in rows["site", "site-a"]["text"]
            # The filled bar is drawn in proportion: 3/4 of the track.
            widths = page.evaluate(
                """(() => { const g = document.querySelector('#progress-chart g[data-id="site-a"]');
                    return [g.querySelector('rect.track').getAttribute('width'),
                            g.querySelector('rect.fill').getAttribute('width')]; })()"""
            )
            assert abs(float(widths[1]) / float(widths[0]) - 0.75) < 1e-6
            page.check("input[name=metric][value=images]")
            rows = {(r["kind"], r["id"]): r for r in _rows(page)}
            assert (rows["society", "soc-a"]["count"], rows["society", "soc-a"]["target"]) == ("6", "20")
            assert (rows["site", "site-a"]["count"], rows["site", "site-a"]["target"]) == ("4", "8")

            # The study browser: six lung studies; the thumbnails load or show the placeholder.
            assert "1–6 of 6 studies" in page.inner_text("#results-summary")
            poll(page, "document.getElementById('studies').dataset.thumbs === 'done'")
            studies = _study_rows(page)
            assert len(studies) == 6 and all(s["thumb"] in ("image", "placeholder") for s in studies)
            assert studies[0]["href"] == f"/viewer/?study={studies[0]['uid']}"
            # Filter by modality: only the three MR studies remain.
            page.fill("#filters input[name=modality]", "mr")
            page.click("#apply")
            poll(page, "document.body.dataset.studiesLoaded === 'yes' && "
                       "document.getElementById('results-summary').textContent.includes('of 3')")  # fmt: skip
            studies = _study_rows(page)
            assert len(studies) == 3 and {s["modalities"] for s in studies} == {"MR"}
            page.select_option("#filters select[name=sex]", "F")
            page.click("#apply")
            poll(page, "document.getElementById('results-summary').textContent.includes('of 1 ')")
            page.select_option("#filters select[name=sex]", "")
            page.click("#apply")
            poll(page, "document.getElementById('results-summary').textContent.includes('of 3 ')")

            # Whole-slide images: listed when the hub has the slide API, otherwise a clear note.
            poll(page, "document.querySelectorAll('#slides li').length > 0")

            # Save the current filters (modality MR) as a cohort; it is listed with its count now.
            page.fill("#cohort-name", "lung-mr")
            page.click("#cohort-form button[type=submit]")
            poll(page, "document.querySelector('#cohort-list li[data-cohort=\"lung-mr\"]') !== null")
            assert "saved" in page.inner_text("#cohort-status")
            item = page.locator('#cohort-list li[data-cohort="lung-mr"]')
            assert item.get_attribute("data-matches") == "3"
            assert "modality=MR" in item.inner_text() and "3 images match now" in item.inner_text()
            saved = httpx.get(
                f"{research_hub.url}/api/v1/cohorts/lung-mr",
                headers={"Authorization": f"Bearer {research_hub.researcher}"},
            ).json()
            assert saved["query"] == [{"kind": "image", "modality": "MR"}] and saved["matches"] == 3
            assert "No frozen dataset versions yet." in page.inner_text("#dataset-list")
            # A version frozen from the cohort (with the CLI's API) is listed after a reload; the token stays in
            # the tab, so the page comes back signed in.
            frozen = httpx.post(
                f"{research_hub.url}/api/v1/datasets",
                json={"name": "lung-mr-v1", "cohort": "lung-mr", "seed": 1},
                headers={"Authorization": f"Bearer {research_hub.researcher}"},
            )
            assert frozen.status_code == 201, frozen.text
            page.reload()
            poll(page, "document.body.dataset.loaded === 'yes'")
            listed = page.locator(f'#dataset-list li[data-dataset="{frozen.json()["id"]}"]')
            assert "lung-mr-v1" in listed.inner_text() and "3 files" in listed.inner_text()
            page.fill("#filters input[name=modality]", "MR")
            page.click("#apply")
            poll(page, "document.getElementById('results-summary').textContent.includes('of 3 ')")

            # A report finding joins the image filters: no lung report says pneumothorax, so nothing matches,
            # and the cohort saved from these filters holds both terms.
            page.select_option("#filters select[name=finding]", "pneumothorax")
            page.click("#apply")
            poll(page, "document.getElementById('results-summary').textContent.includes('No study matches')")
            page.fill("#cohort-name", "lung-mr-ptx")
            page.click("#cohort-form button[type=submit]")
            poll(page, "document.querySelector('#cohort-list li[data-cohort=\"lung-mr-ptx\"]') !== null")
            item = page.locator('#cohort-list li[data-cohort="lung-mr-ptx"]')
            assert item.get_attribute("data-matches") == "0"
            assert "modality=MR AND code=pneumothorax status=present" in item.inner_text()
            page.select_option("#filters select[name=finding]", "")
            page.click("#apply")
            poll(page, "document.getElementById('results-summary').textContent.includes('of 3 ')")

            # Japanese: every label from the ja table, the chart's society name too.
            page.click("#lang")
            poll(page, "document.documentElement.lang === 'ja'")
            assert page.inner_text("h1") == "研究ワークベンチ"
            assert page.inner_text("#progress-h") == "収集状況"
            assert page.inner_text("#apply") == "検索"
            assert "学会A" in page.inner_text("#progress-chart")
            assert "3 件中 1–3 件" in page.inner_text("#results-summary")
            assert "現在 3 画像が該当" in page.inner_text("#cohort-list")
            assert "コホート「lung-mr-ptx」を保存しました" in page.inner_text("#cohort-status")
            assert page.title() == "medcloud · 研究ワークベンチ"
            page.screenshot(path=str(ARTIFACTS / "browser-research-ja.png"), full_page=True)
            page.click("#lang")
            poll(page, "document.documentElement.lang === 'en'")
            assert page.inner_text("#progress-h") == "Collection progress"
            page.screenshot(path=str(ARTIFACTS / "browser-research-en.png"), full_page=True)

            # The Gram-stain page links here.
            page.goto(research_hub.url + "/")
            poll(page, "document.body.dataset.ready === 'yes'")
            assert page.locator('a[href="/research"]').count() == 1
            context.close()

            # A browser set to Japanese opens the page in Japanese; a refused token signs out with a message.
            ja = browser.new_context(locale="ja-JP")
            page = ja.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.goto(research_hub.url + "/research")
            poll(page, "document.body.dataset.ready === 'yes'")
            assert page.evaluate("document.documentElement.lang") == "ja"
            assert page.inner_text("#signin-h") == "サインイン"
            page.fill("#token", "mct_0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            page.keyboard.press("Enter")
            poll(page, "document.getElementById('token-help').textContent.includes('401')")
            assert page.is_visible("#signin") and not page.is_visible("#workspace")
            assert page.evaluate("sessionStorage.getItem('medcloud.token')") is None
            ja.close()
        finally:
            browser.close()
    csp = [m for m in console if m.startswith("error") and ("Content Security Policy" in m or "pageerror" in m)]
    assert not csp, console
