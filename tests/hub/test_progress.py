"""Collection progress per society and site (`GET /api/v1/progress`), societies' targets, and the study
filters the researcher's page uses (body part, sex, age band). Per-project scoping is checked both ways."""

from __future__ import annotations

from typing import Any

import pytest

from medcloud.errors import InvalidInput
from medcloud.store.societies import example_targets
from tests.hub.conftest import Hub
from tests.hub.research_data import STUDIES, TARGETS, study


def _fill(hub: Hub) -> None:
    with hub.state.catalog.write() as conn:
        hub.state.catalog.societies.load(conn, TARGETS)
    for who, patient, modality, sex, age, part in STUDIES:
        r = hub.client.post(
            "/api/v1/ingest",
            content=study(patient, modality=modality, sex=sex, age=age, body_part=part),
            headers={**hub.auth(who), "X-Medcloud-Project": "brain" if who == "site_c" else "lung"},
        )
        assert r.status_code == 201, r.text


def _progress(hub: Hub, who: str) -> dict[str, Any]:
    r = hub.client.get("/api/v1/progress", headers=hub.auth(who))
    assert r.status_code == 200, r.text
    return dict(r.json())


def _by_name(progress: dict[str, Any]) -> dict[str | None, dict[str, Any]]:
    return {s["society"]: s for s in progress["societies"]}


@pytest.fixture(params=["sqlite", "postgresql"])
def any_hub(request: pytest.FixtureRequest) -> Hub:
    return request.getfixturevalue("hub" if request.param == "sqlite" else "pg_hub")  # type: ignore[no-any-return]


def test_progress_per_society_is_scoped_to_the_callers_projects(any_hub: Hub) -> None:
    hub = any_hub
    _fill(hub)
    lung = _by_name(_progress(hub, "researcher"))
    # A lung researcher sees soc-a (site-a, site-b), not soc-c (a brain-only site) nor the empty society.
    assert set(lung) == {"soc-a"}
    soc = lung["soc-a"]
    assert (soc["cases"], soc["images"], soc["target_cases"], soc["target_images"]) == (5, 6, 10, 20)
    assert soc["cases_progress"] == 0.5 and soc["images_progress"] == 0.3
    assert soc["display_name_ja"] == "学会A"
    sites = {s["site"]: s for s in soc["sites"]}
    assert (sites["site-a"]["cases"], sites["site-a"]["images"], sites["site-a"]["target_cases"]) == (3, 4, 4)
    # site-b holds a brain token too, but a lung researcher counts only lung data.
    assert (sites["site-b"]["cases"], sites["site-b"]["images"], sites["site-b"]["target_cases"]) == (2, 2, None)
    assert sites["site-b"]["cases_progress"] is None
    assert "PSEUDO-C1" not in str(lung)

    brain = _by_name(_progress(hub, "researcher_brain"))
    # site-b is enrolled in brain (a live site token) with nothing sent there yet: shown with zero.
    assert set(brain) == {"soc-a", "soc-c"}
    assert brain["soc-c"]["cases"] == 1 and brain["soc-c"]["target_cases"] == 7
    assert {s["site"]: s["cases"] for s in brain["soc-a"]["sites"]} == {"site-b": 0}
    assert "site-a" not in str(brain["soc-a"])

    admin = _progress(hub, "admin")
    everything = _by_name(admin)
    assert set(everything) == {"soc-a", "soc-c", "empty-soc"}
    assert everything["empty-soc"]["sites"] == [] and everything["empty-soc"]["cases"] == 0
    assert admin["totals"] == {"cases": 6, "images": 7, "sites": 3}


