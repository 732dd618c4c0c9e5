"""Passkeys as the second factor of people's sessions, against a real hub (TestClient, SQLite catalog):
enforcement on data and admin routes, step-up, first enrolment, refused assertions (replayed, foreign,
tampered, cloned) with one identical answer, lockout of a person and of a guessing address (never of a
token id), and identical refusals for an unknown token id and a wrong secret."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from medcloud.config import load_settings
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.policy import Role
from medcloud.security.tokens import _issue, issue_token
from medcloud.store import utcnow
from medcloud.store.tables import audit_events
from medcloud.store.tables import tokens as tokens_table
from tests.hub.soft_authenticator import SoftAuthenticator

ORIGIN, RP_ID = "https://hub.example.test", "hub.example.test"
BASE = "/api/v1/auth/webauthn"
THRESHOLD = 3


@dataclass
class PasskeyHub:
    client: TestClient
    app: Any
    state: HubState
    site: str
    admin: str

    def session(self, person: str, role: Role = Role.RESEARCHER) -> str:
        projects = ("lung",) if role is Role.RESEARCHER else ()
        issued = _issue(
            self.state.catalog, role, None, projects, "sign-in", timedelta(hours=8), "test", "", kind="session",
            person=person,
        )  # fmt: skip
        return issued.token


def _passkey_hub(tmp_path: Path, database_url: str | None) -> Iterator[PasskeyHub]:
    settings = load_settings(
        data_dir=tmp_path / "hub",
        database_url=database_url,
        webauthn_origin=ORIGIN,
        lockout_threshold=THRESHOLD,
        lockout_seconds=600,
    )
    state = HubState.open(settings)
    site = issue_token(state.catalog, role="site", site="site-a", projects=["lung"]).token
    admin = issue_token(state.catalog, role="admin").token
    app = create_app(settings, state=state)
    with TestClient(app, client=("192.0.2.10", 50000)) as client:
        yield PasskeyHub(client, app, state, site, admin)
    state.close()


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[PasskeyHub]:
    yield from _passkey_hub(tmp_path, None)


@pytest.fixture
def pg_passkey_hub(tmp_path: Path, pg_url: str) -> Iterator[PasskeyHub]:
    yield from _passkey_hub(tmp_path, pg_url)


def h(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(hub: PasskeyHub, token: str, key: SoftAuthenticator) -> None:
    options = hub.client.post(f"{BASE}/register/options", headers=h(token))
    assert options.status_code == 200, options.text
    r = hub.client.post(f"{BASE}/register/verify", json={"credential": key.create(options.json())}, headers=h(token))
    assert r.status_code == 201, r.text


def verify(hub: PasskeyHub, token: str, credential: dict[str, Any]) -> Any:
    return hub.client.post(f"{BASE}/authenticate/verify", json={"credential": credential}, headers=h(token))


def options_for(hub: PasskeyHub, token: str) -> dict[str, Any]:
    r = hub.client.post(f"{BASE}/authenticate/options", headers=h(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


def sign_in(hub: PasskeyHub, token: str, key: SoftAuthenticator, **kw: Any) -> Any:
    options = hub.client.post(f"{BASE}/authenticate/options", headers=h(token))
    assert options.status_code == 200, options.text
    return hub.client.post(f"{BASE}/authenticate/verify", json={"credential": key.get(options.json(), **kw)},
                           headers=h(token))  # fmt: skip


def audit_rows(hub: PasskeyHub, resource: str | None = None) -> list[tuple[str, str]]:
    """(action, outcome) of the audit trail, of one resource if given."""
    query = sa.select(audit_events.c.action, audit_events.c.outcome)
    if resource is not None:
        query = query.where(audit_events.c.resource == resource)
    with hub.state.catalog.read() as conn:
        return [(r.action, r.outcome) for r in conn.execute(query)]


def refused_body(r: Any) -> dict[str, Any]:
    assert r.status_code == 403, r.text
    body = dict(r.json())
    assert body["type"].endswith("/passkey-refused") and body["detail"] == "passkey not accepted"
    return body


def test_session_without_passkey_reaches_only_sign_in_and_whoami(hub: PasskeyHub) -> None:
    alice = hub.session("alice@hospital.example")
    who = hub.client.get("/api/v1/whoami", headers=h(alice))
    assert who.status_code == 200
    assert who.json()["kind"] == "session" and who.json()["second_factor"]["state"] == "enrol"
    for path in ("/api/v1/studies", "/api/v1/sites", "/api/v1/cohorts", "/dicom-web/studies"):
        r = hub.client.get(path, headers=h(alice))
        assert r.status_code == 403, (path, r.status_code)
        assert r.json()["type"].endswith("/second-factor-required") and "second factor" in r.json()["detail"]
    boss = hub.session("boss@hospital.example", Role.ADMIN)
    for method, path in (("GET", "/api/v1/tokens"), ("PUT", "/api/v1/sites/site-x"), ("GET", "/api/v1/sites")):
        r = hub.client.request(method, path, headers=h(boss), json={"target_cases": 1} if method == "PUT" else None)
        assert r.status_code == 403 and r.json()["type"].endswith("/second-factor-required"), (path, r.text)
    # The refusal is audited under the session, and machine tokens are untouched.
    assert ("GET /api/v1/studies", "refused:403:second-factor-required") in audit_rows(hub)
    assert hub.client.get("/api/v1/tokens", headers=h(hub.admin)).status_code == 200


def test_passkey_registers_signs_in_and_admin_needs_a_recent_one(hub: PasskeyHub) -> None:
    boss = hub.session("boss@hospital.example", Role.ADMIN)
    key = SoftAuthenticator(ORIGIN, RP_ID)
    register(hub, boss, key)
    assert hub.client.get("/api/v1/whoami", headers=h(boss)).json()["second_factor"]["state"] == "needed"
    assert hub.client.get("/api/v1/tokens", headers=h(boss)).status_code == 403
    r = sign_in(hub, boss, key)
    assert r.status_code == 200 and r.json()["second_factor"] == "ok", r.text
    assert hub.client.get("/api/v1/whoami", headers=h(boss)).json()["second_factor"]["state"] == "ok"
    assert hub.client.get("/api/v1/tokens", headers=h(boss)).status_code == 200
    # Twenty minutes later the session still reads, but an admin act asks for the passkey again.
    token_id = boss.split(".")[0].removeprefix("mct_")
    with hub.state.catalog.write() as conn:
        conn.execute(
            tokens_table.update().where(tokens_table.c.id == token_id).values(mfa_at=utcnow() - timedelta(minutes=20))
        )
    hub.state.verifier.forget(token_id)
    assert hub.client.get("/api/v1/models", headers=h(boss)).status_code == 200
    r = hub.client.post("/api/v1/tokens", json={"role": "auditor"}, headers=h(boss))
    assert r.status_code == 403 and r.json()["type"].endswith("/second-factor-required")
    assert sign_in(hub, boss, key).status_code == 200
    assert hub.client.post("/api/v1/tokens", json={"role": "auditor"}, headers=h(boss)).status_code == 201
    # A second passkey may be added now (fresh passkey sign-in); the first one's credential is excluded.
    options = hub.client.post(f"{BASE}/register/options", headers=h(boss)).json()
    assert [c["id"] for c in options["excludeCredentials"]] == [key.create(options)["id"]]
    # A machine token has no passkeys.
    assert hub.client.post(f"{BASE}/authenticate/options", headers=h(hub.admin)).status_code == 403


def test_first_passkey_only_right_after_sign_in(hub: PasskeyHub) -> None:
    carol = hub.session("carol@hospital.example")
    token_id = carol.split(".")[0].removeprefix("mct_")
    with hub.state.catalog.write() as conn:
        conn.execute(
            tokens_table.update()
            .where(tokens_table.c.id == token_id)
            # Signed in 30 minutes ago and in use since (the idle timeout is not what this test is about).
            .values(created_at=utcnow() - timedelta(minutes=30), last_used_at=utcnow())
        )
    assert hub.client.get("/api/v1/whoami", headers=h(carol)).json()["second_factor"]["state"] == "enrol-expired"
    r = hub.client.post(f"{BASE}/register/options", headers=h(carol))
    assert r.status_code == 403 and r.json()["type"].endswith("/second-factor-required")
    # A person who has a passkey cannot add another without using it first (a stolen IdP password is not enough).
    dave = hub.session("dave@hospital.example")
    register(hub, dave, SoftAuthenticator(ORIGIN, RP_ID))
    r = hub.client.post(f"{BASE}/register/options", headers=h(dave))
    assert r.status_code == 403 and r.json()["type"].endswith("/second-factor-required")


def test_replayed_foreign_tampered_and_cloned_assertions_get_one_answer(hub: PasskeyHub) -> None:
    erin, frank = hub.session("erin@hospital.example"), hub.session("frank@hospital.example")
    erin_key, frank_key = SoftAuthenticator(ORIGIN, RP_ID), SoftAuthenticator(ORIGIN, RP_ID)
    register(hub, erin, erin_key)
    register(hub, frank, frank_key)
    bodies = []
    # Replay: a good assertion sent twice; its challenge was used up the first time.
    options = hub.client.post(f"{BASE}/authenticate/options", headers=h(erin)).json()
    assertion = {"credential": erin_key.get(options)}
    assert hub.client.post(f"{BASE}/authenticate/verify", json=assertion, headers=h(erin)).status_code == 200
    bodies.append(refused_body(hub.client.post(f"{BASE}/authenticate/verify", json=assertion, headers=h(erin))))
    # Another person's passkey (a real credential, validly signed) does not pass for erin.
    options = hub.client.post(f"{BASE}/authenticate/options", headers=h(erin)).json()
    foreign = {"credential": frank_key.get(options)}
    bodies.append(refused_body(hub.client.post(f"{BASE}/authenticate/verify", json=foreign, headers=h(erin))))
    # A tampered signature, an unknown credential, a wrong origin, a counter that went back (a clone).
    hub.state.lockouts.unlock("person:erin@hospital.example", by="test")  # type: ignore[union-attr]
    options = hub.client.post(f"{BASE}/authenticate/options", headers=h(erin)).json()
    tampered = erin_key.get(options)
    sig = bytearray(tampered["response"]["signature"].encode())
    sig[-3] = ord("A") if sig[-3] != ord("A") else ord("B")
    tampered["response"]["signature"] = sig.decode()
    bodies.append(refused_body(verify(hub, erin, tampered)))
    unknown = SoftAuthenticator(ORIGIN, RP_ID)
    bodies.append(refused_body(verify(hub, erin, unknown.get(options_for(hub, erin)))))
    hub.state.lockouts.unlock("person:erin@hospital.example", by="test")  # type: ignore[union-attr]
    phish = SoftAuthenticator("https://hub.example.test.evil.example", RP_ID)
    phish.key, phish.credential_id, phish.sign_count = erin_key.key, erin_key.credential_id, erin_key.sign_count
    bodies.append(refused_body(verify(hub, erin, phish.get(options_for(hub, erin)))))
    bodies.append(refused_body(sign_in(hub, erin, erin_key, count=1)))  # stored count is already 1: a clone
    assert all(b == bodies[0] for b in bodies), bodies
    # Still the real key works (after the lock the failures caused is lifted).
    hub.state.lockouts.unlock("person:erin@hospital.example", by="test")  # type: ignore[union-attr]
    assert sign_in(hub, erin, erin_key).status_code == 200


def test_passkey_failures_lock_the_person_and_are_audited(hub: PasskeyHub) -> None:
    gina = hub.session("gina@hospital.example")
    key = SoftAuthenticator(ORIGIN, RP_ID)
    register(hub, gina, key)
    stranger = SoftAuthenticator(ORIGIN, RP_ID)  # a passkey the hub never registered
    for _ in range(THRESHOLD):
        refused_body(sign_in(hub, gina, stranger))
    r = hub.client.post(f"{BASE}/authenticate/options", headers=h(gina))
    assert r.status_code == 429 and r.json()["type"].endswith("/too-many-attempts")
    # A fresh sign-in of the same person is locked too: the lock is the person's, not the session's.
    again = hub.session("gina@hospital.example")
    assert hub.client.post(f"{BASE}/authenticate/options", headers=h(again)).status_code == 429
    assert ("auth.lockout", "locked") in audit_rows(hub, "person:gina@hospital.example")
    # The admin lifts it; then the real passkey works.
    r = hub.client.delete("/api/v1/auth/lockouts/person:gina@hospital.example", headers=h(hub.admin))
    assert r.status_code == 200 and r.json()["unlocked"] is True
    assert sign_in(hub, gina, key).status_code == 200


def test_bearer_guessing_locks_the_address_not_the_token(hub: PasskeyHub) -> None:
    for _ in range(THRESHOLD * 2):  # malformed tokens can never succeed: not counted as guesses
        assert hub.client.get("/api/v1/whoami", headers=h("nope")).status_code == 401
    assert hub.client.get("/api/v1/whoami", headers=h(hub.site)).status_code == 200
    token_id = hub.site.split(".")[0]
    wrong = f"{token_id}.{'A' * 43}" if not hub.site.endswith("A" * 43) else f"{token_id}.{'B' * 43}"
    unknown = f"mct_{'0' * 16}.{'A' * 43}"
    a = hub.client.get("/api/v1/whoami", headers=h(wrong))
    b = hub.client.get("/api/v1/whoami", headers=h(unknown))
    assert a.status_code == b.status_code == 401 and a.json() == b.json() and a.json()["detail"] == "unknown token"
    for _ in range(THRESHOLD - 2):
        assert hub.client.get("/api/v1/whoami", headers=h(wrong)).status_code == 401
    # The attacker's address is locked now, even for a real token sent from it.
    r = hub.client.get("/api/v1/whoami", headers=h(hub.site))
    assert r.status_code == 429 and r.json()["type"].endswith("/too-many-attempts")
    assert 500 < int(r.headers["Retry-After"]) <= 601  # a gateway pauses that long, then retries
    assert hub.client.get("/api/v1/whoami", headers=h(unknown)).json() == r.json()  # same answer, id or not
    assert ("auth.lockout", "locked") in audit_rows(hub, "addr:192.0.2.10")
    # The site's gateway at its own address is not locked out by the sprayed wrong secrets for its id.
    with TestClient(hub.app, client=("198.51.100.7", 40000)) as site_client:
        assert site_client.get("/api/v1/whoami", headers=h(hub.site)).status_code == 200


def test_mfa_optional_still_guards_admin_acts(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "hub", webauthn_origin=ORIGIN, mfa_required=False)
    state = HubState.open(settings)
    try:
        with TestClient(create_app(settings, state=state), client=("192.0.2.11", 1)) as client:
            hub = PasskeyHub(client, None, state, "", "")
            alice, boss = hub.session("alice@hospital.example"), hub.session("boss@hospital.example", Role.ADMIN)
            assert client.get("/api/v1/studies", headers=h(alice)).status_code == 200
            assert client.get("/api/v1/tokens", headers=h(boss)).status_code == 403
    finally:
        state.close()


def test_unknown_id_and_wrong_secret_cost_the_same(hub: PasskeyHub) -> None:
    """The verifier takes the same steps for both: one row lookup, one constant-time compare."""
    from medcloud.errors import Unauthenticated

    verifier = hub.state.verifier
    token_id = hub.admin.split(".")[0]
    wrong, unknown = f"{token_id}.{'Z' * 43}", f"mct_{'f' * 16}.{'Z' * 43}"
    times: dict[str, list[float]] = {"wrong": [], "unknown": []}
    for _ in range(60):
        for name, token in (("wrong", wrong), ("unknown", unknown)):
            start = time.perf_counter()
            with pytest.raises(Unauthenticated, match=r"^unknown token$"):
                verifier.verify(token)
            times[name].append(time.perf_counter() - start)
    ratio = statistics.median(times["wrong"]) / statistics.median(times["unknown"])
    assert 0.5 < ratio < 2.0, ratio


@pytest.mark.postgres
def test_passkeys_and_lockout_on_postgresql(pg_passkey_hub: PasskeyHub) -> None:
    hub = pg_passkey_hub
    hana = hub.session("hana@hospital.example", Role.ADMIN)
    key = SoftAuthenticator(ORIGIN, RP_ID)
    register(hub, hana, key)
    options = options_for(hub, hana)
    assertion = key.get(options)
    assert verify(hub, hana, assertion).status_code == 200
    assert hub.client.get("/api/v1/tokens", headers=h(hana)).status_code == 200
    refused_body(verify(hub, hana, assertion))  # replayed
    refused_body(sign_in(hub, hana, key, count=1))  # a count that did not grow
    assert sign_in(hub, hana, key, count=5).status_code == 200
    wrong = f"{hub.site.split('.')[0]}.{'Q' * 43}"
    for _ in range(THRESHOLD):
        assert hub.client.get("/api/v1/whoami", headers=h(wrong)).status_code == 401
    assert hub.client.get("/api/v1/whoami", headers=h(hub.site)).status_code == 429
