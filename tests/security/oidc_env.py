"""A real OpenID provider (npm oidc-provider, tests/oidc_provider/) on 127.0.0.1, and a browser driven by httpx.

The provider runs once per test session (two issuers in one node process, sharing one signing key);
each test's hub listens on the one port registered as the provider's redirect URI.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest

from medcloud.config import load_settings
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.oidc import pkce_pair
from tests.live_hub import free_port, hub_in_thread

PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc_provider"
CLIENT_ID = "medcloud"
OTHER_CLIENT_ID = "other-app"
PASSWORD = "correct horse"
GROUP_ROLES = {"radiology-research": "chest-ct:researcher", "medcloud-admins": "admin", "lung-ai": "lung:researcher"}
# Each test signs in as its own person, so that changes made at the provider stay within one test.
ACCOUNTS = {
    "alice": ["radiology-research", "lung-ai"],
    "bob": ["medcloud-admins"],
    "carol": ["nursing"],
    "dave": ["radiology-research", "medcloud-admins"],
    "erin": ["radiology-research"],
    "frank": ["radiology-research"],
    "gina": ["radiology-research"],
    "hank": ["radiology-research"],
    "ivan": ["radiology-research"],
    "judy": ["radiology-research"],
    "kim": ["radiology-research"],
    "lena": ["radiology-research"],
    "mia": ["radiology-research"],
    "nina": ["radiology-research"],
}


@dataclass
class Provider:
    issuer: str
    other_issuer: str  # a second issuer signing with the same key
    hub_port: int
    spare_hub_port: int  # a second registered hub, for a test beside the module's hub
    secret: str
    other_secret: str

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    def admin(self, action: str, account: str | None = None, body: Any = None) -> None:
        params = {"account": account} if account else {}
        r = httpx.post(f"{self.issuer}/test-admin/{action}", params=params, json=body, timeout=10)
        assert r.status_code == 200, r.text


def _npm_ci() -> None:
    if (PROVIDER_DIR / "node_modules" / ".package-lock.json").is_file():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: the OpenID provider for these tests cannot be installed")
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROVIDER_DIR, check=True, timeout=600
    )


@contextmanager
def run_provider() -> Iterator[Provider]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the tests' OpenID provider (npm oidc-provider) runs under node")
    _npm_ci()
    ports, hub_ports = [free_port(), free_port()], [free_port(), free_port()]
    secret, other_secret = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    # Each hub port under its address and under "localhost" (WebAuthn needs a domain: the passkey tests' name).
    hubs = [f"http://{host}:{port}" for port in hub_ports for host in ("127.0.0.1", "localhost")]
    common = {"grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
              "redirect_uris": [f"{hub}/auth/callback" for hub in hubs],
              "post_logout_redirect_uris": [f"{hub}/" for hub in hubs]}  # fmt: skip
    config = {
        "ports": ports,
        "clients": [
            {"client_id": CLIENT_ID, "client_secret": secret, **common},
            {"client_id": OTHER_CLIENT_ID, "client_secret": other_secret, **common},
        ],
        "accounts": {name: {"password": PASSWORD, "groups": groups} for name, groups in ACCOUNTS.items()},
    }
    proc = subprocess.Popen(
        [node, str(PROVIDER_DIR / "provider.mjs"), json.dumps(config)], cwd=PROVIDER_DIR,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(60)
        if not ready or not ready[0].startswith("READY"):
            proc.kill()
            raise AssertionError(f"OpenID provider did not start: {proc.stderr.read() if proc.stderr else ''}")
        issuers = ready[0].split()[1:]
        yield Provider(issuers[0], issuers[1], hub_ports[0], hub_ports[1], secret, other_secret)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@contextmanager
def oidc_hub(provider: Provider, tmp: Path, *, spare: bool = False, **overrides: Any) -> Iterator[tuple[str, HubState]]:
    """A hub signing people in through `provider`, served on a hub port registered there."""
    secret_file = tmp / "oidc-client-secret"
    secret_file.write_text(provider.secret + "\n")
    settings = load_settings(
        data_dir=tmp / "hub", oidc_issuer=provider.issuer, oidc_client_id=CLIENT_ID,
        oidc_client_secret_file=secret_file, oidc_group_roles=GROUP_ROLES,
        # Sign-in alone unless a test asks: the second factor (WebAuthn, `mfa_required`) has its own tests.
        **{"mfa_required": False, **overrides},
    )  # fmt: skip
    state = HubState.open(settings)
    try:
        with hub_in_thread(
            create_app(settings, state=state), port=provider.spare_hub_port if spare else provider.hub_port
        ) as url:
            yield url, state
    finally:
        state.close()


@contextmanager
def second_hub(provider: Provider, state: HubState, **overrides: Any) -> Iterator[tuple[str, HubState]]:
    """Another hub process's view of the same catalog, with other session settings, on the spare port.

    (What a second worker is; no migration to wait for.)"""
    from dataclasses import replace

    from medcloud.security.sessions import SignIn
    from medcloud.security.tokens import TokenVerifier

    settings = state.settings.model_copy(update=overrides)
    verifier = TokenVerifier(
        state.catalog, settings.token_cache_seconds, session_idle_seconds=settings.session_idle_seconds
    )
    signin = SignIn(settings, state.catalog, verifier)
    other = replace(state, settings=settings, verifier=verifier, signin=signin, jobs=None)
    try:
        with hub_in_thread(create_app(settings, state=other), port=provider.spare_hub_port) as url:
            yield url, other
    finally:
        signin.close()


class Browser:
    """A person's browser, as plain HTTP: follows redirects, fills the provider's login form, keeps cookies."""

    def __init__(self) -> None:
        self.http = httpx.Client(follow_redirects=False, timeout=20)

    def close(self) -> None:
        self.http.close()

    def walk(self, url: str, *, user: str, password: str = PASSWORD, stop: Callable[[str], bool]) -> str:
        """Follow redirects from `url`, signing in at the provider's form, until a location `stop` accepts."""
        for _ in range(20):
            if stop(url):
                return url
            r = self.http.get(url)
            if r.status_code in (302, 303):
                url = urljoin(url, r.headers["location"])
                continue
            assert r.status_code == 200, f"{url}: {r.status_code} {r.text[:300]}"
            action = re.search(r'<form method="post" action="([^"]+)"', r.text)
            assert action, f"no login form at {url}: {r.text[:300]}"
            r = self.http.post(urljoin(url, action.group(1)), data={"login": user, "password": password})
            assert r.status_code in (302, 303), r.text[:300]
            url = urljoin(url, r.headers["location"])
        raise AssertionError("too many redirects")

    def start(self, hub: str, **params: str) -> str:
        """GET /auth/login: the provider's authorization URL the hub sends the browser to."""
        r = self.http.get(f"{hub}/auth/login", params=params)
        assert r.status_code == 303, r.text
        return r.headers["location"]

    def to_callback(self, hub: str, auth_url: str, user: str) -> str:
        return self.walk(auth_url, user=user, stop=lambda u: u.startswith(f"{hub}/auth/callback"))

    def sign_in(self, hub: str, user: str) -> dict[str, Any]:
        """The whole sign-in: login, provider, callback, and the page's POST that gets the session token."""
        callback = self.to_callback(hub, self.start(hub), user)
        r = self.http.get(callback)
        assert r.status_code == 303, r.text
        r = self.http.post(f"{hub}/api/v1/auth/session")
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def authorization_code(provider_issuer: str, client_id: str, hub: str, user: str) -> tuple[str, str, str]:
    """Sign `user` in at the provider as `client_id` directly (not through the hub): (code, verifier, nonce)."""
    verifier, challenge = pkce_pair()
    nonce, state = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": f"{hub}/auth/callback",
              "scope": "openid profile", "state": state, "nonce": nonce, "code_challenge": challenge,
              "code_challenge_method": "S256"}  # fmt: skip
    browser = Browser()
    try:
        callback = browser.walk(
            f"{provider_issuer}/auth?{urlencode(params)}", user=user, stop=lambda u: u.startswith(hub)
        )
    finally:
        browser.close()
    query = parse_qs(urlsplit(callback).query)
    assert query["state"] == [state], callback
    return query["code"][0], verifier, nonce
