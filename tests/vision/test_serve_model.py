"""`medcloud serve-model` as a real subprocess: token checked, same JSON as the hub, torch never imported;
a keep-alive client survives refusals, every error is problem+json, and the card's robustness flag is served."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

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


def test_a_large_phone_jpeg_is_answered_in_its_own_pixels(server: str, smear: Smear) -> None:
    """serve-model decodes a large JPEG reduced (libjpeg's DCT scaling) and turns it upright by its EXIF tag."""
    import io

    from PIL import Image

    big = Image.fromarray(smear.image).resize((2560, 2560)).transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed turned 90 degrees clockwise: upright again
    buf = io.BytesIO()
    big.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    r = httpx.post(
        server + "/api/v1/inference",
        content=buf.getvalue(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 2560, "height": 2560}
    assert body["verdict"]["code"] == "gp_cocci" and body["counts"][0]["code"] == "s_aureus"
    assert max(d["box"][2] for d in body["detections"]) > 1280  # photo pixels, not the reduced decode's


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


# ---- a keep-alive client, malformed requests, one problem+json shape, the model card route ----

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def _problem(raw: bytes, status: int) -> dict[str, object]:
    from medcloud.hub.problems import PROBLEM_BASE

    body = json.loads(raw)
    assert set(body) == PROBLEM_KEYS and body["status"] == status, body
    assert str(body["type"]).startswith(PROBLEM_BASE), "the same problem types as the hub"
    return dict(body)


def _raw(server: str, data: bytes) -> tuple[http.client.HTTPResponse, bytes, socket.socket]:
    """Send raw bytes on a fresh socket and parse one response; the socket stays open for more."""
    u = urlsplit(server)
    sock = socket.create_connection((u.hostname or "127.0.0.1", u.port or 80), timeout=10)
    sock.sendall(data)
    resp = http.client.HTTPResponse(sock)
    resp.begin()
    return resp, resp.read(), sock


def test_keep_alive_connection_survives_early_refusals(server: str, smear: Smear) -> None:
    u = urlsplit(server)
    conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port, timeout=30)
    body = png_bytes(smear, "JPEG")  # a photo with a body the refusals never look at
    auth = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}
    try:
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        sock = conn.sock
        for path, headers, status in (
            ("/api/v1/inference", {"Content-Type": "image/jpeg"}, 401),  # no token
            ("/api/v1/inference", {"Authorization": "Bearer wrong"}, 401),
            ("/api/v1/nowhere", auth, 404),
            ("/api/v1/models", auth, 405),
        ):
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            assert r.status == status and r.getheader("Content-Type") == "application/problem+json"
            _problem(r.read(), status)
            # The refused body was read and thrown away: the same connection answers the next request.
            conn.request("POST", "/api/v1/inference", body=body, headers=auth)
            ok = conn.getresponse()
            assert ok.status == 200, ok.read()
            assert json.loads(ok.read())["detections"]
            assert conn.sock is sock, "the server kept the keep-alive connection"
    finally:
        conn.close()


def test_refused_large_upload_says_connection_close(server: str) -> None:
    head = (
        "POST /api/v1/inference HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
        f"Content-Type: image/png\r\nContent-Length: {20 * 1024 * 1024}\r\n\r\n"
    )
    resp, raw, sock = _raw(server, head.encode())  # no body sent: the server must not wait for it
    try:
        assert resp.status == 401 and resp.getheader("Connection") == "close"
        _problem(raw, 401)
        sock.settimeout(5)
        assert sock.recv(1) == b"", "the server closed the connection"
    finally:
        sock.close()


