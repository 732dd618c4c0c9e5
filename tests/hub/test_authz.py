"""Every route x every role: allowed roles get through, everyone else is refused; deny by default."""

from __future__ import annotations

from datetime import timedelta

import pytest

from medcloud.security.tokens import issue_token, revoke_token
from tests.dicomweb.authz_routes import DICOMWEB_EXPECTED, dicomweb_call
from tests.hub.conftest import Hub, deidentified_dicom
from tests.wsi.authz_routes import SLIDES_EXPECTED, slides_call

ALL = {"site_a", "researcher", "clinician", "auditor", "admin"}
# (method, path template) -> roles allowed. A route missing here fails the coverage test below.
EXPECTED: dict[tuple[str, str], set[str]] = {
    ("POST", "/api/v1/ingest"): {"site_a"},
    ("POST", "/api/v1/ingest/batch"): {"site_a"},
    ("GET", "/api/v1/studies"): {"researcher"},
    ("GET", "/api/v1/studies/{study_uid}"): {"researcher"},
    ("GET", "/api/v1/instances"): {"researcher"},
    ("GET", "/api/v1/instances/{sop_uid}"): {"researcher"},
    ("GET", "/api/v1/instances/{sop_uid}/file"): {"researcher"},
    ("GET", "/api/v1/images"): {"researcher"},
    ("GET", "/api/v1/images/{image_id}"): {"researcher"},
    ("GET", "/api/v1/images/{image_id}/file"): {"researcher"},
    ("GET", "/api/v1/sites"): {"researcher", "admin"},
    ("PUT", "/api/v1/sites/{name}"): {"admin"},
    ("GET", "/api/v1/progress"): {"researcher", "admin"},
    ("PUT", "/api/v1/societies/{name}"): {"admin"},
    ("GET", "/api/v1/tokens"): {"admin"},
    ("POST", "/api/v1/tokens"): {"admin"},
    ("DELETE", "/api/v1/tokens/{token_id}"): {"admin"},
    ("GET", "/api/v1/audit"): {"auditor"},
    ("GET", "/api/v1/audit/verify"): {"auditor"},
    ("GET", "/api/v1/audit/checkpoints/latest"): {"auditor"},
    ("GET", "/api/v1/audit/log-key"): {"auditor"},
    ("GET", "/api/v1/audit/proof/{event_id}"): {"auditor"},
    ("GET", "/api/v1/audit/fhir"): {"auditor"},
    ("POST", "/api/v1/fl/rounds"): {"admin"},
    ("POST", "/api/v1/inference"): {"clinician"},
    ("GET", "/api/v1/models"): {"researcher", "clinician", "admin"},
    ("GET", "/api/v1/models/{name}/{version}"): {"researcher", "clinician", "admin"},
    ("POST", "/api/v1/cohorts"): {"researcher"},
    ("GET", "/api/v1/cohorts"): {"researcher"},
    ("GET", "/api/v1/cohorts/{cohort}"): {"researcher"},
    ("POST", "/api/v1/cohorts/preview"): {"researcher"},
    ("POST", "/api/v1/datasets"): {"researcher"},
    ("GET", "/api/v1/datasets"): {"researcher"},
    ("GET", "/api/v1/datasets/{dataset_id}"): {"researcher"},
    ("GET", "/api/v1/datasets/{dataset_id}/manifest"): {"researcher"},
    ("GET", "/api/v1/datasets/{dataset_id}/files/{ref}/file"): {"researcher"},
    ("POST", "/api/v1/reports"): {"site_a"},
    ("GET", "/api/v1/studies/{study_uid}/reports"): {"researcher"},
    ("POST", "/api/v1/results"): {"researcher"},
    ("GET", "/api/v1/whoami"): ALL,
    ("GET", "/api/v1/openapi.json"): ALL,
    ("POST", "/api/v1/jobs"): {"researcher"},
    ("GET", "/api/v1/jobs"): {"researcher"},
    ("GET", "/api/v1/jobs/{job_id}"): {"researcher"},
    ("GET", "/api/v1/jobs/{job_id}/logs"): {"researcher"},
    ("POST", "/api/v1/jobs/{job_id}/cancel"): {"researcher"},
    ("GET", "/api/v1/jobs/{job_id}/artifacts"): {"researcher"},
    ("GET", "/api/v1/jobs/{job_id}/artifacts/{name}"): {"researcher"},
    ("POST", "/api/v1/jobs/{job_id}/models"): {"researcher"},
    # A running job's own token only (tests/jobs): no person's role reaches these.
    ("PUT", "/api/v1/jobs/{job_id}/artifacts/{name}"): set(),
    # Passkeys belong to people's sessions (tests/hub/test_passkeys.py); no machine token reaches them.
    ("POST", "/api/v1/auth/webauthn/register/options"): set(),
    ("POST", "/api/v1/auth/webauthn/register/verify"): set(),
    ("POST", "/api/v1/auth/webauthn/authenticate/options"): set(),
    ("POST", "/api/v1/auth/webauthn/authenticate/verify"): set(),
    ("GET", "/api/v1/auth/webauthn/credentials"): set(),
    ("DELETE", "/api/v1/auth/webauthn/people/{person}"): {"admin"},
    ("DELETE", "/api/v1/auth/lockouts/{key}"): {"admin"},
    # One-time passkey enrolment codes (tests/hub/test_enrolment_codes.py): admins issue, list, revoke;
    # only a person's session redeems.
    ("POST", "/api/v1/auth/webauthn/enrolment-codes"): {"admin"},
    ("GET", "/api/v1/auth/webauthn/enrolment-codes"): {"admin"},
    ("DELETE", "/api/v1/auth/webauthn/enrolment-codes/{code_id}"): {"admin"},
    ("POST", "/api/v1/auth/webauthn/enrolment-codes/redeem"): set(),
    # The MHLW self-check of the deployment (tests/hub/test_selfcheck_api.py).
    # The auditor runs it too: the regular self-audit is the auditor's (MHLW guideline).
    ("GET", "/api/v1/admin/self-check"): {"admin", "auditor"},
    # The log's public keys across rotations, and a rotation (tests/hub/test_log_key_rotation.py).
    ("GET", "/api/v1/audit/log-keys"): {"auditor"},
    ("POST", "/api/v1/audit/log-key/rotate"): {"admin"},
    ("GET", "/api/v1/jobs/{job_id}/dataset/manifest"): set(),
    ("GET", "/api/v1/jobs/{job_id}/dataset/files/{ref}"): set(),
    ("GET", "/api/v1/jobs/{job_id}/dataset/batch"): set(),
    # The relayed federated-learning public folder (tests/federated/test_fl_relay.py): the federation's
    # sites and the aggregator's admin read; a file whose name says its author is that site's to write.
    ("GET", "/api/v1/fl/{federation}/public"): {"site_a", "site_b", "admin"},
    ("GET", "/api/v1/fl/{federation}/public/{name}"): {"site_a", "site_b", "admin"},
    ("PUT", "/api/v1/fl/{federation}/public/{name}"): {"site_a"},
    # A person's session only (tests/security/test_oidc.py): machine tokens are refused.
    ("POST", "/api/v1/auth/refresh"): set(),
    ("POST", "/api/v1/auth/logout"): set(),
    **DICOMWEB_EXPECTED,
    **SLIDES_EXPECTED,
}
# Sign-in: whether it is offered, and the hand-over cookie's trade for a session (tests/security/test_oidc.py).
PUBLIC = {("GET", "/healthz"), ("GET", "/api/v1/auth/config"), ("POST", "/api/v1/auth/session")}


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (230, 220, 230)).save(buf, format="PNG")
    return buf.getvalue()


