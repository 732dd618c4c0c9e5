"""Sign-in through the hospital's identity provider, against a real certified OpenID provider on 127.0.0.1.

npm `oidc-provider` (tests/oidc_provider/) plays the hospital's Keycloak; a real hub on a real port; the
person's browser is plain HTTP. Each test signs in as its own person.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from medcloud.security.oidc import GrantBox, OidcClient, SignInRefused
from medcloud.security.tokens import issue_token
from medcloud.store.db import utcnow
from tests.security.oidc_env import (
    CLIENT_ID,
    OTHER_CLIENT_ID,
    PASSWORD,
    Browser,
    Provider,
    authorization_code,
    oidc_hub,
    run_provider,
    second_hub,
)


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with run_provider() as p:
        yield p


@pytest.fixture(scope="module")
def hub(provider: Provider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    with oidc_hub(provider, tmp_path_factory.mktemp("oidc")) as served:
        yield served


@pytest.fixture
def browser() -> Iterator[Browser]:
    b = Browser()
    yield b
    b.close()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_rows(state: Any, action: str) -> list[dict[str, Any]]:
    return [r for r in state.catalog.audit.page(limit=10_000) if r["action"] == action]


def test_sign_in_gives_a_session_token_with_the_mapped_role_and_projects(
    hub: tuple[str, Any], browser: Browser
) -> None:
    url, state = hub
    config = httpx.get(f"{url}/api/v1/auth/config").json()
    assert config["oidc"] is True and config["login_url"] == "/auth/login"
    assert config["label"] == "Sign in with hospital account"

    session = browser.sign_in(url, "alice")
    assert session["kind"] == "session" and session["person"] == "alice"
    assert session["role"] == "researcher" and session["projects"] == ["chest-ct", "lung"]
    me = httpx.get(f"{url}/api/v1/whoami", headers=bearer(session["token"]))
    assert me.status_code == 200 and me.json()["projects"] == ["chest-ct", "lung"]
    assert httpx.get(f"{url}/api/v1/studies", headers=bearer(session["token"])).status_code == 200
    # A researcher's session is not an admin's.
    assert httpx.get(f"{url}/api/v1/tokens", headers=bearer(session["token"])).status_code == 403
    row = state.catalog.tokens.get(session["token_id"])
    assert row["kind"] == "session" and row["person"] == "alice" and row["last_used_at"] is not None

    # The hand-over is good once; the page's POST without it is refused.
    again = browser.http.post(f"{url}/api/v1/auth/session")
    assert again.status_code == 401

    # The provider's tokens are kept only encrypted; no token, code or secret in any audit detail.
    stored = state.catalog.oidc.by_token(session["token_id"])
    box = stored["grant_box"]
    kept = GrantBox((state.settings.oidc_client_secret_file).read_text().strip()).open(stored["id"], box)
    assert kept["refresh_token"] and kept["id_token"].startswith("eyJ")
    assert kept["refresh_token"].encode() not in box and b"eyJ" not in box
    details = json.dumps([r["detail"] for r in state.catalog.audit.page(limit=10_000)])
    for secret in (session["token"], session["token"].split(".")[1], kept["refresh_token"], kept["id_token"]):
        assert secret not in details
    login = [r for r in audit_rows(state, "auth.login") if r["subject"] == "oidc:alice"]
    assert login and login[-1]["outcome"] == "ok"


def test_several_mapped_groups_give_the_least_administrative_role_unless_one_is_asked(
    hub: tuple[str, Any], browser: Browser
) -> None:
    url, state = hub
    assert browser.sign_in(url, "dave")["role"] == "researcher"
    callback = browser.to_callback(url, browser.start(url, role="admin"), "dave")
    assert browser.http.get(callback).status_code == 303
    admin = browser.http.post(f"{url}/api/v1/auth/session").json()
    assert admin["role"] == "admin" and admin["projects"] == []
    # An admin action by a person's session needs a recent passkey (tests/hub/test_passkeys.py does the
    # ceremony); here the passkey step is recorded directly, as its verify route would.
    refused = httpx.get(f"{url}/api/v1/tokens", headers=bearer(admin["token"]))
    assert refused.status_code == 403 and refused.json()["type"].endswith("/second-factor-required")
    with state.catalog.write() as conn:
        assert state.catalog.tokens.set_mfa(conn, admin["token"].split(".")[0].removeprefix("mct_"), utcnow())
    state.verifier.forget(admin["token"].split(".")[0].removeprefix("mct_"))
    assert httpx.get(f"{url}/api/v1/tokens", headers=bearer(admin["token"])).status_code == 200
    # A role the groups do not give is refused, not widened.
    fresh = Browser()
    try:
        r = fresh.http.get(fresh.to_callback(url, fresh.start(url, role="admin"), "alice"))
        assert r.status_code == 401 and "do not give the role" in r.json()["detail"]
    finally:
        fresh.close()


def test_a_person_in_no_mapped_group_is_refused(hub: tuple[str, Any], browser: Browser) -> None:
    url, state = hub
    callback = browser.to_callback(url, browser.start(url), "carol")
    r = browser.http.get(callback)
    assert r.status_code == 401 and "is mapped to a medcloud role" in r.json()["detail"]
    assert "medcloud_signin" not in r.headers.get("set-cookie", "")
    assert browser.http.post(f"{url}/api/v1/auth/session").status_code == 401
    failed = [r for r in audit_rows(state, "auth.login") if r["subject"] == "oidc:carol"]
    assert failed and failed[-1]["outcome"] == "failed"


def test_logout_revokes_the_session_and_points_to_the_providers_end_session(
    hub: tuple[str, Any], browser: Browser, provider: Provider
) -> None:
    url, state = hub
    session = browser.sign_in(url, "hank")
    r = httpx.post(f"{url}/api/v1/auth/logout", headers=bearer(session["token"]))
    assert r.status_code == 200, r.text
    end = urlsplit(r.json()["end_session_url"])
    assert f"{end.scheme}://{end.netloc}" == provider.issuer and end.path == "/session/end"
    query = parse_qs(end.query)
    assert query["client_id"] == [CLIENT_ID] and query["post_logout_redirect_uri"] == [f"{url}/"]
    assert query["id_token_hint"][0].startswith("eyJ")
    me = httpx.get(f"{url}/api/v1/whoami", headers=bearer(session["token"]))
    assert me.status_code == 401 and "revoked" in me.json()["detail"]
    assert httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(session["token"])).status_code == 401
    assert state.catalog.oidc.by_token(session["token_id"])["grant_box"] is None
    out = audit_rows(state, "auth.logout")[-1]
    assert out["outcome"] == "ok"
    # Machine tokens are neither refreshed nor signed out here.
    machine = issue_token(state.catalog, role="auditor").token
    assert httpx.post(f"{url}/api/v1/auth/logout", headers=bearer(machine)).status_code == 403


def test_refresh_extends_and_is_refused_once_the_provider_revokes_the_grant(
    hub: tuple[str, Any], browser: Browser, provider: Provider
) -> None:
    url, state = hub
    session = browser.sign_in(url, "erin")
    r = httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(session["token"]))
    assert r.status_code == 200, r.text
    assert r.json()["expires_at"] >= session["expires_at"]
    provider.admin("revoke", "erin")
    r = httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(session["token"]))
    assert r.status_code == 401 and "refused the grant" in r.json()["detail"]
    # The provider said no: the session is over here too.
    assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(session["token"])).status_code == 401
    assert audit_rows(state, "auth.refresh")[-1]["outcome"] == "refused"


def test_refresh_maps_the_groups_again(hub: tuple[str, Any], browser: Browser, provider: Provider) -> None:
    url, _ = hub
    session = browser.sign_in(url, "frank")
    assert session["projects"] == ["chest-ct"]
    provider.admin("groups", "frank", ["radiology-research", "lung-ai"])
    assert httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(session["token"])).status_code == 200
    me = httpx.get(f"{url}/api/v1/whoami", headers=bearer(session["token"])).json()
    assert me["projects"] == ["chest-ct", "lung"]
    provider.admin("groups", "frank", ["nursing"])  # removed from every mapped group
    r = httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(session["token"]))
    assert r.status_code == 401 and "is mapped to a medcloud role" in r.json()["detail"]
    assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(session["token"])).status_code == 401


def test_refresh_is_refused_for_a_disabled_account(hub: tuple[str, Any], browser: Browser, provider: Provider) -> None:
    url, _ = hub
    session = browser.sign_in(url, "gina")
    provider.admin("disable", "gina")
    assert httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(session["token"])).status_code == 401


def test_state_must_match_the_browser_that_started(hub: tuple[str, Any], browser: Browser) -> None:
    url, _ = hub
    callback = browser.to_callback(url, browser.start(url, return_to="//evil.example/phish"), "ivan")
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    forged = urlunsplit(parts._replace(query=urlencode({**query, "state": query["state"][:-2] + "xx"})))
    r = browser.http.get(forged)
    assert r.status_code == 401 and "state" in r.json()["detail"]
    # Another browser (an attacker's link, no state cookie) cannot complete this sign-in.
    with httpx.Client() as other:
        assert other.get(callback).status_code == 401
    r = browser.http.get(callback)  # the browser that started it can
    assert r.status_code == 303 and r.headers["location"] == "/#signin"  # back to this hub, not elsewhere
    (handoff,) = [c.lower() for c in r.headers.get_list("set-cookie") if c.startswith("medcloud_signin=")]
    assert "httponly" in handoff and "samesite=strict" in handoff and "path=/api/v1/auth/session" in handoff


def test_a_replayed_authorization_code_is_refused(hub: tuple[str, Any], browser: Browser, provider: Provider) -> None:
    url, _ = hub
    callback = browser.to_callback(url, browser.start(url), "ivan")
    assert browser.http.get(callback).status_code == 303
    assert browser.http.post(f"{url}/api/v1/auth/session").status_code == 200
    # The same callback again: its state is spent.
    assert browser.http.get(callback).status_code == 401
    # The old code under a fresh sign-in's state: the provider refuses the code (used, other PKCE verifier).
    fresh = parse_qs(urlsplit(browser.start(url)).query)["state"][0]
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    r = browser.http.get(urlunsplit(parts._replace(query=urlencode({**query, "state": fresh}))))
    assert r.status_code == 401 and "refused the grant" in r.json()["detail"]
    # And straight at the provider, with the right verifier: a code is good once.
    code, verifier, _ = authorization_code(provider.issuer, CLIENT_ID, url, "ivan")
    client = OidcClient(provider.issuer, CLIENT_ID, provider.secret)
    try:
        client.exchange_code(code=code, redirect_uri=f"{url}/auth/callback", code_verifier=verifier)
        with pytest.raises(SignInRefused, match="invalid_grant"):
            client.exchange_code(code=code, redirect_uri=f"{url}/auth/callback", code_verifier=verifier)
    finally:
        client.close()


def test_a_nonce_other_than_the_hubs_is_refused(hub: tuple[str, Any], browser: Browser) -> None:
    url, _ = hub
    auth = urlsplit(browser.start(url))
    query = {k: v[0] for k, v in parse_qs(auth.query).items()}
    tampered = urlunsplit(auth._replace(query=urlencode({**query, "nonce": "n-" + query["nonce"][2:]})))
    r = browser.http.get(browser.to_callback(url, tampered, "judy"))
    assert r.status_code == 401 and "nonce" in r.json()["detail"]


def _id_token(issuer: str, client_id: str, secret: str, hub: str) -> tuple[str, str]:
    code, verifier, nonce = authorization_code(issuer, client_id, hub, "alice")
    client = OidcClient(issuer, client_id, secret)
    try:
        tokens = client.exchange_code(code=code, redirect_uri=f"{hub}/auth/callback", code_verifier=verifier)
    finally:
        client.close()
    return tokens["id_token"], nonce


def test_id_tokens_for_another_audience_or_from_another_issuer_are_refused(
    hub: tuple[str, Any], provider: Provider
) -> None:
    url, _ = hub
    ours = OidcClient(provider.issuer, CLIENT_ID, provider.secret)
    try:
        # Issued by our provider, validly signed, but to another application.
        token, nonce = _id_token(provider.issuer, OTHER_CLIENT_ID, provider.other_secret, url)
        other = OidcClient(provider.issuer, OTHER_CLIENT_ID, provider.other_secret)
        assert other.validate_id_token(token, nonce=nonce)["sub"] == "alice"  # good for the app it was for
        other.close()
        with pytest.raises(SignInRefused, match="another audience"):
            ours.validate_id_token(token, nonce=nonce)
        # To us, signed with a key our provider publishes, but by another issuer.
        token, nonce = _id_token(provider.other_issuer, CLIENT_ID, provider.secret, url)
        with pytest.raises(SignInRefused, match="another issuer"):
            ours.validate_id_token(token, nonce=nonce)
        # Ours, right in every way but time: expired, or issued in the future.
        token, nonce = _id_token(provider.issuer, CLIENT_ID, provider.secret, url)
        claims = ours.validate_id_token(token, nonce=nonce)
        with pytest.raises(SignInRefused, match="expired"):
            ours.validate_id_token(token, nonce=nonce, now=claims["exp"] + 120)
        with pytest.raises(SignInRefused, match="implausible"):
            ours.validate_id_token(token, nonce=nonce, now=claims["iat"] - 120)
        # Issued 700 s ago: too old for a sign-in, still good as a refresh's (unexpired) ID token.
        later = {**claims, "exp": claims["iat"] + 3600}
        with pytest.raises(SignInRefused, match="implausible"):
            ours.check_claims(later, nonce=nonce, now=claims["iat"] + 700)
        ours.check_claims(later, nonce=None, now=claims["iat"] + 700, fresh=False)
        # Tampered claims (signature no longer matches), and `alg: none`.
        head, body, sig = token.split(".")
        forged = json.loads(base64.urlsafe_b64decode(body + "=="))
        forged["sub"] = "mallory"
        body2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        with pytest.raises(SignInRefused, match="signature"):
            ours.validate_id_token(f"{head}.{body2}.{sig}", nonce=nonce)
        none = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        with pytest.raises(SignInRefused, match="allowed"):
            ours.validate_id_token(f"{none}.{body2}.", nonce=nonce)
    finally:
        ours.close()


def test_idle_sessions_and_sessions_past_their_maximum_are_refused(hub: tuple[str, Any], provider: Provider) -> None:
    with second_hub(provider, hub[1], session_idle_seconds=1, session_max_seconds=3) as (url, state):
        machine = issue_token(state.catalog, role="auditor").token
        browser = Browser()
        try:
            first = browser.sign_in(url, "kim")
            signed_in = time.monotonic()
            for _ in range(4):  # used every 0.4 s, for longer than the idle timeout: never idle
                assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(first["token"])).status_code == 200
                time.sleep(0.4)
            assert state.catalog.tokens.get(first["token_id"])["last_used_at"] is not None
            time.sleep(max(0.0, 3.2 - (time.monotonic() - signed_in)))
            r = httpx.get(f"{url}/api/v1/whoami", headers=bearer(first["token"]))
            assert r.status_code == 401 and "expired" in r.json()["detail"]  # session_max_seconds
            assert httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(first["token"])).status_code == 401

            second = browser.sign_in(url, "kim")
            assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(second["token"])).status_code == 200
            time.sleep(1.4)
            r = httpx.get(f"{url}/api/v1/whoami", headers=bearer(second["token"]))
            assert r.status_code == 401 and "idle" in r.json()["detail"]
            # Idle stays idle: the refusal is not a use.
            assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(second["token"])).status_code == 401
            # Machine tokens have no idle timeout.
            assert httpx.get(f"{url}/api/v1/audit", headers=bearer(machine)).status_code == 200
        finally:
            browser.close()


def test_a_rotated_signing_key_is_fetched_again_and_a_retired_one_refused(
    hub: tuple[str, Any], provider: Provider, browser: Browser
) -> None:
    url, state = hub
    first = browser.sign_in(url, "mia")  # the hub now holds the provider's keys
    stored = state.catalog.oidc.by_token(first["token_id"])
    secret = state.settings.oidc_client_secret_file.read_text().strip()
    retired = GrantBox(secret).open(stored["id"], stored["grant_box"])["id_token"]
    provider.admin("rotate")
    fresh = Browser()
    try:
        second = fresh.sign_in(url, "nina")  # signed with a key id the hub had not seen: fetched once more
    finally:
        fresh.close()
    assert second["role"] == "researcher"
    with pytest.raises(SignInRefused, match="does not publish"):
        state.signin.client.validate_id_token(retired, nonce=None)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed at /usr/bin/chromium")
def test_the_research_page_signs_in_with_the_hospital_account(hub: tuple[str, Any], provider: Provider) -> None:
    """The button, the provider's form, back to the page signed in (no token in any URL), and sign-out."""
    from playwright.sync_api import sync_playwright

    from tests.browser.test_gram_page import poll

    url, _ = hub
    console: list[str] = []
    seen: list[str] = []
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = chromium.new_context(locale="en-US").new_page()
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("request", lambda r: seen.append(r.url))
            page.goto(f"{url}/research")
            poll(page, "!document.getElementById('sso-button').hidden")
            assert page.inner_text("#sso-button") == "Sign in with hospital account"
            page.click("#sso-button")
            page.wait_for_url(f"{provider.issuer}/interaction/**")
            page.fill("input[name=login]", "lena")
            page.fill("input[name=password]", PASSWORD)
            page.click("button")
            page.wait_for_url(f"{url}/research**")
            poll(page, "document.body.dataset.loaded === 'yes'")
            token = page.evaluate("sessionStorage.getItem('medcloud.token')")
            assert token.startswith("mct_") and page.evaluate("location.hash") == ""
            assert "researcher" in page.inner_text("#who") and "chest-ct" in page.inner_text("#who")
            assert not any(token in u or token.split(".")[1] in u for u in seen)
            page.click("#signout")
            page.wait_for_url(f"{provider.issuer}/session/end**")
        finally:
            chromium.close()
    assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(token)).status_code == 401
    assert not [m for m in console if "Content Security Policy" in m], console


