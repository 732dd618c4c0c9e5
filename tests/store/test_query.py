"""Catalog queries: filters, pagination, per-site progress; concurrent ingest keeps one linear audit chain."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.hub.conftest import Hub, deidentified_dicom


@pytest.fixture
def filled(hub: Hub) -> Hub:
    plan = [
        ("P1", "20190105", "CT", "CHEST CT", "CT_small.dcm"),
        ("P1", "20200210", "CT", "ABDOMEN", "CT_small.dcm"),
        ("P2", "20210315", "MR", "BRAIN MRI", "MR_small.dcm"),
        ("P3", "20220420", "MR", "KNEE", "MR_small.dcm"),
    ]
    for patient, date, modality, desc, src in plan:
        study = f"2.25.{abs(hash((patient, date))) % 10**20}"
        for _ in range(2):  # two instances per study, one series
            data = deidentified_dicom(
                study_uid=study, series_uid=study + ".1", patient=patient, study_date=date,
                modality=modality, description=desc, source=src,
            )  # fmt: skip
            assert hub.client.post("/api/v1/ingest", content=data, headers=hub.auth("site_a")).status_code == 201
    return hub


def _studies(hub: Hub, query: str = "") -> dict:
    r = hub.client.get(f"/api/v1/studies{query}", headers=hub.auth("researcher"))
    assert r.status_code == 200, r.text
    return r.json()


def test_filters(filled: Hub) -> None:
    assert _studies(filled)["total"] == 4
    assert {s["description"] for s in _studies(filled, "?modality=mr")["items"]} == {"BRAIN MRI", "KNEE"}
    assert _studies(filled, "?date_from=2020-01-01&date_to=2021-12-31")["total"] == 2
    assert _studies(filled, "?patient=P1")["total"] == 2
    assert [s["description"] for s in _studies(filled, "?q=brain")["items"]] == ["BRAIN MRI"]
    assert _studies(filled, "?q=100%25")["total"] == 0  # LIKE wildcards are literal
    assert _studies(filled, "?site=site-a")["total"] == 4 and _studies(filled, "?site=site-b")["total"] == 0
    one = _studies(filled, "?patient=P2")["items"][0]
    assert one["instance_count"] == 2 and one["series_count"] == 1 and one["modalities"] == ["MR"]
    assert one["study_date"] == "2021-03-15"


def test_pagination_and_bad_parameters(filled: Hub) -> None:
    pages = [_studies(filled, f"?limit=3&offset={o}") for o in (0, 3)]
    assert [len(p["items"]) for p in pages] == [3, 1] and pages[0]["total"] == 4
    uids = [s["study_uid"] for p in pages for s in p["items"]]
    assert len(set(uids)) == 4
    h = filled.auth("researcher")
    for bad in ("?limit=0", "?limit=100000", "?date_from=2020-13-01", "?date_from=2021-01-01&date_to=2020-01-01"):
        r = filled.client.get(f"/api/v1/studies{bad}", headers=h)
        assert r.status_code == 400 and r.headers["content-type"] == "application/problem+json", bad


def test_study_detail_and_instances(filled: Hub) -> None:
    study = _studies(filled, "?patient=P3")["items"][0]
    detail = filled.client.get(f"/api/v1/studies/{study['study_uid']}", headers=filled.auth("researcher")).json()
    assert len(detail["series"]) == 1 and detail["series"][0]["instance_count"] == 2
    r = filled.client.get(f"/api/v1/instances?study={study['study_uid']}", headers=filled.auth("researcher")).json()
    assert r["total"] == 2 and all(i["modality"] == "MR" for i in r["items"])
    assert filled.client.get("/api/v1/studies/2.25.999", headers=filled.auth("researcher")).status_code == 404


def test_site_progress_against_targets(filled: Hub) -> None:
    r = filled.client.put(
        "/api/v1/sites/site-a", json={"target_cases": 6, "target_images": 16}, headers=filled.auth("admin")
    )
    assert r.status_code == 200
    sites = {s["site"]: s for s in filled.client.get("/api/v1/sites", headers=filled.auth("admin")).json()["items"]}
    a = sites["site-a"]
    assert (a["cases"], a["images"], a["cases_progress"], a["images_progress"]) == (3, 8, 0.5, 0.5)
    bad = filled.client.put("/api/v1/sites/..%2Fetc", json={}, headers=filled.auth("admin"))
    assert bad.status_code in (400, 404)


def _concurrent_ingest(hub: Hub, n: int) -> None:
    files = [deidentified_dicom() for _ in range(n)]
    with ThreadPoolExecutor(8) as pool:
        codes = list(
            pool.map(
                lambda d: hub.client.post("/api/v1/ingest", content=d, headers=hub.auth("site_a")).status_code, files
            )
        )
    assert codes == [201] * n
    report = hub.state.catalog.audit.verify()
    assert report.ok, report
    r = hub.client.get("/api/v1/instances?limit=1", headers=hub.auth("researcher")).json()
    assert r["total"] == n


def test_concurrent_ingest_sqlite(hub: Hub) -> None:
    _concurrent_ingest(hub, 40)


@pytest.mark.postgres
def test_concurrent_ingest_postgres(pg_hub: Hub) -> None:
    _concurrent_ingest(pg_hub, 40)


def test_sites_are_scoped_to_the_researchers_projects(hub: Hub) -> None:
    """Issue 10 (12): /api/v1/sites listed every site to any researcher; now only their projects' sites."""
    for name in ("site-b", "site-c", "site-z"):  # site-z: registered by an admin, in no project yet
        assert hub.client.put(f"/api/v1/sites/{name}", json={"target_cases": 3}, headers=hub.auth("admin")).is_success
    brain = deidentified_dicom()
    r = hub.client.post("/api/v1/ingest", content=brain, headers={**hub.auth("site_c"), "X-Medcloud-Project": "brain"})
    assert r.status_code == 201
    lung = hub.client.post("/api/v1/ingest", content=deidentified_dicom(), headers=hub.auth("site_a"))
    assert lung.status_code == 201

    def listed(who: str) -> dict[str, dict]:
        r = hub.client.get("/api/v1/sites", headers=hub.auth(who))
        assert r.status_code == 200, r.text
        return {s["site"]: s for s in r.json()["items"]}

    # site-b holds a token for lung and brain but has sent nothing: enrolled in both, so listed in both.
    assert set(listed("researcher")) == {"site-a", "site-b"}
    assert set(listed("researcher_brain")) == {"site-b", "site-c"}
    assert listed("researcher_brain")["site-c"]["cases"] == 1
    assert set(listed("admin")) >= {"site-a", "site-c", "site-z"}
