"""Fixtures for the browser test: a real hub on a free 127.0.0.1 port (uvicorn in a thread) and a clinician token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.live_hub import hub_in_thread

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class LiveHub:
    url: str
    clinician_token: str


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    from medcloud.config import load_settings
    from medcloud.hub.app import create_app
    from medcloud.hub.state import HubState
    from medcloud.security.tokens import issue_token

    settings = load_settings(data_dir=tmp_path_factory.mktemp("hub") / "data")
    state = HubState.open(settings)
    token = issue_token(state.catalog, role="clinician", label="browser-test").token
    try:
        with hub_in_thread(create_app(settings, state=state)) as url:
            yield LiveHub(url, token)
    finally:
        state.close()
