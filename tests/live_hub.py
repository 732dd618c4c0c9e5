"""A real hub on a free 127.0.0.1 port for end-to-end tests, two ways:

- `hub_in_thread(app)`: uvicorn serving an app made in the test (its state shared with the test);
- `hub_process(data_dir)`: `medcloud hub serve` as a subprocess (what an operator runs), logged to a file.

Both wait until the hub answers and stop it at the end of the `with` block.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"
START_TIMEOUT_S = 90.0  # a loaded 2-core CI machine can take this long to import and start a hub


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def hub_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve `app` with uvicorn in a daemon thread; yields its base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started and time.monotonic() < deadline:
        assert thread.is_alive(), "hub thread died while starting"
        time.sleep(0.05)
    assert server.started, "hub did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def hub_process(data: Path, env: Mapping[str, str] | None = None, port: int | None = None) -> Iterator[str]:
    """`medcloud hub serve --data DATA` on 127.0.0.1 as a subprocess (log beside DATA); yields its base URL.

    The hub sees no `MEDCLOUD_*` variable of the test's environment, only those of `env`."""
    port = port or free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLOUD_")}
    full_env.update({"PYTHONPATH": str(SRC), **(env or {})})
    log = data.parent / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "medcloud.cli", "hub", "serve", "--data", str(data), "--host", "127.0.0.1",
             "--port", str(port)], env=full_env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"hub did not start: {log.read_text()[-2000:]}"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