def test_missing_length_and_chunked_upload_get_411(server: str) -> None:
    auth = f"Authorization: Bearer {TOKEN}\r\n"
    # No Content-Length and no Transfer-Encoding: no body, so the connection stays usable.
    resp, raw, sock = _raw(server, f"POST /api/v1/inference HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
    try:
        assert resp.status == 411
        assert "Content-Length" in str(_problem(raw, 411)["detail"])
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        again = http.client.HTTPResponse(sock)
        again.begin()
        assert again.status == 200 and json.loads(again.read())["status"] == "ok"
    finally:
        sock.close()
    chunked = (
        f"POST /api/v1/inference HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    resp, raw, sock = _raw(server, chunked.encode())
    sock.close()
    assert resp.status == 411 and resp.getheader("Connection") == "close"
    assert "chunked" in str(_problem(raw, 411)["detail"])
    for bad in (b"12x", b"-1", b"\xb2"):  # b"\xb2" is "²": str.isdigit() says yes, int() says no
        head = f"POST /api/v1/inference HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: ".encode() + bad + b"\r\n\r\n"
        resp, raw, sock = _raw(server, head)
        sock.close()
        assert resp.status == 400 and resp.getheader("Connection") == "close", bad
        _problem(raw, 400)


def test_malformed_requests_get_problem_json(server: str) -> None:
    for line, status in (
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1 extra words\r\n\r\n", 400),
        (b"GET /healthz HTTX/1.1\r\n\r\n", 400),
        (b"PUT /api/v1/inference HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 501),
    ):
        resp, raw, sock = _raw(server, line)
        sock.close()
        assert resp.status == status and resp.getheader("Content-Type") == "application/problem+json", line
        assert b"<html" not in raw.lower() and b"<!doctype" not in raw.lower()
        _problem(raw, status)


def test_415_does_not_name_a_python_object(server: str) -> None:
    r = httpx.post(server + "/api/v1/inference", content=b"not an image", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 415 and r.headers["content-type"] == "application/problem+json"
    detail = str(_problem(r.content, 415)["detail"])
    assert "object at 0x" not in detail and "_io" not in detail and "BytesIO" not in detail
    assert "PNG" in detail


def test_model_card_route(server: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    listed = httpx.get(server + "/api/v1/models", headers=auth).json()["models"][0]
    r = httpx.get(f"{server}/api/v1/models/{listed['name']}/{listed['version']}", headers=auth)
    assert r.status_code == 200
    card = r.json()
    assert card["sha256"] == card["files"]["detector.onnx"]["sha256"] and card["version"] == listed["version"]
    assert card["robustness_warning"] == listed["robustness_warning"] and "headline" in card
    assert any(not s["seen_in_training"] for s in card["sites"].values())
    r = httpx.get(f"{server}/api/v1/models/{listed['name']}/0.0.0-none", headers=auth)
    assert r.status_code == 404
    _problem(r.content, 404)
    assert httpx.get(f"{server}/api/v1/models/{listed['name']}/{listed['version']}").status_code == 401
    r = httpx.get(server + "/api/v1/models/..%2f..%2fetc/passwd", headers=auth)
    assert r.status_code == 404
    _problem(r.content, 404)


@pytest.fixture
def flagged_model(tmp_path: Path) -> Iterator[Callable[[float], str]]:
    """Start an in-process serve-model on a copy of the shipped model whose card says `unseen_map50`."""
    from medcloud.vision.registry import load_dir, resolve, write_card
    from medcloud.vision.runtime import GramStainModel
    from medcloud.vision.serve import build_server, serve_in_thread

    servers = []

    def start(unseen_map50: float) -> str:
        model_dir = tmp_path / f"m{len(servers)}"
        model_dir.mkdir()
        for f in ("detector.onnx", "classifier.onnx"):
            shutil.copyfile(resolve(None).path / f, model_dir / f)
        site = {"seen_in_training": True, "map50": 0.9, "verdict_accuracy": 1.0}
        per_site = {"site-a": site, "site-e-halogen": site | {"seen_in_training": False, "map50": unseen_map50}}
        write_card(model_dir, "gram-stain", "9.9.9-test", {"sites": ["site-a"]}, {"per_site": per_site})
        server = build_server(
            GramStainModel(model_dir), load_dir(model_dir), hashlib.sha256(TOKEN.encode()).hexdigest(), "127.0.0.1", 0
        )
        servers.append(server)
        serve_in_thread(server)
        return f"http://127.0.0.1:{server.server_port}"

    try:
        yield start
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


def test_robustness_warning_comes_from_the_card(flagged_model: Callable[[float], str], smear: Smear) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    image = png_bytes(smear, "JPEG")
    for unseen, flagged in ((0.45, True), (0.86, False)):
        url = flagged_model(unseen)
        listed = httpx.get(url + "/api/v1/models", headers=auth).json()["models"][0]
        assert bool(listed["robustness_warning"]) is flagged
        assert listed["headline"]["worst_unseen_site"] == "site-e-halogen"
        answer = httpx.post(url + "/api/v1/inference", content=image, headers=auth, timeout=30).json()
        assert answer["model"]["robustness_warning"] == listed["robustness_warning"]
        assert answer["model"]["headline"]["worst_unseen_map50"] == unseen
        if flagged:
            assert "site-e-halogen" in listed["robustness_warning"] and "0.45" in listed["robustness_warning"]


def test_expect_continue_is_refused_before_the_body(server: str) -> None:
    head = (
        "POST /api/v1/inference HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer wrong\r\n"
        "Content-Type: image/png\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
    )
    resp, raw, sock = _raw(server, head.encode())
    sock.close()
    assert resp.status == 401, "a final answer instead of 100 Continue"
    assert resp.getheader("Connection") == "close"
    _problem(raw, 401)
