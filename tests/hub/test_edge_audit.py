"""Refusals at the hub's edge (issue 10, items 5, 7, 10, 12): each a 4xx problem, each audited, rightly attributed."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from medcloud.security.tokens import issue_token
from tests.hub.conftest import Hub


def _events(hub: Hub) -> list[dict[str, Any]]:
    r = hub.client.get("/api/v1/audit?limit=1000", headers=hub.auth("auditor"))
    assert r.status_code == 200
    return list(r.json()["items"])


def _last(hub: Hub) -> dict[str, Any]:
    return _events(hub)[-1]


def _subject_of(hub: Hub, who: str) -> str:
    return str(hub.client.get("/api/v1/whoami", headers=hub.auth(who)).json()["token_id"])


@pytest.mark.parametrize("path", ["/api/v1/tokens", "/api/v1/audit", "/api/v1/audit/verify"])
def test_refused_gets_are_audited(hub: Hub, path: str) -> None:
    """10: a researcher probing admin and auditor reads left no trace."""
    before = len(_events(hub))
    r = hub.client.get(path, headers=hub.auth("researcher"))
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    events = _events(hub)
    assert len(events) == before + 1
    ev = events[-1]
    assert ev["outcome"] == "refused:403:forbidden" and ev["resource"] == path
    assert ev["subject"] == f"researcher:{_subject_of(hub, 'researcher')}"


def test_malformed_json_from_an_unauthenticated_caller_is_401(hub: Hub) -> None:
    """10: malformed JSON was answered 400 before authentication, and not recorded."""
    bad = {"Content-Type": "application/json"}
    r = hub.client.post("/api/v1/tokens", content=b'{"role": ', headers=bad)
    assert r.status_code == 401, r.text
    ev = _last(hub)
    assert ev["subject"] == "anonymous" and ev["outcome"] == "refused:401:unauthenticated"
    r = hub.client.put("/api/v1/sites/site-a", content=b"[[[", headers=bad)
    assert r.status_code == 401
    # Authenticated but not allowed: 403, whatever the body.
    r = hub.client.post("/api/v1/tokens", content=b'{"role": ', headers={**bad, **hub.auth("researcher")})
    assert r.status_code == 403
    assert _last(hub)["outcome"] == "refused:403:forbidden"
    # Allowed: now the body is judged, and that refusal is audited under the caller.
    r = hub.client.post("/api/v1/tokens", content=b'{"role": ', headers={**bad, **hub.auth("admin")})
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"
    ev = _last(hub)
    assert ev["outcome"] == "refused:400:invalid-input" and ev["subject"].startswith("admin:")


def test_oversized_json_body_is_refused_before_authentication(hub: Hub) -> None:
    big = b'{"role": "auditor", "label": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = hub.client.post("/api/v1/tokens", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 401
    r = hub.client.post(
        "/api/v1/tokens", content=big, headers={"Content-Type": "application/json", **hub.auth("admin")}
    )
    assert r.status_code == 413 and r.json()["type"].endswith("/too-large")
    # FastAPI reads such a body whatever it is labelled: the bound holds without a JSON Content-Type too.
    for label in ({}, {"Content-Type": "text/plain"}):
        r = hub.client.put("/api/v1/sites/site-a", content=big, headers={**label, **hub.auth("admin")})
        assert r.status_code == 413, label
    # Uploads are not JSON: a 2 MiB file without a Content-Type is judged as a file.
    r = hub.client.post("/api/v1/ingest", content=big, headers=hub.auth("site_a"))
    assert r.status_code == 415


def test_revoked_and_expired_tokens_are_audited_under_their_id(hub: Hub) -> None:
    """10: a 401 with a revoked token was recorded as 'anonymous', losing the token id."""
    live = issue_token(hub.state.catalog, role="researcher", projects=["lung"])
    tid = live.principal.token_id
    assert hub.client.delete(f"/api/v1/tokens/{tid}", headers=hub.auth("admin")).status_code == 200
    r = hub.client.get("/api/v1/studies", headers={"Authorization": f"Bearer {live.token}"})
    assert r.status_code == 401
    ev = _last(hub)
    assert ev["subject"] == f"researcher:{tid}" and ev["outcome"] == "refused:401:unauthenticated"
    assert "revoked" in str(ev["detail"])

    old = issue_token(
        hub.state.catalog, role="site", site="site-a", projects=["lung"], expires_in=timedelta(seconds=-1)
    )
    r = hub.client.post("/api/v1/ingest", content=b"x", headers={"Authorization": f"Bearer {old.token}"})
    assert r.status_code == 401
    assert _last(hub)["subject"] == f"site@site-a:{old.principal.token_id}"
    # A wrong secret proves nothing about who is calling: anonymous.
    wrong = live.token[:-4] + ("AAAA" if not live.token.endswith("AAAA") else "BBBB")
    hub.client.get("/api/v1/studies", headers={"Authorization": f"Bearer {wrong}"})
    assert _last(hub)["subject"] == "anonymous"


def test_duplicate_authorization_headers_are_refused(hub: Hub) -> None:
    """12: two Authorization headers were accepted (the first won)."""
    headers = [("Authorization", f"Bearer {hub.tokens['researcher']}"), ("Authorization", "Bearer mct_x.y")]
    r = hub.client.get("/api/v1/studies", headers=headers)
    assert r.status_code == 400 and "Authorization" in r.json()["detail"]
    twice = [("Authorization", f"Bearer {hub.tokens['site_a']}")] * 2
    r = hub.client.post("/api/v1/ingest", content=b"x", headers=twice)
    assert r.status_code == 400
    ev = _last(hub)
    assert ev["outcome"] == "refused:400:invalid-input" and ev["subject"] == "anonymous"


def test_every_client_error_is_a_problem_and_audited(hub: Hub) -> None:
    """5: validation errors and unknown API paths are 4xx problem details, each with an audit event."""
    cases = [
        ("GET", "/api/v1/studies?limit=0", "researcher", 400),
        ("GET", "/api/v1/studies?date_from=yesterday", "researcher", 400),
        ("GET", "/api/v1/no-such-thing", "researcher", 404),
        ("PATCH", "/api/v1/studies", "researcher", 405),
        ("GET", "/api/v1/instances/1.2.3", "researcher", 404),
    ]
    for method, path, who, status in cases:
        before = len(_events(hub))
        r = hub.client.request(method, path, headers=hub.auth(who))
        assert r.status_code == status, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        events = _events(hub)
        assert len(events) == before + 1, path
        assert events[-1]["outcome"].startswith(f"refused:{status}:")
    assert hub.state.catalog.audit.verify().ok


def _site_update_client(hub: Hub, headers: dict[str, str]) -> str:
    r = hub.client.put("/api/v1/sites/site-a", json={"target_cases": 3}, headers={**hub.auth("admin"), **headers})
    assert r.status_code == 200
    ev = _last(hub)
    assert ev["action"] == "site.update"
    return str(ev["client"])


def test_forwarding_headers_are_not_trusted_unless_configured(hub: Hub) -> None:
    """7: without MEDCLOUD_TRUSTED_PROXY_HEADER a client's X-Forwarded-For is not its address."""
    assert _site_update_client(hub, {"X-Forwarded-For": "6.6.6.6"}) == "127.0.0.1"


def test_trusted_proxy_header_takes_the_address_the_proxy_appended(hub: Hub) -> None:
    """7: with the header configured the leftmost (client-written) entry was recorded."""
    hub.state.settings.trusted_proxy_header = "X-Forwarded-For"
    assert _site_update_client(hub, {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}) == "203.0.113.7"
    assert _site_update_client(hub, {"X-Forwarded-For": "203.0.113.8"}) == "203.0.113.8"
    # Our own proxies are skipped from the right; with no header at all, the peer.
    hub.state.settings.trusted_proxies = ["127.0.0.1", "10.0.0.2"]
    assert _site_update_client(hub, {"X-Forwarded-For": "6.6.6.6, 203.0.113.9, 10.0.0.2"}) == "203.0.113.9"
    assert _site_update_client(hub, {}) == "127.0.0.1"
    # A peer that is not one of our proxies cannot speak for anyone else.
    hub.state.settings.trusted_proxies = ["10.0.0.2"]
    assert _site_update_client(hub, {"X-Forwarded-For": "203.0.113.7"}) == "127.0.0.1"
