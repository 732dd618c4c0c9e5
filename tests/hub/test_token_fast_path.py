"""The bearer token is checked on the event loop when the verifier's cache answers, in a worker thread
otherwise, with the same refusals either way: revoked here is refused at once, revoked by another
process is refused within `token_cache_seconds`, and a wrong secret never rides on a cached id."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

import medcloud.hub.deps as deps
from medcloud.config import load_settings
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token, parse_token, revoke_token
from medcloud.store import Catalog

TTL = 0.5  # token_cache_seconds for these tests


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[TestClient, HubState, dict[str, str]]]:
    settings = load_settings(data_dir=tmp_path / "hub", token_cache_seconds=TTL)
    state = HubState.open(settings)
    tokens = {
        "reader": issue_token(state.catalog, role="researcher", projects=["lung"]).token,
        "admin": issue_token(state.catalog, role="admin").token,
    }
    with TestClient(create_app(settings, state=state), client=("127.0.0.1", 50000)) as client:
        yield client, state, tokens
    state.close()


def _hops(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Calls of the token check that went to a worker thread."""
    calls: list[Any] = []
    real = deps.run_in_threadpool

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(func)
        return await real(func, *args, **kwargs)

    monkeypatch.setattr(deps, "run_in_threadpool", counting)
    return calls


def _search(client: TestClient, token: str) -> int:
    return client.get("/dicom-web/studies", headers={"Authorization": f"Bearer {token}"}).status_code


def test_a_cached_token_is_checked_without_a_thread_hop(hub: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _, tokens = hub
    hops = _hops(monkeypatch)
    assert _search(client, tokens["reader"]) == 200
    assert len(hops) == 1  # first use: read from the catalog, in a worker thread
    assert _search(client, tokens["reader"]) == 200
    assert len(hops) == 1  # cached: checked on the loop
    time.sleep(TTL + 0.1)
    assert _search(client, tokens["reader"]) == 200
    assert len(hops) == 2  # the cache entry aged out: read again


def test_a_wrong_secret_for_a_cached_id_is_refused(hub: Any) -> None:
    client, _, tokens = hub
    assert _search(client, tokens["reader"]) == 200
    prefix, secret = tokens["reader"].split(".")
    forged = f"{prefix}.{'A' if secret[0] != 'A' else 'B'}{secret[1:]}"
    assert _search(client, forged) == 401
    assert _search(client, tokens["reader"]) == 200


def test_revoked_in_this_process_is_refused_at_once(hub: Any) -> None:
    client, _, tokens = hub
    assert _search(client, tokens["reader"]) == 200
    token_id, _ = parse_token(tokens["reader"])
    assert client.delete(
        f"/api/v1/tokens/{token_id}", headers={"Authorization": f"Bearer {tokens['admin']}"}
    ).is_success
    assert _search(client, tokens["reader"]) == 401


def test_revoked_by_another_process_is_refused_within_the_cache_time(hub: Any) -> None:
    client, state, tokens = hub
    assert _search(client, tokens["reader"]) == 200
    token_id, _ = parse_token(tokens["reader"])
    other = Catalog(state.catalog.url)  # another hub process: its own catalog, no access to our cache
    try:
        assert revoke_token(other, None, token_id, by="test")
    finally:
        other.dispose()
    deadline = time.monotonic() + TTL + 0.2
    while _search(client, tokens["reader"]) == 200:
        assert time.monotonic() < deadline, "a revoked token was still accepted after token_cache_seconds"
        time.sleep(0.05)
    assert _search(client, tokens["reader"]) == 401
