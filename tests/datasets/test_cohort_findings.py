"""Cohorts with report findings: real reports through `POST /api/v1/reports` (the hub's NLP extracts the
findings), then `pneumothorax=present AND NOT pleural_effusion=present` with image terms, in the preview,
a saved cohort and a frozen version; scoping to projects; bad terms are 400."""

from __future__ import annotations

import json
from typing import Any

import pytest

from medcloud.datasets.where import parse_where
from medcloud.deid import SiteKey
from medcloud.deid.keys import Pseudonymizer
from medcloud.deid.reports import Report, ReportDeidentifier
from medcloud.errors import InvalidInput
from tests.hub.conftest import Hub, deidentified_dicom

KEY = SiteKey(bytes(range(32)))
PSEUDO = Pseudonymizer(KEY)
# Study i (original UID 1.2.3.i) belongs to patient P<i>, dated 20(10+i)-01-02, two CT instances; 6 is brain MR.
REPORTS = {
    0: "右肺に気胸を認める。胸水は認めない。",  # pneumothorax present, effusion absent
    1: "Large right pneumothorax. Moderate pleural effusion.",  # both present
    2: "No pneumothorax. Lungs are clear.",  # pneumothorax absent
    3: "左気胸の疑い。",  # pneumothorax uncertain
    4: "Small left apical pneumothorax. No pleural effusion.",  # present, effusion absent
}
PTX_NOT_EFFUSION = [
    {"kind": "finding", "code": "pneumothorax", "status": "present"},
    {"kind": "finding", "code": "pleural_effusion", "status": "present", "negate": True},
]


def uid(i: int) -> str:
    return PSEUDO.uid(f"1.2.3.{i}")


def _report(i: int, text: str) -> dict[str, Any]:
    """A report made the way a gateway makes it (same key, same cleaner as the images)."""
    report = Report(patient_id=f"P{i}", text=text, study_uid=f"1.2.3.{i}", date=f"20{10 + i}-01-03")
    return ReportDeidentifier(KEY).deidentify(report).to_json()


@pytest.fixture
def filled(hub: Hub) -> Hub:
    """Six lung CT studies of two instances (site-a) and one brain MR study (site-c), de-identified alike."""
    for i in range(7):
        for _ in range(2):
            data = deidentified_dicom(
                study_uid=uid(i), series_uid=uid(i) + ".1", patient=PSEUDO.patient(f"P{i}"),
                modality="MR" if i == 6 else "CT", source="MR_small.dcm" if i == 6 else "CT_small.dcm",
                study_date=f"20{10 + i}0102",
            )  # fmt: skip
            r = hub.client.post("/api/v1/ingest", content=data, headers=hub.auth("site_c" if i == 6 else "site_a"))
            assert r.status_code == 201, r.text
    return hub


def _post_reports(hub: Hub) -> None:
    items = [_report(i, text) for i, text in REPORTS.items()]
    r = hub.client.post("/api/v1/reports", content=json.dumps(items), headers=hub.auth("site_a"))
    assert r.status_code == 201, r.text
    assert r.json()["stored"] == len(REPORTS)


def _preview(hub: Hub, query: Any, who: str = "researcher", **extra: Any) -> Any:
    return hub.client.post("/api/v1/cohorts/preview", json={"query": query, **extra}, headers=hub.auth(who))


def _studies(body: dict[str, Any]) -> set[str]:
    return {item["study_uid"] for item in body["items"]}