def _sleeper_zip() -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("main.py", "import time\ntime.sleep(60)\n")
    return buf.getvalue()


def _routes(hub: Hub) -> set[tuple[str, str]]:
    spec = hub.client.get("/api/v1/openapi.json", headers=hub.auth("admin")).json()
    return {(m.upper(), path) for path, ops in spec["paths"].items() for m in ops}


def test_every_route_has_an_expectation(hub: Hub) -> None:
    routes = _routes(hub) | {("GET", "/api/v1/openapi.json")}
    missing = routes - set(EXPECTED) - PUBLIC
    assert not missing, f"routes without an authorization expectation: {sorted(missing)}"


def _call(hub: Hub, method: str, path: str, headers: dict[str, str], ctx: dict[str, str]):
    if path.startswith("/dicom-web/"):
        return dicomweb_call(hub, method, path, headers, ctx)
    if path.startswith("/api/v1/slides"):
        return slides_call(hub, method, path, headers, ctx)
    if path.startswith("/api/v1/fl/{federation}/public"):
        url = path.format(federation="lung", name="identity-site-a.x25519.pub")
        if method == "PUT":
            return hub.client.put(url, content=b"K" * 32, headers=headers)
        if path.endswith("{name}"):  # published by its author first, so a refusal is about the caller
            assert hub.client.put(url, content=b"K" * 32, headers=hub.auth("site_a")).status_code in (200, 201)
        return hub.client.get(url, headers=headers)
    url = path.format(**{**ctx, "name": ctx["model"]} if path.startswith("/api/v1/models/") else ctx)
    if path.startswith("/api/v1/jobs"):
        url = path.format(**{**ctx, "name": "a.bin"})
        if path == "/api/v1/jobs" and method == "POST":
            zipped = {**headers, "Content-Type": "application/zip"}
            return hub.client.post(url, params={"dataset": ctx["dataset_id"]}, content=_sleeper_zip(), headers=zipped)
        if path.endswith("/models"):
            return hub.client.post(
                url, json={"name": "authz-model", "version": "1", "artifact": "a.bin"}, headers=headers
            )
    body: dict[str, object] | None = None
    if path == "/api/v1/auth/webauthn/enrolment-codes/{code_id}":  # an open code for each caller to revoke
        from medcloud.security import enrolment_codes

        issued = enrolment_codes.issue(hub.state.catalog, ctx["person"], by="test", seconds=600, max_seconds=3600)
        url = path.format(code_id=issued.code_id)
    if path == "/api/v1/auth/webauthn/enrolment-codes" and method == "POST":
        body = {"person": ctx["person"]}
    elif path == "/api/v1/auth/webauthn/enrolment-codes/redeem":
        body = {"code": "0000-0000-0000-0000"}
    elif path == "/api/v1/tokens" and method == "POST":
        body = {"role": "auditor"}
    elif path == "/api/v1/fl/rounds":
        body = {"round": 1, "model_version": "v1", "mode": "ckks", "participants": ["site-a"]}
    elif path.startswith(("/api/v1/sites/", "/api/v1/societies/")):
        body = {"target_cases": 10}
    elif path in ("/api/v1/cohorts", "/api/v1/cohorts/preview", "/api/v1/datasets") and method == "POST":
        body = {"name": "authz", "query": [{"modality": "CT"}]}
    elif path == "/api/v1/results":
        body = {"kind": "boxes", "sources": [ctx["sop_uid"]], "algorithm": "authz", "algorithm_version": "1",
                "boxes": [{"x": 1, "y": 1, "w": 4, "h": 4, "label": "nodule"}]}  # fmt: skip
    if path == "/api/v1/ingest":
        return hub.client.post(url, content=deidentified_dicom(), headers=headers)
    if path == "/api/v1/reports":
        report = {"study_uid": "2.25.1234567", "patient": "MC" + "A" * 16, "text": "No nodule.", "date": None}
        return hub.client.post(url, json=[report], headers=headers)
    if path == "/api/v1/inference":
        return hub.client.post(url, content=_png(), headers={**headers, "Content-Type": "image/png"})
    if path == "/api/v1/ingest/batch":
        from tests.hub.test_batch import multipart

        data, ctype = multipart([(deidentified_dicom(), {})])
        return hub.client.post(url, content=data, headers={**headers, "Content-Type": ctype})
    return hub.client.request(method, url, json=body, headers=headers)


