"""Token lifetimes at the edge (issue 10, items 5c and 8): refused clearly, never silently endless."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from medcloud.errors import InvalidInput
from medcloud.security.tokens import issue_token, parse_duration
from tests.hub.conftest import Hub

CLI = [sys.executable, "-m", "medcloud.cli"]


def _create(hub: Hub, expires: object) -> object:
    body = {"role": "auditor", "expires": expires}
    return hub.client.post("/api/v1/tokens", json=body, headers=hub.auth("admin"))


def _last_event(hub: Hub) -> dict[str, object]:
    items = hub.client.get("/api/v1/audit?limit=1000", headers=hub.auth("auditor")).json()["items"]
    return items[-1]


def test_overflowing_lifetime_is_400_not_500(hub: Hub) -> None:
    """5c: '99999999999d' raised OverflowError (500); now a 400 problem, audited."""
    r = _create(hub, "99999999999d")
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "never" in r.json()["detail"]
    ev = _last_event(hub)
    assert ev["outcome"] == "refused:400:invalid-input" and str(ev["subject"]).startswith("admin:")
    for text in ("9" * 12 + "w", "9" * 40, "36501d"):  # MAX_LIFETIME is 100 years
        assert _create(hub, text).status_code == 400, text


@pytest.mark.parametrize("zero", ["0", "0d", "0h", "00m"])
def test_zero_lifetime_is_refused_not_endless(hub: Hub, zero: str) -> None:
    """8: `"expires": "0"` gave a token that never expires (timedelta(0) is falsy)."""
    r = _create(hub, zero)
    assert r.status_code == 400, r.text
    assert "zero" in r.json()["detail"]


def test_never_must_be_spelled_never(hub: Hub) -> None:
    r = _create(hub, "never")
    assert r.status_code == 201 and r.json()["expires_at"] is None
    for vague in ("", "none", None):
        assert _create(hub, vague).status_code == 400, vague
    r = _create(hub, "2w")
    assert r.status_code == 201 and r.json()["expires_at"] is not None


def test_zero_timedelta_in_python_means_expired_at_once(hub: Hub) -> None:
    issued = issue_token(hub.state.catalog, role="auditor", expires_in=timedelta(0))
    assert issued.principal.expires_at is not None
    r = hub.client.get("/api/v1/audit", headers={"Authorization": f"Bearer {issued.token}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    with pytest.raises(InvalidInput):
        issue_token(hub.state.catalog, role="auditor", expires_in=timedelta(days=10**6))


def test_parse_duration_units() -> None:
    assert parse_duration("90") == timedelta(days=90)
    assert parse_duration(" 12h ") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("2w") == timedelta(weeks=2)
    assert parse_duration("NEVER") is None


@pytest.mark.parametrize(("expires", "words"), [("0", "zero"), ("99999999999d", "never")])
def test_cli_refuses_zero_and_overflowing_lifetimes(tmp_path: Path, expires: str, words: str) -> None:
    """8 and 5c at the CLI: one line and exit code 2, no token printed."""
    r = subprocess.run(
        [*CLI, "hub", "token", "create", "--data", str(tmp_path), "--role", "auditor", "--expires", expires],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == "" and words in r.stderr and len(r.stderr.strip().splitlines()) == 1
