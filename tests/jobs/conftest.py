"""Fixtures: a real hub served by uvicorn on 127.0.0.1 holding two frozen dataset versions of SYNTHETIC blobs.

Jobs run as real processes that call the hub back over HTTP, so the hub must listen on a real port.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from medcloud.config import load_settings
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.jobs.client import JobClient
from medcloud.security.tokens import issue_token
from medcloud.store.filler import fill_synthetic
from tests.live_hub import free_port, hub_in_thread

N_LUNG = 24
N_BRAIN = 6


def synthetic_blob(i: int, prefix: str) -> bytes:
    """Small SYNTHETIC file contents (not images of anyone): distinct, and checkable by their digest."""
    return f"SYNTHETIC {prefix} file {i}\n".encode() * (3 + i % 5)


@dataclass
class LiveHub:
    url: str
    state: HubState
    tokens: dict[str, str]
    datasets: dict[str, str]
    blobs: dict[str, list[bytes]]
    clients: list[JobClient] = field(default_factory=list)

    def client(self, who: str = "researcher") -> JobClient:
        c = JobClient(self.url, self.tokens[who])
        self.clients.append(c)
        return c

    def audit_actions(self, resource_prefix: str) -> list[tuple[str, str]]:
        """(action, outcome) of every audit event on resources starting with `resource_prefix`."""
        import sqlalchemy as sa

        from medcloud.store.tables import audit_events

        with self.state.catalog.read() as conn:
            rows = conn.execute(
                sa.select(audit_events.c.action, audit_events.c.outcome)
                .where(audit_events.c.resource.startswith(resource_prefix))
                .order_by(audit_events.c.seq)
            ).all()
        return [(r.action, r.outcome) for r in rows]


def expected_digest(blobs: list[bytes]) -> str:
    h = hashlib.sha256()
    for b in blobs:
        h.update(b)
    return h.hexdigest()


def _freeze(state: HubState, project: str, n: int, prefix: str) -> tuple[str, list[bytes]]:
    contents = [synthetic_blob(i, prefix) for i in range(n)]
    stored = [state.blobs.put_bytes(c) for c in contents]
    cat = state.catalog
    with cat.write() as conn:
        fill_synthetic(conn, n, projects=[project], prefix=prefix, blob_of=lambda i: (stored[i].sha256, stored[i].size))
    with cat.write() as conn:
        version = cat.datasets.freeze(conn, name=f"{project}-v1", query=[], projects=[project]).version
    # The manifest lists files by index in freeze order: return the contents in that order.
    by_sha = {s.sha256: c for s, c in zip(stored, contents, strict=True)}
    _, files = cat.datasets.manifest(version["id"], None)
    return version["id"], [by_sha[f["sha256"]] for f in files]


def serve(tmp_path: Path, **overrides: Any) -> Iterator[LiveHub]:
    pytest.importorskip("uvicorn")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = load_settings(data_dir=tmp_path / "hub", jobs_hub_url=url, **overrides)
    state = HubState.open(settings)
    lung, lung_blobs = _freeze(state, "lung", N_LUNG, "2.25.501")
    brain, brain_blobs = _freeze(state, "brain", N_BRAIN, "2.25.502")
    cat = state.catalog
    tokens = {
        "researcher": issue_token(cat, role="researcher", projects=["lung"]).token,
        "researcher_brain": issue_token(cat, role="researcher", projects=["brain"]).token,
        "clinician": issue_token(cat, role="clinician").token,
        "site": issue_token(cat, role="site", site="site-a", projects=["lung"]).token,
    }
    live = LiveHub(url, state, tokens, {"lung": lung, "brain": brain}, {"lung": lung_blobs, "brain": brain_blobs})
    try:
        with hub_in_thread(create_app(settings, state=state), port=port):
            try:
                yield live
            finally:
                for c in live.clients:
                    c.close()
    finally:
        state.close()  # stops the job runner (kills what still runs) before the catalog closes


@pytest.fixture
def live_hub(tmp_path: Path) -> Iterator[LiveHub]:
    yield from serve(tmp_path)


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write a job script (or a file in a job folder) and return its path."""

    def _write(text: str, name: str = "main.py") -> Path:
        path = tmp_path / "code" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    return _write
