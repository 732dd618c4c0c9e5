"""Break-glass accounts, the FHIR AuditEvent export and the MHLW self-check on a running deployment."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medcloud.cli import app
from medcloud.config import Settings, load_settings
from medcloud.errors import Conflict, InvalidInput, Unauthenticated
from medcloud.security import breakglass
from medcloud.security.selfcheck import FAIL, PASS, render_html, run_self_check
from medcloud.security.tokens import issue_token, parse_duration
from tests.hub.conftest import Hub, deidentified_dicom

runner = CliRunner()


class MergedSettings(Settings):
    """The settings the OIDC, WebAuthn and lockout engineers add (names fixed in the shared contract),
    so that their self-check items can be judged before the branches are merged."""

    oidc_issuer: str | None = "https://idp.hospital.example"
    oidc_client_id: str | None = "medcloud"
    session_idle_seconds: int = 900
    session_max_seconds: int = 28800
    mfa_required: bool = True
    webauthn_rp_id: str | None = "hub.hospital.example"
    lockout_threshold: int = 5
    lockout_seconds: int = 900


def _items(report: dict) -> dict[str, dict]:
    return {i["id"]: i for i in report["items"]}


def test_break_glass_is_sealed_until_used_with_a_reason_then_audited_and_closed(hub: Hub) -> None:
    cat = hub.state.catalog
    issued = breakglass.create(cat, "night-duty", by="cli:officer")
    glass = {"Authorization": f"Bearer {issued.token}"}
    # Sealed: the token authenticates nothing.
    r = hub.client.get("/api/v1/tokens", headers=glass)
    assert r.status_code == 401 and "sealed" in r.json()["detail"]
    with pytest.raises(InvalidInput, match="say why"):
        breakglass.use(cat, issued.token, reason="x", minutes=30, by="cli:nurse")
    with pytest.raises(Unauthenticated):  # a token that is not a break-glass one (an ordinary admin's)
        breakglass.use(cat, hub.tokens["admin"], reason="patient in ER, admin absent", minutes=30, by="cli:nurse")
    with pytest.raises(InvalidInput, match="minutes"):
        breakglass.use(cat, issued.token, reason="patient in ER, admin absent", minutes=10_000, by="cli:nurse")
    opened = breakglass.use(cat, issued.token, reason="patient in ER, admin absent", minutes=30, by="cli:nurse")
    assert opened["name"] == "night-duty"
    with pytest.raises(Unauthenticated, match="not sealed"):  # opened once; not twice
        breakglass.use(cat, issued.token, reason="patient in ER, admin absent", minutes=30, by="cli:nurse")
    # Open: it acts as an admin, and each act is marked and high severity in the audit trail.
    r = hub.client.put("/api/v1/sites/site-a", json={"target_cases": 7}, headers=glass)
    assert r.status_code == 200, r.text
    events = hub.client.get("/api/v1/audit?limit=1000", headers=hub.auth("auditor")).json()["items"]
    act = events[-1]
    assert act["action"] == "site.update" and act["subject"].endswith("!break-glass")
    assert json.loads(act["detail"])["severity"] == "high"
    opens = [e for e in events if e["action"] == "break-glass.open"]
    assert [e["outcome"] for e in opens] == ["refused", "ok", "refused"]
    assert all(json.loads(e["detail"])["severity"] == "high" for e in opens)
    # The FHIR copy marks it as break-the-glass.
    fhir = hub.client.get("/api/v1/audit/fhir?limit=1000", headers=hub.auth("auditor")).json()
    marked = next(e["resource"] for e in fhir["entry"] if e["resource"]["id"] == f"medcloud-audit-{act['seq']}")
    assert marked["agent"][0]["purposeOfUse"][0]["coding"][0]["code"] == "BTG"
    # Closing is immediate; the use then awaits review, and the self-check says so.
    breakglass.close(cat, "night-duty", by="cli:officer")
    assert hub.client.get("/api/v1/tokens", headers=glass).status_code == 401
    item = _items(run_self_check(hub.state.settings, cat))["break_glass"]
    assert item["status"] == FAIL and "not reviewed" in item["summary"]
    with pytest.raises(Conflict, match="not reviewed"):
        breakglass.create(cat, "night-duty", by="cli:officer")
    breakglass.review(cat, "night-duty", note="checked the one site update; justified", by="cli:officer")
    item = _items(run_self_check(hub.state.settings, cat))["break_glass"]
    assert item["status"] == FAIL and "no sealed" in item["summary"]  # the used one is gone: reseal
    fresh = breakglass.create(cat, "night-duty", by="cli:officer")
    assert _items(run_self_check(hub.state.settings, cat))["break_glass"]["status"] == PASS
    # Revoked as a plain token, the account is no longer a usable sealed one.
    r = hub.client.delete(f"/api/v1/tokens/{fresh.principal.token_id}", headers=hub.auth("admin"))
    assert r.status_code in (200, 204), r.text
    assert breakglass.status(cat)[0]["state"] == "revoked"
    assert _items(run_self_check(hub.state.settings, cat))["break_glass"]["status"] == FAIL


def test_fhir_export_is_r4_audit_events_with_balp_elements(hub: Hub, tmp_path: Path) -> None:
    fhir_r4b = pytest.importorskip("fhir.resources.R4B.bundle")
    hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    hub.client.post("/api/v1/ingest", content=b"x")  # refused, anonymous
    r = hub.client.get("/api/v1/audit/fhir?since=2000-01-01T00:00:00Z", headers=hub.auth("auditor"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    doc = r.json()
    fhir_r4b.Bundle.model_validate(doc)  # the FHIR models accept every resource
    events = [e["resource"] for e in doc["entry"]]
    assert len(events) >= 10
    for ev in events:
        assert ev["action"] in "CRUDE" and ev["recorded"] and ev["outcome"] in ("0", "4", "8")
        assert ev["agent"][0]["requestor"] is True and ev["agent"][0]["who"]["identifier"]["value"]
        assert ev["source"]["observer"]["display"] == "medcloud-hub" and ev["entity"]
    ingest = next(e for e in events if any(s["code"] == "ingest" for s in e["subtype"]))
    assert ingest["type"]["code"] == "110107" and ingest["action"] == "C" and ingest["outcome"] == "0"
    assert ingest["agent"][0]["network"] == {"address": "127.0.0.1", "type": "2"}
    refused = events[-1]
    assert refused["type"]["code"] == "110114" and refused["outcome"] == "4"
    assert (
        hub.client.get("/api/v1/audit/fhir?since=2999-01-01T00:00:00Z", headers=hub.auth("auditor")).json()["entry"]
        == []
    )
    assert hub.client.get("/api/v1/audit/fhir", headers=hub.auth("researcher")).status_code == 403
    out = tmp_path / "audit.json"
    got = runner.invoke(app, ["audit", "export", "--format", "fhir", "--data", str(hub.data_dir), "--out", str(out)])
    assert got.exit_code == 0, got.output
    assert len(json.loads(out.read_text())["entry"]) == hub.state.catalog.audit.head_seq() > len(events)
    later = runner.invoke(app, ["audit", "export", "--data", str(hub.data_dir), "--since", "2999-01-01T00:00:00Z"])
    assert later.exit_code == 0 and json.loads(later.stdout)["entry"] == []


def test_self_check_passes_configured_and_names_each_broken_item(hub: Hub, tmp_path: Path) -> None:
    cat = hub.state.catalog
    data = hub.data_dir
    hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    breakglass.create(cat, "er", by="cli:officer")
    cat.audit.checkpoint()
    got = runner.invoke(app, ["audit", "review", "--note", "monthly review: nothing unusual", "--data", str(data)])
    assert got.exit_code == 0, got.output
    settings = MergedSettings(data_dir=data)
    report = run_self_check(settings, cat)
    items = _items(report)
    ours = ("authentication_strength", "second_factor", "password_policy", "stored_secret_hashing", "lockout",
            "idle_timeout", "least_privilege", "access_log_content", "log_tamper_protection", "log_review",
            "break_glass")  # fmt: skip
    assert {k: items[k]["status"] for k in ours} == dict.fromkeys(ours, PASS), json.dumps(report, indent=1)
    assert items["time_source"]["status"] in (PASS, "WARN") and items["time_source"]["evidence"]
    # TODO(integrator): with the TLS, envelope and backup branches merged, these read their status
    # functions and must PASS on the demo deployment; until then they FAIL as not installed.
    for k in ("encryption_in_transit", "mutual_authentication", "encryption_at_rest", "backups"):
        assert items[k]["status"] == FAIL and "not installed" in items[k]["summary"]
    assert all(i["section"] for i in report["items"]) and report["ok"] is False
    page = render_html(report)
    assert not any(x in page for x in ("<script", "<link", "src=", "url(")), "the report loads nothing external"
    assert page.count("<tr class=") == len(report["items"])

    # Broken on purpose, one at a time: each FAILs by name.
    broken = {
        "second_factor": MergedSettings(data_dir=data, mfa_required=False),
        "idle_timeout": MergedSettings(data_dir=data, session_idle_seconds=7200),
        "lockout": MergedSettings(data_dir=data, lockout_threshold=100),
        "authentication_strength": MergedSettings(data_dir=data, oidc_issuer=None),
    }
    for ident, s in broken.items():
        assert _items(run_self_check(s, cat))[ident]["status"] == FAIL, ident
    issue_token(cat, role="researcher", projects=["lung"], expires_in=parse_duration("never"))
    assert _items(run_self_check(settings, cat))["least_privilege"]["status"] == FAIL
    # An audit row altered on disk: log tamper protection FAILs, through the CLI with a non-zero exit.
    con = sqlite3.connect(data / "catalog.sqlite3")
    con.execute("DROP TRIGGER audit_events_no_update")
    con.execute("UPDATE audit_events SET outcome='<script>alert(1)</script>' WHERE seq=3")
    con.commit()
    con.close()
    out, page_out = tmp_path / "r.json", tmp_path / "r.html"
    cli = runner.invoke(app, ["audit", "self-check", "--data", str(data), "--json", str(out), "--html", str(page_out)])
    assert cli.exit_code == 9 and "log_tamper_protection" in cli.output
    tamper = _items(json.loads(out.read_text()))["log_tamper_protection"]
    assert tamper["status"] == FAIL and "event 3" in tamper["summary"]
    assert "<script>alert" not in page_out.read_text()  # evidence is escaped in the HTML report


def test_cli_break_glass_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = str(tmp_path / "hub")
    made = runner.invoke(app, ["hub", "break-glass", "create", "ward", "--data", data])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("mct_")
    monkeypatch.setenv("MEDCLOUD_BREAK_GLASS_TOKEN", token)
    used = runner.invoke(app, ["hub", "break-glass", "use", "--reason", "PACS admin unreachable, stroke case",
                               "--minutes", "15", "--data", data])  # fmt: skip
    assert used.exit_code == 0 and "OPEN until" in used.output
    assert runner.invoke(app, ["hub", "break-glass", "close", "ward", "--data", data]).exit_code == 0
    rv = runner.invoke(app, ["hub", "break-glass", "review", "ward", "--note", "ok", "--data", data])
    assert rv.exit_code == 0, rv.output
    listed = [
        json.loads(x)
        for x in runner.invoke(app, ["hub", "break-glass", "list", "--data", data]).stdout.split("\n")
        if x
    ]
    assert listed[0]["state"] == "closed" and listed[0]["needs_review"] is False
    settings = load_settings(data_dir=Path(data))
    assert settings.break_glass_max_minutes >= 15
