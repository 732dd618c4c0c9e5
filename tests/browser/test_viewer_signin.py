"""The viewer pages' "Sign in with hospital account" in headless Debian Chromium, end to end: a real hub
(passkeys required), the real OpenID provider (npm oidc-provider, tests/oidc_provider/) and Chromium's
virtual authenticator. From /viewer/?study=X with no token: the button, the provider's form, the research
page's passkey step, and back on /viewer/?study=X with the study drawn; signing out there ends the session
at the hub and at the provider. The research page follows only a `next` under /viewer/ of this hub."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.security.oidc_env import PASSWORD, Provider, oidc_hub, run_provider

from .conftest import CHROMIUM
from .synthetic_ct import ct_series
from .test_passkeys_page import FLAGS, _authenticator
from .test_viewer_page import BUILT, SLICES, STUDY, probe_after
from .test_viewer_page import poll as wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
    pytest.mark.skipif(not BUILT.exists(), reason="the viewer is not built: run `make` (npm run build in frontend/)"),
]

PROJECT = "chest-ct"  # where the provider's "radiology-research" group maps (tests/security/oidc_env.py)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with run_provider() as p:
        yield p


@pytest.fixture(scope="module")
def hub(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub that signs people in through `provider` and wants their passkey, as http://localhost:PORT."""
    from medcloud.security.tokens import issue_token

    with oidc_hub(provider, tmp_path_factory.mktemp("viewer-signin"), mfa_required=True) as (url, state):
        site_token = issue_token(state.catalog, role="site", site="site-a", projects=[PROJECT]).token
        site = {"Authorization": f"Bearer {site_token}"}
        for data in ct_series(STUDY, slices=SLICES, number=1, description="DISC"):
            r = httpx.post(f"{url}/api/v1/ingest", content=data, headers=site, timeout=30)
            assert r.status_code == 201, r.text
        # WebAuthn needs a domain name: the browser opens the hub as localhost (registered at the provider too).
        yield url.replace("127.0.0.1", "localhost")


