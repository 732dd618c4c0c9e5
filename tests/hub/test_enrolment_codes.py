"""Admin-issued one-time passkey enrolment codes, against a real hub (TestClient, SQLite catalog): an
administrator with a fresh passkey issues a code for one person (shown once, stored as a digest); that
person's session redeems it outside the first-enrolment window and registers a passkey, which spends it.
Refused with one identical answer, and counted towards the person's lockout: a wrong, malformed, expired,
revoked, spent or other person's code, and a code already redeemed by another session."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from medcloud.security.policy import Role
from medcloud.store import utcnow
from medcloud.store.tables import passkey_enrolment_codes
from medcloud.store.tables import tokens as tokens_table
from tests.hub.soft_authenticator import SoftAuthenticator
from tests.hub.test_passkeys import (
    BASE,
    ORIGIN,
    RP_ID,
    THRESHOLD,
    PasskeyHub,
    _passkey_hub,
    audit_rows,
    h,
    refused_body,
    register,
    sign_in,
)

CODES = f"{BASE}/enrolment-codes"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[PasskeyHub]:
    yield from _passkey_hub(tmp_path, None)


@pytest.fixture
def pg_hub(tmp_path: Path, pg_url: str) -> Iterator[PasskeyHub]:
    yield from _passkey_hub(tmp_path, pg_url)


def _old_session(hub: PasskeyHub, person: str, minutes: int = 30) -> str:
    """A session signed in `minutes` ago (outside the 600 s first-enrolment window), in use since."""
    token = hub.session(person)
    token_id = token.split(".")[0].removeprefix("mct_")
    with hub.state.catalog.write() as conn:
        conn.execute(
            tokens_table.update()
            .where(tokens_table.c.id == token_id)
            .values(created_at=utcnow() - timedelta(minutes=minutes), last_used_at=utcnow())
        )
    hub.state.verifier.forget(token_id)
    return token


def _admin_with_passkey(hub: PasskeyHub) -> str:
    boss = hub.session(f"boss-{secrets.token_hex(4)}@hospital.example", Role.ADMIN)
    key = SoftAuthenticator(ORIGIN, RP_ID)
    register(hub, boss, key)
    assert sign_in(hub, boss, key).status_code == 200
    return boss


def _issue(hub: PasskeyHub, admin: str, person: str, **body: Any) -> dict[str, Any]:
    r = hub.client.post(CODES, json={"person": person, **body}, headers=h(admin))
    assert r.status_code == 201, r.text
    return dict(r.json())


def _redeem(hub: PasskeyHub, token: str, code: str) -> Any:
    return hub.client.post(f"{CODES}/redeem", json={"code": code}, headers=h(token))


def test_code_lets_a_person_enrol_outside_the_window_once(hub: PasskeyHub) -> None:
    boss = _admin_with_passkey(hub)
    carol = _old_session(hub, "carol@hospital.example")
    # Without a code the window is closed.
    assert hub.client.get("/api/v1/whoami", headers=h(carol)).json()["second_factor"]["state"] == "enrol-expired"
    assert hub.client.post(f"{BASE}/register/options", headers=h(carol)).status_code == 403
    issued = _issue(hub, boss, "carol@hospital.example", minutes=30)
    code = issued["code"]
    assert len(code) == 19 and code.count("-") == 3
    # Stored as its digest only; the listing never shows it.
    with hub.state.catalog.read() as conn:
        stored = [dict(r._mapping) for r in conn.execute(sa.select(passkey_enrolment_codes))]
    assert len(stored) == 1 and code.replace("-", "") not in str(stored)
    assert (
        stored[0]["code_hash"]
        == hashlib.sha256(f"medcloud-passkey-enrolment:{code.replace('-', '')}".encode()).hexdigest()
    )
    listed = hub.client.get(CODES, headers=h(boss)).json()["items"]
    assert [i["state"] for i in listed] == ["open"] and code not in str(listed) and "code_hash" not in listed[0]
    # Typed in lower case with spaces: the same code.
    r = _redeem(hub, carol, code.lower().replace("-", " "))
    assert r.status_code == 200 and r.json()["redeemed"] is True, r.text
    who = hub.client.get("/api/v1/whoami", headers=h(carol)).json()["second_factor"]
    assert who["state"] == "enrol" and who["enrol_code_until"]
    key = SoftAuthenticator(ORIGIN, RP_ID)
    register(hub, carol, key)
    assert sign_in(hub, carol, key).status_code == 200
    # Spent: no second registration from it, and it cannot be redeemed again.
    assert hub.client.get(CODES, headers=h(boss)).json()["items"][0]["state"] == "spent"
    other = _old_session(hub, "carol@hospital.example")
    refused_body(_redeem(hub, other, code))
    # Audited: issue, redeem, and the registration that spent it names the code.
    actions = audit_rows(hub, "person/carol@hospital.example")
    assert ("passkey.code.issue", "ok") in actions and ("passkey.code.redeem", "ok") in actions
    with hub.state.catalog.read() as conn:
        from medcloud.store.tables import audit_events

        details = [
            r.detail
            for r in conn.execute(sa.select(audit_events.c.detail).where(audit_events.c.action == "passkey.register"))
        ]
    assert any(issued["code_id"] in str(d) for d in details)


def test_code_lets_a_person_with_a_lost_passkey_add_one_without_step_up(hub: PasskeyHub) -> None:
    boss = _admin_with_passkey(hub)
    dave = hub.session("dave@hospital.example")
    register(hub, dave, SoftAuthenticator(ORIGIN, RP_ID))  # the passkey he will lose
    later = _old_session(hub, "dave@hospital.example")
    assert hub.client.post(f"{BASE}/register/options", headers=h(later)).status_code == 403
    code = _issue(hub, boss, "dave@hospital.example")["code"]
    assert _redeem(hub, later, code).status_code == 200
    # A cancelled browser ceremony: the same session may redeem again and ask for options again.
    assert hub.client.post(f"{BASE}/register/options", headers=h(later)).status_code == 200
    assert _redeem(hub, later, code).status_code == 200
    new_key = SoftAuthenticator(ORIGIN, RP_ID)
    register(hub, later, new_key)
    assert sign_in(hub, later, new_key).status_code == 200


def test_wrong_expired_reused_revoked_and_foreign_codes_get_one_answer(hub: PasskeyHub) -> None:
    boss = _admin_with_passkey(hub)
    erin = _old_session(hub, "erin@hospital.example")
    frank = _old_session(hub, "frank@hospital.example")
    bodies = []
    unlock = lambda: hub.state.lockouts.unlock("person:erin@hospital.example", by="test")  # type: ignore[union-attr]  # noqa: E731
    # Frank's code does not pass for erin (and stays good for frank).
    franks = _issue(hub, boss, "frank@hospital.example")["code"]
    bodies.append(refused_body(_redeem(hub, erin, franks)))
    # A made-up code of the right shape, and a malformed one.
    bodies.append(refused_body(_redeem(hub, erin, "0000-0000-0000-0000")))
    unlock()
    bodies.append(refused_body(_redeem(hub, erin, "not a code at all")))
    # An expired code.
    expired = _issue(hub, boss, "erin@hospital.example")
    with hub.state.catalog.write() as conn:
        conn.execute(
            passkey_enrolment_codes.update()
            .where(passkey_enrolment_codes.c.id == expired["code_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    bodies.append(refused_body(_redeem(hub, erin, expired["code"])))
    unlock()
    # A code superseded by a newer one (issuing revokes the person's open codes), and a revoked one.
    first = _issue(hub, boss, "erin@hospital.example")
    second = _issue(hub, boss, "erin@hospital.example")
    bodies.append(refused_body(_redeem(hub, erin, first["code"])))
    assert hub.client.delete(f"{CODES}/{second['code_id']}", headers=h(boss)).status_code == 200
    assert hub.client.delete(f"{CODES}/{second['code_id']}", headers=h(boss)).status_code == 404
    bodies.append(refused_body(_redeem(hub, erin, second["code"])))
    unlock()
    # A code redeemed by one of erin's sessions cannot be redeemed by another session (a stolen code).
    third = _issue(hub, boss, "erin@hospital.example")["code"]
    assert _redeem(hub, erin, third).status_code == 200
    erin2 = _old_session(hub, "erin@hospital.example")
    bodies.append(refused_body(_redeem(hub, erin2, third)))
    assert hub.client.post(f"{BASE}/register/options", headers=h(erin2)).status_code == 403
    assert all(b == bodies[0] for b in bodies), bodies
    assert _redeem(hub, frank, franks).status_code == 200
    # Refusals are audited as such.
    assert ("POST /api/v1/auth/webauthn/enrolment-codes/redeem", "refused:403:passkey-refused") in audit_rows(hub)


def test_code_failures_lock_the_person(hub: PasskeyHub) -> None:
    boss = _admin_with_passkey(hub)
    gina = _old_session(hub, "gina@hospital.example")
    code = _issue(hub, boss, "gina@hospital.example")["code"]
    for i in range(THRESHOLD):
        refused_body(_redeem(hub, gina, f"ZZZZ-ZZZZ-ZZZZ-ZZZ{i}"))
    # Locked: even the right code is refused now (429), and the lock is audited.
    r = _redeem(hub, gina, code)
    assert r.status_code == 429 and r.json()["type"].endswith("/too-many-attempts")
    assert ("auth.lockout", "locked") in audit_rows(hub, "person:gina@hospital.example")


def test_issuing_needs_an_admin_with_a_fresh_passkey(hub: PasskeyHub) -> None:
    researcher = _old_session(hub, "ivan@hospital.example")
    r = hub.client.post(CODES, json={"person": "ivan@hospital.example"}, headers=h(researcher))
    assert r.status_code == 403
    boss = hub.session("boss2@hospital.example", Role.ADMIN)  # admin role, no passkey used
    r = hub.client.post(CODES, json={"person": "ivan@hospital.example"}, headers=h(boss))
    assert r.status_code == 403 and r.json()["type"].endswith("/second-factor-required")
    assert hub.client.get(CODES, headers=h(researcher)).status_code == 403
    # A machine admin token may (machine tokens have no second factor; the CLI operator likewise).
    assert hub.client.post(CODES, json={"person": "ivan@hospital.example"}, headers=h(hub.admin)).status_code == 201
    # Longer than mfa_enrol_code_seconds is refused.
    r = hub.client.post(CODES, json={"person": "ivan@hospital.example", "minutes": 24 * 60}, headers=h(hub.admin))
    assert r.status_code == 400
    # A machine token cannot redeem (codes are for people's sessions).
    assert _redeem(hub, hub.site, "0000-0000-0000-0000").status_code == 403
    with hub.state.catalog.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(passkey_enrolment_codes)).scalar_one() == 1


def test_cli_issues_lists_and_revokes(tmp_path: Path) -> None:
    from medcloud.cli import app

    runner = CliRunner()
    data = tmp_path / "hub"
    r = runner.invoke(
        app, ["hub", "passkey-code", "issue", "zoe@hospital.example", "--minutes", "15", "--data", str(data)]
    )
    assert r.exit_code == 0, r.output
    code = r.stdout.strip().splitlines()[0]
    assert len(code) == 19
    r = runner.invoke(app, ["hub", "passkey-code", "list", "--data", str(data)])
    assert r.exit_code == 0 and '"state": "open"' in r.stdout and code not in r.stdout
    import json

    code_id = json.loads(r.stdout.splitlines()[0])["id"]
    assert runner.invoke(app, ["hub", "passkey-code", "revoke", code_id, "--data", str(data)]).exit_code == 0
    r = runner.invoke(app, ["hub", "passkey-code", "list", "--data", str(data)])
    assert '"state": "revoked"' in r.stdout
    r = runner.invoke(
        app, ["hub", "passkey-code", "issue", "zoe@hospital.example", "--minutes", "100000", "--data", str(data)]
    )
    assert r.exit_code != 0


@pytest.mark.postgres
def test_codes_on_postgresql(pg_hub: PasskeyHub) -> None:
    test_code_lets_a_person_enrol_outside_the_window_once(pg_hub)
    test_wrong_expired_reused_revoked_and_foreign_codes_get_one_answer(pg_hub)
