"""A real `medcloud dataset download` process, SIGKILLed mid-way against a real hub, resumes losing nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medcloud.config import load_settings
from medcloud.datasets.client import read_manifest, sha256_file
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token
from medcloud.store.filler import fill_synthetic
from tests.live_hub import hub_in_thread

SRC = Path(__file__).resolve().parents[2] / "src"
N_FILES = 120


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A hub on 127.0.0.1 (uvicorn in a thread) holding one frozen version of N_FILES SYNTHETIC blobs."""
    pytest.importorskip("uvicorn")
    settings = load_settings(data_dir=tmp_path / "hub")
    state = HubState.open(settings)
    stored = [state.blobs.put_bytes(os.urandom(128 * 1024)) for _ in range(N_FILES)]
    cat = state.catalog
    with cat.write() as conn:
        fill_synthetic(conn, N_FILES, prefix="2.25.77", blob_of=lambda i: (stored[i].sha256, stored[i].size))
    with cat.write() as conn:
        version = cat.datasets.freeze(conn, name="kill", query=[], projects=["lung"]).version["id"]
    token = issue_token(cat, role="researcher", projects=["lung"]).token
    try:
        with hub_in_thread(create_app(settings, state=state)) as url:
            yield url, token, version
    finally:
        state.close()


def _download(url: str, token: str, version: str, dest: Path) -> list[str]:
    code = "from medcloud.cli import main; main()"
    return [sys.executable, "-c", code, "dataset", "download", version, str(dest), "--workers", "1", "--hub", url]


def test_sigkill_then_resume(served: tuple[str, str, str], tmp_path: Path) -> None:
    url, token, version = served
    env = {**os.environ, "PYTHONPATH": str(SRC), "MEDCLOUD_TOKEN": token}
    dest = tmp_path / "dl"
    proc = subprocess.Popen(
        _download(url, token, version, dest), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 60
    while proc.poll() is None and len(list((dest / "files").glob("*.dcm"))) < N_FILES // 4:
        assert time.time() < deadline, "download made no progress"
        time.sleep(0.002)
    killed = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    present = len(list((dest / "files").glob("*.dcm")))
    if not killed or present >= N_FILES:  # pragma: no cover - a machine fast enough to finish first
        pytest.skip("the download finished before it could be killed")
    resumed = subprocess.run(_download(url, token, version, dest), env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["kept"] == present  # every file at its final name is whole: written atomically
    assert report["kept"] + report["fetched"] == N_FILES
    _, _, files = read_manifest(dest)
    assert all(sha256_file(dest / "files" / f"{f['sop_uid']}.dcm") == f["sha256"] for f in files)
