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
