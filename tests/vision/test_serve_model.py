"""`medcloud serve-model` as a real subprocess: token checked, same JSON as the hub, torch never imported."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from medcloud.vision.synth import Smear

from .conftest import png_bytes

TOKEN = "serve-test-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_model_argv(port: int) -> list[str]:
    """The command Dockerfile.serve-model runs (there with --host 0.0.0.0 --port 8080)."""
    medcloud = Path(sys.executable).with_name("medcloud")
    return [str(medcloud), "serve-model", "--host", "127.0.0.1", "--port", str(port)]


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    env = dict(os.environ, MEDCLOUD_SERVE_TOKEN_SHA256=hashlib.sha256(TOKEN.encode()).hexdigest())
    proc = subprocess.Popen(serve_model_argv(port), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else b""
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_torch_is_not_imported(server: str) -> None:
    body = httpx.get(server + "/healthz").json()
    assert body["status"] == "ok" and body["torch_imported"] is False


def test_token_required(server: str, smear: Smear) -> None:
    r = httpx.post(server + "/api/v1/inference", content=png_bytes(smear))
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"
    r = httpx.post(server + "/api/v1/inference", content=png_bytes(smear), headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert httpx.get(server + "/api/v1/models").status_code == 401


def test_inference_answers_same_shape_as_hub(server: str, smear: Smear) -> None:
    r = httpx.post(
        server + "/api/v1/inference",
        content=png_bytes(smear),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["synthetic_model"] is True and body["kept"] is False
    assert {"detections", "counts", "verdict", "model_version", "latency_ms", "crop_votes"} <= set(body)
    assert body["detections"], "a smear with six S. aureus clusters yields boxes"
    codes = [c["code"] for c in body["counts"]]
    assert codes[0] == "s_aureus"
    assert body["verdict"]["code"] == "gp_cocci"


def test_multipart_and_bad_input(server: str, smear: Smear) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.post(
        server + "/api/v1/inference",
        files={"image": ("s.jpg", png_bytes(smear, "JPEG"), "image/jpeg")},
        headers=auth,
        timeout=30,
    )
    assert r.status_code == 200 and r.json()["detections"]
    r = httpx.post(server + "/api/v1/inference", content=b"not an image", headers=auth)
    assert r.status_code == 415 and r.json()["type"].endswith("unsupported-format")
    r = httpx.post(server + "/api/v1/inference?threshold=7", content=png_bytes(smear), headers=auth)
    assert r.status_code == 400
