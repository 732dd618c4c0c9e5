"""The /viewer/ mount: the built pages are served with the viewer's CSP; an unbuilt install says how to build."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from medcloud.hub import problems
from medcloud.hub.app import CSP, VIEWER_CSP, SecurityHeaders
from medcloud.hub.viewer import mount_viewer


def _client(web: Path) -> TestClient:
    app = FastAPI()
    problems.install(app)
    mount_viewer(app, web)
    app.add_middleware(SecurityHeaders)
    return TestClient(app)


def test_built_viewer_is_served_with_its_own_csp(tmp_path: Path) -> None:
    (tmp_path / "viewer").mkdir()
    (tmp_path / "viewer" / "index.html").write_text("<!doctype html><title>v</title>")
    (tmp_path / "viewer" / "viewer.js").write_text("export {};")
    client = _client(tmp_path)
    r = client.get("/viewer/?study=1.2.3")
    assert r.status_code == 200 and "<title>v</title>" in r.text
    assert r.headers["content-security-policy"] == VIEWER_CSP
    assert client.get("/viewer/viewer.js").headers["content-security-policy"] == VIEWER_CSP
    assert client.get("/viewer/../index.html").status_code == 404
    assert client.get("/viewer/nothing.js").status_code == 404
    # Only the viewer's path gets WebAssembly; everything else keeps the strict policy.
    assert "wasm-unsafe-eval" in VIEWER_CSP and "wasm" not in CSP
    assert VIEWER_CSP.replace(" 'wasm-unsafe-eval'", "").removesuffix("; worker-src 'self'") == CSP


def test_unbuilt_viewer_is_a_clear_404(tmp_path: Path) -> None:
    r = _client(tmp_path).get("/viewer/")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "npm run build" in r.json()["detail"]


def test_viewer_assets_are_served_precompressed_by_accept_encoding(tmp_path: Path) -> None:
    import gzip

    viewer = tmp_path / "viewer"
    viewer.mkdir()
    (viewer / "index.html").write_text("<!doctype html><title>v</title>")
    body = b"export const x = 1;\n" * 500
    (viewer / "viewer.js").write_bytes(body)
    (viewer / "viewer.js.gz").write_bytes(gzip.compress(body))
    (viewer / "viewer.js.br").write_bytes(b"not really brotli")  # served as-is, never decoded by the hub
    (viewer / "codec.wasm").write_bytes(b"\0asm" + bytes(2000))
    (viewer / "codec.wasm.gz").write_bytes(gzip.compress(b"\0asm" + bytes(2000)))
    client = _client(tmp_path)

    gz = client.get("/viewer/viewer.js", headers={"Accept-Encoding": "gzip"})
    assert gz.status_code == 200 and gz.headers["content-encoding"] == "gzip"
    assert gz.content == body  # the test client decodes gzip: the bytes are the original file's
    assert gz.headers["content-type"].startswith("text/javascript")
    assert gz.headers["vary"] == "Accept-Encoding"
    assert gz.headers["content-security-policy"] == VIEWER_CSP

    br = client.get("/viewer/viewer.js", headers={"Accept-Encoding": "br, gzip"})
    assert br.headers["content-encoding"] == "br"
    # Brotli is preferred when accepted; a q=0 coding is not accepted.
    assert (
        client.get("/viewer/viewer.js", headers={"Accept-Encoding": "br;q=0, gzip"}).headers["content-encoding"]
        == "gzip"
    )
    # WebAssembly keeps its media type (streaming compilation needs application/wasm).
    wasm = client.get("/viewer/codec.wasm", headers={"Accept-Encoding": "gzip"})
    assert wasm.headers["content-encoding"] == "gzip" and wasm.headers["content-type"] == "application/wasm"

    identity = client.get("/viewer/viewer.js", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in identity.headers and identity.content == body
    # A ranged request gets the identity bytes, so the range means what the client thinks it means.
    ranged = client.get("/viewer/viewer.js", headers={"Accept-Encoding": "gzip", "Range": "bytes=0-5"})
    assert ranged.status_code == 206 and ranged.content == body[:6] and "content-encoding" not in ranged.headers
    # The compressed siblings do not open a way out of the folder.
    assert client.get("/viewer/../index.html", headers={"Accept-Encoding": "gzip"}).status_code == 404