def test_refreshing_is_not_a_use_an_open_page_cannot_outlast_the_idle_timeout(
    hub: tuple[str, Any], provider: Provider
) -> None:
    """The pages refresh a hospital session on a timer; that alone must not keep an unattended session alive."""
    with second_hub(provider, hub[1], session_idle_seconds=2, session_max_seconds=60) as (url, _state):
        browser = Browser()
        try:
            used = browser.sign_in(url, "kim")
            unattended = browser.sign_in(url, "kim")
            t0 = time.monotonic()
            for _ in range(5):  # 3 s in all, past the 2 s idle timeout
                time.sleep(0.6)
                # `used` is used between refreshes; `unattended` is only refreshed, as an open page does.
                assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(used["token"])).status_code == 200
                r = httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(used["token"]))
                assert r.status_code == 200, r.text
                r = httpx.post(f"{url}/api/v1/auth/refresh", headers=bearer(unattended["token"]))
                if time.monotonic() - t0 < 1.5:  # well inside the idle timeout: refreshed
                    assert r.status_code == 200, r.text
            # Only refreshed for 3 s: idle, refused, and the refusal ends the refresh too.
            assert r.status_code == 401 and "idle" in r.json()["detail"]
            assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(unattended["token"])).status_code == 401
            assert httpx.get(f"{url}/api/v1/whoami", headers=bearer(used["token"])).status_code == 200
        finally:
            browser.close()