@pytest.fixture
def ctx(hub: Hub) -> dict[str, str]:
    r = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    assert r.status_code == 201
    inst = r.json()
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    img = hub.client.post("/api/v1/ingest", content=buf.getvalue(), headers=hub.auth("site_a")).json()
    spare = issue_token(hub.state.catalog, role="auditor").principal.token_id
    models = hub.client.get("/api/v1/models", headers=hub.auth("clinician")).json()["models"]
    assert models, "the packaged model should be listed"
    cohort = {"name": "ct", "query": [{"modality": "CT"}]}
    assert hub.client.post("/api/v1/cohorts", json=cohort, headers=hub.auth("researcher")).status_code == 201
    dataset = hub.client.post("/api/v1/datasets", json={**cohort, "seed": 5}, headers=hub.auth("researcher"))
    assert dataset.status_code == 201, dataset.text
    job = hub.client.post(
        "/api/v1/jobs", params={"dataset": dataset.json()["id"]}, content=_sleeper_zip(),
        headers={**hub.auth("researcher"), "Content-Type": "application/zip"},
    )  # fmt: skip
    assert job.status_code == 201, job.text
    artefact = hub.state.blobs.put_bytes(b"an artefact")
    with hub.state.catalog.write() as conn:
        hub.state.catalog.jobs.add_artifact(conn, job.json()["id"], "a.bin", artefact.sha256, artefact.size)
    return {
        "job_id": job.json()["id"],
        "study_uid": inst["study_instance_uid"],
        "sop_uid": inst["sop_instance_uid"],
        "image_id": str(img["image_id"]),
        "name": "site-a",
        "token_id": spare,
        "model": models[0]["name"],
        "version": models[0]["version"],
        "cohort": "ct",
        "dataset_id": dataset.json()["id"],
        "ref": "0",
        "person": "someone@hospital.example",
        "key": "addr:203.0.113.9",
        "event_id": "1",
        "code_id": "0",  # replaced by a fresh open code in _call
    }


