"""`GET /api/v1/admin/self-check`: the same report as `medcloud audit self-check`, as JSON or as an HTML page
under the hub's strict CSP; admins and auditors only (with a fresh passkey for people), audited, refusals audited too,
and described in the OpenAPI document with problem-details errors."""

from __future__ import annotations

import json
from datetime import timedelta

import sqlalchemy as sa
from typer.testing import CliRunner

from medcloud.cli import app
from medcloud.security.policy import Role
from medcloud.security.selfcheck import _CSS
from medcloud.security.tokens import _issue
from medcloud.store.tables import audit_events
from tests.hub.conftest import Hub

PATH = "/api/v1/admin/self-check"


def _audit(hub: Hub, action: str) -> list[tuple[str, str, str]]:
    with hub.state.catalog.read() as conn:
        rows = conn.execute(
            sa.select(audit_events.c.subject, audit_events.c.outcome, audit_events.c.detail).where(
                audit_events.c.action == action
            )
        )
        return [(r.subject, r.outcome, r.detail or "") for r in rows]


def test_admin_gets_the_cli_report_as_json_and_as_html(hub: Hub) -> None:
    r = hub.client.get(PATH, headers=hub.auth("admin") | {"Accept": "application/json"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    api = r.json()
    cli = CliRunner().invoke(app, ["audit", "self-check", "--data", str(hub.data_dir)])
    assert cli.exit_code == 9  # this test hub serves plain HTTP: some items FAIL
    report = json.loads(cli.stdout)
    assert api["format"] == report["format"] == "medcloud-self-check/1"
    assert [(i["id"], i["section"]) for i in api["items"]] == [(i["id"], i["section"]) for i in report["items"]]
    stable = {i["id"]: i["status"] for i in report["items"] if i["id"] != "time_source"}
    assert {i["id"]: i["status"] for i in api["items"] if i["id"] != "time_source"} == stable
    assert api["ok"] is False and api["deployment"] == report["deployment"]
    # A browser asks for HTML: the same items, one page that runs under the hub's strict CSP.
    page = hub.client.get(PATH, headers=hub.auth("admin") | {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    body = page.text
    assert "<script" not in body and "<style" not in body and "style=" not in body
    assert '<link rel="stylesheet" href="/static/selfcheck.css">' in body
    assert body.count("<tr class=") == len(api["items"])
    for item in api["items"]:
        assert f"<code>{item['id']}</code>" in body
    css = hub.client.get("/static/selfcheck.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    rules = "".join(line for line in css.text.splitlines() if not line.startswith("/*"))
    assert rules == _CSS  # the linked sheet is the CLI report's inline style
    # `*/*` alone (curl, a script) gets JSON.
    plain = hub.client.get(PATH, headers=hub.auth("admin") | {"Accept": "*/*"})
    assert plain.headers["content-type"].startswith("application/json")
    # Each run is audited under the admin, with its verdict.
    runs = _audit(hub, "admin.self-check")
    assert len(runs) == 3 and all(r[1] == "ok" for r in runs)
    assert [json.loads(r[2])["format"] for r in runs] == ["json", "html", "json"]
    assert "encryption_in_transit" in json.loads(runs[0][2])["failed"]


def test_the_auditor_runs_it_too_and_changes_nothing(hub: Hub) -> None:
    """The regular self-audit is the auditor's job (MHLW guideline): the auditor gets the same report,
    audited under the auditor; the admin's runs and the auditor's are told apart in the trail."""
    r = hub.client.get(PATH, headers=hub.auth("auditor") | {"Accept": "application/json"})
    assert r.status_code == 200, r.text
    admin = hub.client.get(PATH, headers=hub.auth("admin") | {"Accept": "application/json"}).json()
    assert [(i["id"], i["status"]) for i in r.json()["items"] if i["id"] != "time_source"] == [
        (i["id"], i["status"]) for i in admin["items"] if i["id"] != "time_source"
    ]
    runs = _audit(hub, "admin.self-check")
    assert [s.split(":")[0] for s, _, _ in runs] == ["auditor", "admin"]
    # An auditor's token still cannot act: rotating the log key or issuing tokens is refused.
    assert hub.client.post("/api/v1/audit/log-key/rotate", headers=hub.auth("auditor")).status_code == 403
    assert hub.client.get("/api/v1/tokens", headers=hub.auth("auditor")).status_code == 403


def test_everyone_but_an_admin_or_auditor_is_refused_and_audited(hub: Hub) -> None:
    for who in ("researcher", "clinician", "site_a"):
        r = hub.client.get(PATH, headers=hub.auth(who))
        assert r.status_code == 403, (who, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert "items" not in r.json()
    r = hub.client.get(PATH)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    r = hub.client.get(
        PATH, headers={"Authorization": "Bearer mct_0000000000000000." + "A" * 43, "Accept": "text/html"}
    )
    assert r.status_code == 401 and "items" not in r.text
    # A person's admin or auditor session without a recent passkey: the step-up applies.
    for role, person in ((Role.ADMIN, "boss@hospital.example"), (Role.AUDITOR, "audit@hospital.example")):
        session = _issue(
            hub.state.catalog, role, None, (), "sign-in", timedelta(hours=1), "test", "", kind="session",
            person=person,
        ).token  # fmt: skip
        r = hub.client.get(PATH, headers={"Authorization": f"Bearer {session}"})
        assert r.status_code == 403 and r.json()["type"].endswith("/second-factor-required"), role
    refused = _audit(hub, f"GET {PATH}")
    assert len(refused) == 7 and all(o.startswith("refused:40") for _, o, _ in refused)
    assert _audit(hub, "admin.self-check") == []


def test_openapi_describes_both_answers_and_problem_errors(hub: Hub) -> None:
    spec = hub.client.get("/api/v1/openapi.json", headers=hub.auth("admin")).json()
    op = spec["paths"][PATH]["get"]
    assert set(op["responses"]["200"]["content"]) == {"application/json", "text/html"}
    for status in ("401", "403"):
        assert "application/problem+json" in op["responses"][status]["content"]
    assert "422" not in op["responses"] and op.get("security", spec["security"]) == [{"bearerAuth": []}]
