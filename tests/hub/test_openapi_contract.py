"""The OpenAPI document says what the hub answers (issue 12, schemathesis bar): problem-details errors
instead of FastAPI's 422, bearer security, DICOMweb media types, and a 405 that lists every method."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.hub.conftest import Hub, _make_hub


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """One hub for the module: these tests only read, or are refused."""
    yield from _make_hub(tmp_path_factory.mktemp("openapi"), None)


@pytest.fixture(scope="module")
def doc(hub: Hub) -> dict[str, Any]:
    r = hub.client.get("/api/v1/openapi.json", headers=hub.auth("admin"))
    assert r.status_code == 200
    out: dict[str, Any] = r.json()
    return out


def _operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if "responses" in op]


def test_the_document_needs_a_token(hub: Hub) -> None:
    assert hub.client.get("/api/v1/openapi.json").status_code == 401


def test_errors_are_documented_as_problem_details(doc: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in doc["components"]["schemas"]
    assert doc["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail"]
    for method, path, op in _operations(doc):
        assert "422" not in op["responses"], (method, path)  # the hub answers 400, never 422
        if path == "/healthz":
            continue
        for status in ("400", "401", "403", "404"):
            content = op["responses"][status]["content"]
            assert content == {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        if method in ("post", "put"):
            assert {"408", "413", "415"} <= set(op["responses"]), (method, path)


def test_bearer_security_everywhere_but_the_public_routes(doc: dict[str, Any]) -> None:
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert doc["security"] == [{"bearerAuth": []}]
    # The liveness probe and the sign-in page's two calls (is sign-in offered? trade the hand-over cookie).
    public = {("get", "/healthz"), ("get", "/api/v1/auth/config"), ("post", "/api/v1/auth/session")}
    for m, p in public:
        assert doc["paths"][p][m]["security"] == []
    assert all("security" not in op for m, p, op in _operations(doc) if (m, p) not in public)


def test_dicomweb_media_types_and_created_statuses(doc: dict[str, Any]) -> None:
    qido = doc["paths"]["/dicom-web/studies"]["get"]["responses"]
    assert set(qido["200"]["content"]) == {"application/dicom+json", "application/json"}
    assert "406" in qido
    stow = doc["paths"]["/dicom-web/studies"]["post"]["responses"]
    assert {"200", "202", "409"} <= set(stow)
    assert "application/dicom+json" in stow["409"]["content"]
    rendered = doc["paths"]["/dicom-web/studies/{study}/rendered"]["get"]["responses"]["200"]["content"]
    assert set(rendered) == {"image/jpeg", "image/png", "multipart/related"}
    assert "201" in doc["paths"]["/api/v1/cohorts"]["post"]["responses"]
    assert "201" in doc["paths"]["/api/v1/societies/{name}"]["put"]["responses"]


def test_job_role_is_not_offered_and_is_refused(hub: Hub, doc: dict[str, Any]) -> None:
    roles = doc["components"]["schemas"]["TokenRequest"]["properties"]["role"]["enum"]
    assert "job" not in roles and "admin" in roles
    r = hub.client.post("/api/v1/tokens", json={"role": "job"}, headers=hub.auth("admin"))
    assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/tokens", {"GET", "HEAD", "POST"}),
        ("/api/v1/audit/verify", {"GET", "HEAD"}),
        ("/dicom-web/studies", {"GET", "HEAD", "POST"}),
        ("/dicom-web/studies/1.2.3/metadata", {"GET", "HEAD"}),
        ("/api/v1/cohorts/preview", {"POST"}),  # its own path, not /cohorts/{cohort}
    ],
)
def test_405_lists_every_method_of_the_path(hub: Hub, path: str, allowed: set[str]) -> None:
    """RFC 9110 15.5.6: Starlette named only the first matching route's methods, or none at all."""
    r = hub.client.request("TRACE", path, headers=hub.auth("admin"))
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert set(r.headers["allow"].split(", ")) == allowed


@pytest.mark.parametrize(
    ("who", "url"),
    [
        ("researcher", "/api/v1/images/99999999999999999999"),
        ("researcher", "/api/v1/images/99999999999999999999/file"),
        ("researcher", "/api/v1/studies?offset=99999999999999999999"),
        ("researcher", "/api/v1/images?offset=99999999999999999999"),
        ("researcher", "/api/v1/slides?offset=99999999999999999999"),
        ("auditor", "/api/v1/audit?after=99999999999999999999"),
    ],
)
def test_integers_past_the_catalog_range_are_invalid_input_not_500(hub: Hub, who: str, url: str) -> None:
    """Found by schemathesis: an id or offset beyond 2**63-1 overflowed in the database driver (500)."""
    r = hub.client.get(url, headers=hub.auth(who))
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    ok = hub.client.get(url.replace("99999999999999999999", str(2**63 - 1)), headers=hub.auth(who))
    assert ok.status_code in (200, 404), ok.text
