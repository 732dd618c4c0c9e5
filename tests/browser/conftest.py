"""Fixtures for the browser test: a real hub on a free 127.0.0.1 port (uvicorn in a thread) and a clinician token."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@dataclass
class LiveHub:
    url: str
    clinician_token: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    import uvicorn

    from medcloud.config import load_settings
    from medcloud.hub.app import create_app
    from medcloud.hub.state import HubState
    from medcloud.security.tokens import issue_token

    settings = load_settings(data_dir=tmp_path_factory.mktemp("hub") / "data")
    state = HubState.open(settings)
    token = issue_token(state.catalog, role="clinician", label="browser-test").token
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings, state=state), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "hub did not start"
    try:
        yield LiveHub(f"http://127.0.0.1:{port}", token)
    finally:
        server.should_exit = True
        thread.join(10)
        state.close()