def _page(browser: Any, console: list[str]) -> tuple[Any, Any]:
    context = browser.new_context(locale="en-US", viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    return context, page


def _sign_in_from_viewer(page: Any, url: str, provider: Provider, user: str) -> None:
    """From the viewer page without a token: the button, the provider's form, the research page's passkey step."""
    wait_for(page, "document.body.dataset.ready === 'signin' && document.body.dataset.sso === 'yes'")
    assert page.is_visible("#sso-button") and "Sign in with hospital account" in page.inner_text("#sso-button")
    page.click("#sso-button")
    page.wait_for_url(f"{provider.issuer}/interaction/**")
    page.fill("input[name=login]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button")
    page.wait_for_url(f"{url}/research?next=**")
    # A fresh session of a person with no passkey: held at the passkey step, which registers one, then uses it.
    wait_for(page, "document.body.dataset.signedIn === 'passkey'")
    assert page.is_hidden("#workspace")
    page.click("#passkey-register")
    wait_for(page, "document.getElementById('passkey-status').dataset.state === 'passkey.registered'")
    page.click("#passkey-use")


def test_viewer_signs_in_with_the_hospital_account_and_comes_back(hub: str, provider: Provider) -> None:
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    seen: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            # The slide viewer offers the same button.
            context, page = _page(browser, console)
            page.goto(f"{hub}/viewer/slide.html?id=slide-1")
            wait_for(page, "document.body.dataset.ready === 'signin' && document.body.dataset.sso === 'yes'")
            assert page.is_visible("#sso-button")
            context.close()

            context, page = _page(browser, console)
            page.on("request", lambda r: seen.append(r.url))
            cdp, authenticator = _authenticator(context, page)
            page.goto(f"{hub}/viewer/?study={STUDY}")
            _sign_in_from_viewer(page, hub, provider, "lena")
            page.wait_for_url(f"{hub}/viewer/?study={STUDY}", timeout=30_000)
            wait_for(page, "['yes', 'failed'].includes(document.body.dataset.ready)", timeout=40)
            assert page.evaluate("document.body.dataset.ready") == "yes", console
            assert page.evaluate("document.body.dataset.seriesCount") == "1"
            assert "SYNTHETIC PHANTOM" in page.inner_text("#study-label")
            drawn = probe_after(page, SLICES // 2)
            assert drawn["centre"] > 200 and drawn["corner"] < 50, drawn
            assert len(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]) == 1
            token = page.evaluate("sessionStorage.getItem('medcloud.token')")
            assert token.startswith("mct_") and page.evaluate("sessionStorage.getItem('medcloud.session')") == "yes"
            assert not any(token in u for u in seen)
            whoami = httpx.get(f"{hub}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert whoami.status_code == 200 and whoami.json()["second_factor"]["state"] == "ok", whoami.text

            # The viewer keeps the session fresh as the research page does: with the stored expiry brought
            # forward to 6 s from now, a reload refreshes it through the hub within about 5 s.
            # (The research page stored the session's expiry at sign-in.)
            assert page.evaluate("Date.parse(sessionStorage.getItem('medcloud.session.expires')) > Date.now()")
            page.evaluate(
                "sessionStorage.setItem('medcloud.session.expires', new Date(Date.now() + 6000).toISOString())"
            )
            page.reload()
            wait_for(page, "document.body.dataset.ready === 'yes'", timeout=40)
            refreshes = [u for u in seen if u.endswith("/api/v1/auth/refresh")]
            later = "Date.parse(sessionStorage.getItem('medcloud.session.expires')) > Date.now() + 30000"
            wait_for(page, later, timeout=15)
            assert len([u for u in seen if u.endswith("/api/v1/auth/refresh")]) == len(refreshes) + 1
            assert page.evaluate("sessionStorage.getItem('medcloud.token')") == token  # same token, extended
            assert page.evaluate("document.body.dataset.signedIn") != "no"

            # Signing out on the viewer ends the session at the hub and at the provider.
            page.click("#signout")
            page.wait_for_url(f"{provider.issuer}/session/end**")
            context.close()
        finally:
            browser.close()
    assert httpx.get(f"{hub}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert not [m for m in console if "Content Security Policy" in m or m.startswith("pageerror")], console


# `next` values the research page must not follow: other sites, other schemes, pages outside /viewer/
# (also through dot segments, encoded or not, and backslashes that a browser reads as slashes).
NOT_FOLLOWED = [
    "https://evil.example/viewer/",
    "//evil.example/viewer/?study=1",
    "/\\evil.example/viewer/",
    "/viewer/\\..\\research",
    "javascript:alert(1)//viewer/",
    "/research",
    "/api/v1/whoami",
    "/viewer/../api/v1/whoami",
    "/viewer/%2e%2e/api/v1/whoami",
    "viewer/?study=1",
]


def test_the_research_page_follows_only_a_next_under_viewer(hub: str, provider: Provider) -> None:
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            context, page = _page(browser, console)
            _authenticator(context, page)
            page.goto(f"{hub}/viewer/slide.html?id=slide-1")
            _sign_in_from_viewer(page, hub, provider, "mia")
            page.wait_for_url(f"{hub}/viewer/slide.html?id=slide-1")  # the control: a good `next` is followed
            for bad in NOT_FOLLOWED:
                here = f"{hub}/research?next={quote(bad, safe='')}"
                page.goto(here)
                try:
                    wait_for(page, "document.body.dataset.loaded === 'yes'")  # the research page itself, signed in
                except PlaywrightError as err:  # the page went away: it followed `next`
                    raise AssertionError(f"next={bad!r} was followed: now at {page.url}") from err
                assert page.url == here and page.is_visible("#workspace"), (bad, page.url)
            # The same signed-in tab with a good `next` leaves straight for it.
            page.goto(f"{hub}/research?next={quote(f'/viewer/?study={STUDY}', safe='')}")
            page.wait_for_url(f"{hub}/viewer/?study={STUDY}")
            wait_for(page, "document.body.dataset.ready === 'yes'", timeout=40)
            context.close()
        finally:
            browser.close()
    assert not [m for m in console if "Content Security Policy" in m or m.startswith("pageerror")], console
