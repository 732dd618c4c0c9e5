"""Passkeys on the hub's page in headless Debian Chromium with its virtual authenticator (CDP WebAuthn),
against a real hub over uvicorn: a person's session is held at the passkey step, registers a passkey,
signs in with it and reaches the page; a forged credential (same id, another authenticator's key) is
refused; the browser's own assertion replayed is refused. No Content-Security-Policy violation."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from tests.live_hub import hub_in_thread

from .conftest import CHROMIUM
from .test_gram_page import poll

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium"),
]

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip
PERSON = "ana@hospital.example"
VERIFY = "/api/v1/auth/webauthn/authenticate/verify"


@dataclass
class PasskeyHub:
    url: str  # http://localhost:PORT: WebAuthn needs a domain name (the relying party is "localhost")
    state: Any

    def session(self) -> str:
        from medcloud.security.policy import Role
        from medcloud.security.tokens import _issue

        issued = _issue(
            self.state.catalog, Role.CLINICIAN, None, (), "sign-in", timedelta(hours=1), "test", "", kind="session",
            person=PERSON,
        )  # fmt: skip
        return issued.token


@pytest.fixture(scope="module")
def passkey_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasskeyHub]:
    from medcloud.config import load_settings
    from medcloud.hub.app import create_app
    from medcloud.hub.state import HubState

    settings = load_settings(data_dir=tmp_path_factory.mktemp("passkeys") / "data")
    state = HubState.open(settings)
    try:
        with hub_in_thread(create_app(settings, state=state)) as url:
            yield PasskeyHub(url.replace("127.0.0.1", "localhost"), state)
    finally:
        state.close()


def _authenticator(context: Any, page: Any) -> tuple[Any, str]:
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {"options": {"protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                     "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True}},
    )  # fmt: skip
    return cdp, str(added["authenticatorId"])


def _sign_in(page: Any, url: str, token: str) -> None:
    page.goto(url + "/")
    poll(page, "document.body.dataset.ready === 'yes'")
    page.fill("#token", token)
    page.click("#signin-button")
    poll(page, "document.body.dataset.signedIn === 'passkey'")


def _whoami(url: str, token: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/api/v1/whoami", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 200, r.text
    return dict(r.json()["second_factor"])


def test_passkey_register_sign_in_forged_and_replayed(passkey_hub: PasskeyHub) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from playwright.sync_api import sync_playwright

    url = passkey_hub.url
    console: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            # 1. A fresh session of a person with no passkey: held at the passkey step, offered enrolment.
            context = browser.new_context()
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            sent: list[str] = []
            page.on("request", lambda r: sent.append(r.post_data or "") if r.url.endswith(VERIFY) else None)
            cdp, authenticator = _authenticator(context, page)
            token = passkey_hub.session()
            _sign_in(page, url, token)
            assert page.is_hidden("#workspace") and page.is_visible("#passkey-register")
            assert page.is_hidden("#passkey-use")
            r = httpx.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 403 and r.json()["type"].endswith("/second-factor-required")

            # 2. Register a passkey, then use it: the page opens.
            page.click("#passkey-register")
            poll(page, "document.getElementById('passkey-status').dataset.state === 'passkey.registered'")
            credentials = cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]
            assert len(credentials) == 1 and credentials[0]["rpId"] == "localhost"
            assert page.is_visible("#passkey-use")
            page.click("#passkey-use")
            poll(page, "document.body.dataset.signedIn === 'yes'")
            assert "Model" in page.inner_text("#model-info")
            assert _whoami(url, token)["state"] == "ok"
            assert len(sent) == 1

            # 3. The browser's own good assertion, sent again: its challenge is spent.
            replay = httpx.post(
                url + VERIFY, content=sent[0], timeout=10,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )  # fmt: skip
            assert replay.status_code == 403 and replay.json()["detail"] == "passkey not accepted"
            context.close()

            # 4. Another authenticator holding a credential with the same id but its own key (a forgery):
            # the browser signs, the hub's check of the stored public key refuses it.
            context = browser.new_context()
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            cdp, other = _authenticator(context, page)
            forged_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            cdp.send(
                "WebAuthn.addCredential",
                {"authenticatorId": other, "credential": {
                    "credentialId": credentials[0]["credentialId"], "isResidentCredential": False,
                    "rpId": "localhost", "privateKey": base64.b64encode(forged_key).decode(), "signCount": 100}},
            )  # fmt: skip
            second = passkey_hub.session()
            _sign_in(page, url, second)
            assert page.is_visible("#passkey-use") and page.is_hidden("#passkey-register")
            page.click("#passkey-use")
            poll(page, "document.getElementById('passkey-status').dataset.state === 'passkey.failed'")
            assert "passkey not accepted" in page.inner_text("#passkey-status")
            assert page.is_hidden("#workspace")
            assert _whoami(url, second)["state"] == "needed"
            context.close()
        finally:
            browser.close()
    assert not [m for m in console if m.startswith("error") and "Content Security Policy" in m], console
    assert json.loads(sent[0])["credential"]["id"] == credentials[0]["credentialId"].replace("+", "-").replace(
        "/", "_"
    ).rstrip("=")


def test_enrolment_code_on_a_new_device(passkey_hub: PasskeyHub) -> None:
    """A person whose passkey is on another device (or lost) enrols a new one with an administrator's code:
    a wrong code is refused on the page; the real one registers the new device's passkey, which then works."""
    from playwright.sync_api import sync_playwright

    from medcloud.security import enrolment_codes

    url = passkey_hub.url
    person = "ben@hospital.example"
    console: list[str] = []

    def session() -> str:
        from medcloud.security.policy import Role
        from medcloud.security.tokens import _issue

        return _issue(
            passkey_hub.state.catalog, Role.CLINICIAN, None, (), "sign-in", timedelta(hours=1), "test", "",
            kind="session", person=person,
        ).token  # fmt: skip

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            # Ben's old device: a passkey registered right after sign-in.
            context = browser.new_context()
            page = context.new_page()
            _authenticator(context, page)
            _sign_in(page, url, session())
            page.click("#passkey-register")
            poll(page, "document.getElementById('passkey-status').dataset.state === 'passkey.registered'")
            context.close()
            # The new device: another authenticator; the hub asks for the old passkey, offers the code form.
            context = browser.new_context()
            page = context.new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            cdp, authenticator = _authenticator(context, page)
            token = session()
            _sign_in(page, url, token)
            assert page.is_visible("#passkey-code-form") and page.is_hidden("#passkey-register")
            page.fill("#passkey-code", "AAAA-BBBB-CCCC-DDDD")
            page.click("#passkey-code-register")
            poll(page, "document.getElementById('passkey-status').dataset.state === 'passkey.failed'")
            assert "passkey not accepted" in page.inner_text("#passkey-status")
            assert cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"] == []
            issued = enrolment_codes.issue(
                passkey_hub.state.catalog, person, by="test-admin", seconds=600, max_seconds=3600
            )
            page.fill("#passkey-code", issued.code)
            page.click("#passkey-code-register")
            poll(page, "document.getElementById('passkey-status').dataset.state === 'passkey.registered'")
            assert len(cdp.send("WebAuthn.getCredentials", {"authenticatorId": authenticator})["credentials"]) == 1
            page.click("#passkey-use")
            poll(page, "document.body.dataset.signedIn === 'yes'")
            assert _whoami(url, token)["state"] == "ok"
            assert [c["state"] for c in enrolment_codes.listing(passkey_hub.state.catalog, person)] == ["spent"]
            context.close()
        finally:
            browser.close()
    assert not [m for m in console if m.startswith("error") and "Content Security Policy" in m], console