def test_findings_terms_select_studies_by_their_reports(filled: Hub) -> None:
    _post_reports(filled)
    r = _preview(filled, PTX_NOT_EFFUSION)
    assert r.status_code == 200, r.text
    body = r.json()
    assert _studies(body) == {uid(0), uid(4)}
    assert (body["instances"], body["series"], body["studies"], body["patients"]) == (4, 2, 2, 2)
    assert all(item["matched_instances"] == 2 and item["modalities"] == ["CT"] for item in body["items"])
    # Newest first.
    assert [i["study_uid"] for i in body["items"]] == [uid(4), uid(0)]

    with_dates = [*PTX_NOT_EFFUSION, {"kind": "image", "modality": "CT", "date_to": "2012-12-31"}]
    assert _studies(_preview(filled, with_dates).json()) == {uid(0)}
    # Negated alone: studies without a present pneumothorax, including the one with no report at all.
    no_ptx = _preview(filled, [{"kind": "finding", "code": "pneumothorax", "negate": True}]).json()
    assert _studies(no_ptx) == {uid(2), uid(3), uid(5)} and no_ptx["instances"] == 6
    uncertain = _preview(filled, [{"kind": "finding", "code": "pneumothorax", "status": "uncertain"}]).json()
    assert _studies(uncertain) == {uid(3)}
    # Paging: one study per page, in order.
    pages = [_preview(filled, PTX_NOT_EFFUSION, limit=1, offset=k).json()["items"] for k in (0, 1, 2)]
    assert [len(p) for p in pages] == [1, 1, 0] and pages[0][0]["study_uid"] == uid(4)


def test_saved_cohort_with_findings_counts_and_freezes_the_same_instances(filled: Hub) -> None:
    _post_reports(filled)
    h = filled.auth("researcher")
    r = filled.client.post("/api/v1/cohorts", json={"name": "ptx-dry", "query": PTX_NOT_EFFUSION}, headers=h)
    assert r.status_code == 201, r.text
    shown = filled.client.get("/api/v1/cohorts/ptx-dry", headers=h).json()
    assert shown["matches"] == 4
    assert shown["query"][0] == {"kind": "finding", "code": "pneumothorax", "status": "present"}
    v = filled.client.post("/api/v1/datasets", json={"name": "ptx", "cohort": "ptx-dry"}, headers=h).json()
    assert v["file_count"] == 4
    files = filled.client.get(f"/api/v1/datasets/{v['id']}/manifest", headers=h).text.splitlines()[1:]
    assert {json.loads(line)["study_uid"] for line in files} == {uid(0), uid(4)}


def test_findings_of_another_project_never_count_and_grants_are_checked(filled: Hub) -> None:
    _post_reports(filled)
    brain = [_report(6, "Pneumothorax.")]
    r = filled.client.post("/api/v1/reports", content=json.dumps(brain), headers=filled.auth("site_c"))
    assert r.status_code == 201, r.text
    ptx = [{"kind": "finding", "code": "pneumothorax", "status": "present"}]
    assert _studies(_preview(filled, ptx).json()) == {uid(0), uid(1), uid(4)}
    assert _studies(_preview(filled, ptx, who="researcher_brain").json()) == {uid(6)}
    refused = _preview(filled, ptx, who="researcher_brain", projects=["lung"])
    assert refused.status_code == 403
    assert filled.client.post("/api/v1/cohorts/preview", json={"query": ptx}).status_code == 401


@pytest.mark.parametrize(
    "query",
    [
        [{"kind": "finding", "code": "unicorn", "status": "present"}],
        [{"kind": "finding", "code": "pneumothorax", "status": "maybe"}],
        [{"kind": "finding", "code": "pneumothorax", "modality": "CT"}],
        [{"kind": "finding", "status": "present"}],
        [{"kind": "finding", "code": "pneumothorax", "negate": "yes"}],
        [{"kind": "report", "code": "pneumothorax"}],
    ],
)
def test_bad_finding_terms_are_400_problems(filled: Hub, query: Any) -> None:
    r = _preview(filled, query)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_where_text_becomes_terms() -> None:
    assert parse_where("pneumothorax=present AND NOT pleural_effusion=present and modality=CT AND age_min=40") == [
        {"kind": "finding", "code": "pneumothorax", "status": "present"},
        {"kind": "finding", "code": "pleural_effusion", "status": "present", "negate": True},
        {"kind": "image", "modality": "CT"},
        {"kind": "image", "age_min": 40},
    ]
    for bad in ("pneumothorax", "=present", "age_min=old", "a=b AND"):
        with pytest.raises(InvalidInput):
            parse_where(bad)