@pytest.mark.parametrize("route", sorted(EXPECTED), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_by_role(hub: Hub, ctx: dict[str, str], route: tuple[str, str]) -> None:
    method, path = route
    for role in sorted(ALL):
        r = _call(hub, method, path, hub.auth(role), ctx)
        if role in EXPECTED[route]:
            assert r.status_code < 400, f"{role} refused on {method} {path}: {r.status_code} {r.text}"
            if method == "DELETE":  # the spare token is gone now; make a new one for the next role
                ctx["token_id"] = issue_token(hub.state.catalog, role="auditor").principal.token_id
        else:
            assert r.status_code == 403, f"{role} allowed on {method} {path}: {r.status_code}"
            assert r.json()["type"].endswith("/forbidden")
    assert _call(hub, method, path, {}, ctx).status_code == 401
    bad = {"Authorization": "Bearer mct_0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
    assert _call(hub, method, path, bad, ctx).status_code == 401
    assert _call(hub, method, path, {"Authorization": "Basic dXNlcjpwYXNz"}, ctx).status_code == 401


def test_public_routes_hold_no_data(hub: Hub) -> None:
    r = hub.client.get("/healthz")
    assert r.status_code == 200 and set(r.json()) == {"status", "version"}
    assert "content-security-policy" in r.headers and r.headers["x-content-type-options"] == "nosniff"


def test_wrong_secret_expired_and_revoked_tokens_are_refused(hub: Hub) -> None:
    good = hub.tokens["researcher"]
    wrong = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    assert hub.client.get("/api/v1/studies", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
    expired = issue_token(hub.state.catalog, role="researcher", projects=["lung"], expires_in=timedelta(seconds=-1))
    r = hub.client.get("/api/v1/studies", headers={"Authorization": f"Bearer {expired.token}"})
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    live = issue_token(hub.state.catalog, role="researcher", projects=["lung"])
    h = {"Authorization": f"Bearer {live.token}"}
    assert hub.client.get("/api/v1/studies", headers=h).status_code == 200
    r = hub.client.delete(f"/api/v1/tokens/{live.principal.token_id}", headers=hub.auth("admin"))
    assert r.status_code == 200
    r = hub.client.get("/api/v1/studies", headers=h)
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    # Revoked from the CLI path (no verifier to notify): the cache lives 5 s at most, then refuses.
    other = issue_token(hub.state.catalog, role="auditor")
    revoke_token(hub.state.catalog, None, other.principal.token_id, by="test")
    hub.state.verifier.forget(other.principal.token_id)
    assert hub.client.get("/api/v1/audit", headers={"Authorization": f"Bearer {other.token}"}).status_code == 401


def test_researcher_reads_only_granted_projects(hub: Hub) -> None:
    lung = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a")).json()
    brain = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_c")).json()
    assert brain["project"] == "brain"
    r = hub.client.get("/api/v1/studies", headers=hub.auth("researcher")).json()
    assert [s["study_uid"] for s in r["items"]] == [lung["study_instance_uid"]]
    assert hub.client.get("/api/v1/studies?project=brain", headers=hub.auth("researcher")).status_code == 403
    for path in (
        f"/api/v1/studies/{brain['study_instance_uid']}",
        f"/api/v1/instances/{brain['sop_instance_uid']}",
        f"/api/v1/instances/{brain['sop_instance_uid']}/file",
    ):
        assert hub.client.get(path, headers=hub.auth("researcher")).status_code == 404
    got = hub.client.get(f"/api/v1/instances/{brain['sop_instance_uid']}/file", headers=hub.auth("researcher_brain"))
    assert got.status_code == 200
    sites = hub.client.get("/api/v1/sites", headers=hub.auth("researcher")).json()["items"]
    counts = {s["site"]: s["images"] for s in sites}
    assert counts["site-a"] == 1 and "site-c" not in counts  # a brain-only site is not shown to a lung researcher


def test_token_issue_rules(hub: Hub) -> None:
    admin = hub.auth("admin")
    assert hub.client.post("/api/v1/tokens", json={"role": "researcher"}, headers=admin).status_code == 400
    assert hub.client.post("/api/v1/tokens", json={"role": "site"}, headers=admin).status_code == 400
    r = hub.client.post("/api/v1/tokens", json={"role": "auditor", "site": "x"}, headers=admin)
    assert r.status_code == 400
    assert hub.client.post("/api/v1/tokens", json={"role": "root"}, headers=admin).status_code == 400
    r = hub.client.post(
        "/api/v1/tokens", json={"role": "site", "site": "osaka", "projects": ["lung"], "expires": "30d"}, headers=admin
    )
    assert r.status_code == 201 and r.json()["token"].startswith("mct_")
    listed = hub.client.get("/api/v1/tokens", headers=admin).json()["items"]
    assert all("secret_sha256" not in t for t in listed)
    assert r.json()["token"].split(".")[1] not in str(listed)


def test_no_route_publishes_the_token_checks_own_options(hub: Hub) -> None:
    """`authenticate(request, *, use, memory_only)` is never a route's dependency: FastAPI would publish its
    keyword options as query parameters (`?memory_only=true` answered 500; `?use=false` let a session's
    request go uncounted for its idle timeout)."""
    spec = hub.client.get("/api/v1/openapi.json", headers=hub.auth("admin")).json()
    published = {
        (path, p["name"])
        for path, ops in spec["paths"].items()
        for op in ops.values()
        for p in op.get("parameters", [])
    }
    assert not {(path, name) for path, name in published if name in ("use", "memory_only")}
    r = hub.client.get("/api/v1/openapi.json?memory_only=true&use=false", headers=hub.auth("researcher"))
    assert r.status_code == 200, r.text
    assert hub.client.get("/api/v1/openapi.json?memory_only=true").status_code == 401
