"""The included routers' routing tables are built at start-up, not by the first request a worker serves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import routing as fastapi_routing
from fastapi.testclient import TestClient

from medcloud.config import load_settings
from medcloud.hub.app import create_app, warm_routes


def _count_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    built: list[str] = []
    original = fastapi_routing._EffectiveRouteContext.from_api_route

    def counting(*args: Any, **kwargs: Any) -> Any:
        built.append(str(kwargs.get("original_route", args[0] if args else "")))
        return original(*args, **kwargs)

    monkeypatch.setattr(fastapi_routing._EffectiveRouteContext, "from_api_route", staticmethod(counting))
    return built


def test_first_request_after_start_builds_no_route_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = _count_builds(monkeypatch)
    app = create_app(load_settings(data_dir=tmp_path / "hub"))
    with TestClient(app) as client:
        at_start = len(built)
        assert at_start > 20, "start-up built the included routers' tables"
        # An API route behind an included router (not one of the plain hot-path routes), and a 404.
        assert client.get("/api/v1/studies").status_code == 401
        assert client.get("/no/such/route").status_code == 404
        assert len(built) == at_start, "a request had to build routing tables the start-up should have built"


def test_without_warm_up_the_first_request_pays_for_the_tables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control: what `warm_routes` saves is real (FastAPI builds the tables lazily)."""
    built = _count_builds(monkeypatch)
    monkeypatch.setattr("medcloud.hub.app.warm_routes", lambda app: None)
    app = create_app(load_settings(data_dir=tmp_path / "hub"))
    with TestClient(app) as client:
        at_start = len(built)
        assert client.get("/no/such/route").status_code == 404
        assert len(built) > at_start + 20
    warm_routes(app)  # idempotent once built
    n = len(built)
    warm_routes(app)
    assert len(built) == n