def test_progress_is_refused_without_the_right_token(hub: Hub) -> None:
    assert hub.client.get("/api/v1/progress").status_code == 401
    bad = {"Authorization": "Bearer mct_0123456789abcdef.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}
    assert hub.client.get("/api/v1/progress", headers=bad).status_code == 401
    for who in ("site_a", "clinician", "auditor"):
        r = hub.client.get("/api/v1/progress", headers=hub.auth(who))
        assert r.status_code == 403 and r.json()["type"].endswith("/forbidden")


def test_sites_without_a_society_are_listed_last(hub: Hub) -> None:
    r = hub.client.post("/api/v1/ingest", content=study("PSEUDO-X"), headers=hub.auth("site_a"))
    assert r.status_code == 201
    got = _progress(hub, "researcher")["societies"]
    assert [s["society"] for s in got] == [None]
    assert got[0]["sites"][0]["site"] == "site-a" and got[0]["cases"] == 1


def test_admin_sets_society_targets_and_membership(hub: Hub) -> None:
    admin = hub.auth("admin")
    r = hub.client.put("/api/v1/societies/jrs", json={"display_name": "Radiology", "target_cases": 9}, headers=admin)
    assert r.status_code == 201
    r = hub.client.put("/api/v1/societies/jrs", json={"display_name_ja": "放射線学会"}, headers=admin)
    assert r.status_code == 200
    assert hub.client.put("/api/v1/sites/site-a", json={"society": "jrs"}, headers=admin).status_code == 200
    soc = _by_name(_progress(hub, "admin"))["jrs"]
    assert (soc["display_name"], soc["display_name_ja"], soc["target_cases"]) == ("Radiology", "放射線学会", 9)
    assert [s["site"] for s in soc["sites"]] == ["site-a"]
    # "" takes the site out again.
    assert hub.client.put("/api/v1/sites/site-a", json={"society": ""}, headers=admin).status_code == 200
    assert _by_name(_progress(hub, "admin"))["jrs"]["sites"] == []
    events = hub.client.get("/api/v1/audit?action=society.update", headers=hub.auth("auditor")).json()["items"]
    assert [e["outcome"] for e in events] == ["created", "ok"] and events[0]["resource"] == "society/jrs"


def test_bad_society_requests_are_refused_and_change_nothing(hub: Hub) -> None:
    admin = hub.auth("admin")
    assert (
        hub.client.put("/api/v1/societies/jrs", json={"target_cases": 3}, headers=hub.auth("researcher")).status_code
        == 403
    )
    assert hub.client.put("/api/v1/societies/jrs", json={"target_cases": 3}).status_code == 401
    for body in ({"target_cases": -1}, {"target_images": "many"}, {"display_name": "x" * 201}):
        r = hub.client.put("/api/v1/societies/jrs", json=body, headers=admin)
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), body
    assert hub.client.put("/api/v1/societies/bad%20name", json={}, headers=admin).status_code == 400
    # A site cannot join a society that is not registered; the site is not created either.
    r = hub.client.put("/api/v1/sites/new-site", json={"society": "nope", "target_cases": 3}, headers=admin)
    assert r.status_code == 400 and "not registered" in r.json()["detail"]
    assert _progress(hub, "admin")["societies"] == []
    sites = hub.client.get("/api/v1/sites", headers=admin).json()["items"]
    assert "new-site" not in {s["site"] for s in sites}


def test_a_malformed_target_table_is_refused_whole(hub: Hub) -> None:
    cat = hub.state.catalog
    bad_tables: list[Any] = [
        [],
        {"societies": "x"},
        {"societies": [{"display_name": "no name"}]},
        {"societies": [{"name": "ok", "target_cases": -3}]},
        {"societies": [{"name": "ok", "target_cases": True}]},
        {"societies": [{"name": "ok", "colour": "red"}]},
        {"societies": [{"name": "ok"}, {"name": "bad name"}]},
        {"societies": [{"name": "ok", "sites": [{"name": "s", "society": "other"}]}]},
    ]
    for table in bad_tables:
        with pytest.raises(InvalidInput), cat.write() as conn:
            cat.societies.load(conn, table)
    assert cat.societies.progress(None)["societies"] == []


def test_the_example_table_is_labelled_and_loads(hub: Hub) -> None:
    table = example_targets()
    assert "EXAMPLE" in table["about"] and "not" in table["about"]
    with hub.state.catalog.write() as conn:
        counts = hub.state.catalog.societies.load(conn, table)
    assert counts == {"societies": 2, "sites": 2}
    got = _by_name(hub.state.catalog.societies.progress(None))
    assert [s["site"] for s in got["radiology-example"]["sites"]] == ["tokyo-univ"]
    # Loading again changes nothing.
    with hub.state.catalog.write() as conn:
        hub.state.catalog.societies.load(conn, table)
    assert _by_name(hub.state.catalog.societies.progress(None)) == got


def _uids(hub: Hub, query: str, who: str = "researcher") -> int:
    r = hub.client.get(f"/api/v1/studies?{query}", headers=hub.auth(who))
    assert r.status_code == 200, r.text
    return int(r.json()["total"])


def test_study_filters_body_part_sex_and_age_band(any_hub: Hub) -> None:
    hub = any_hub
    _fill(hub)
    assert _uids(hub, "") == 6
    assert _uids(hub, "body_part=chest") == 3
    assert _uids(hub, "body_part=HEAD&modality=MR") == 2
    assert _uids(hub, "sex=F") == 3
    assert _uids(hub, "age_min=40&age_max=69") == 4  # 50, 50 (MR), 66, 45
    assert _uids(hub, "age_min=40&age_max=69&sex=M") == 3
    assert _uids(hub, "age_min=70") == 1  # 71 (80 is in brain)
    assert _uids(hub, "age_min=70", "researcher_brain") == 1
    for bad in ("sex=X", "age_min=-1", "age_min=50&age_max=40", "body_part=" + "x" * 65):
        r = hub.client.get(f"/api/v1/studies?{bad}", headers=hub.auth("researcher"))
        assert r.status_code == 400 and r.headers["content-type"].startswith("application/problem+json"), bad
