"""Reports at the hub: ingest with findings, idempotence, refusals, scoped reads, the findings filter."""

from __future__ import annotations

import json
from typing import Any

import pytest

from medcloud.deid import SiteKey
from medcloud.deid.keys import Pseudonymizer
from medcloud.deid.reports import Report, ReportDeidentifier

from .conftest import Hub, deidentified_dicom

KEY = SiteKey(bytes(range(32)))
PSEUDO = Pseudonymizer(KEY)


def _report(original_uid: str, text: str, patient_id: str = "P1", day: str | None = "2024-04-01") -> dict[str, Any]:
    """A report made the way a gateway makes it (same key, same cleaner)."""
    deid = ReportDeidentifier(KEY)
    return deid.deidentify(Report(patient_id=patient_id, text=text, study_uid=original_uid, date=day)).to_json()


def _post(hub: Hub, reports: list[dict[str, Any]], who: str = "site_a", **headers: str) -> Any:
    h = hub.auth(who)
    h.update(headers)
    return hub.client.post("/api/v1/reports", content=json.dumps(reports), headers=h)


def _audit(hub: Hub, action: str) -> list[dict[str, Any]]:
    r = hub.client.get("/api/v1/audit", params={"action": action, "limit": 1000}, headers=hub.auth("auditor"))
    assert r.status_code == 200, r.text
    items = list(r.json()["items"])
    for e in items:
        if isinstance(e["detail"], str):
            e["detail"] = json.loads(e["detail"])
    return items


def _upload_study(hub: Hub, original_uid: str, patient_id: str = "P1", who: str = "site_a") -> str:
    uid = PSEUDO.uid(original_uid)
    data = deidentified_dicom(study_uid=uid, patient=PSEUDO.patient(patient_id))
    r = hub.client.post("/api/v1/ingest", content=data, headers=hub.auth(who))
    assert r.status_code == 201, r.text
    return uid


def test_reports_are_stored_with_findings_once_and_audited(hub: Hub) -> None:
    uid = _upload_study(hub, "1.2.3.4")
    report = _report("1.2.3.4", "右上葉に結節を認める。気胸なし。胸水疑い。山田太郎様 03-1234-5678")
    assert report["study_uid"] == uid
    r = _post(hub, [report])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stored"] == 1 and body["duplicate"] == 0
    assert {(f["code"], f["status"]) for f in body["items"][0]["findings"]} == {
        ("nodule", "present"),
        ("pneumothorax", "absent"),
        ("pleural_effusion", "uncertain"),
    }
    again = _post(hub, [report, report])
    assert again.status_code == 200, again.text
    assert again.json()["duplicate"] == 2 and again.json()["stored"] == 0
    assert {i["id"] for i in again.json()["items"]} == {body["items"][0]["id"]}

    got = hub.client.get(f"/api/v1/studies/{uid}/reports", headers=hub.auth("researcher"))
    assert got.status_code == 200, got.text
    (item,) = got.json()["items"]
    assert item["text"] == report["text"] and item["patient"] == report["patient"] and item["date"] == report["date"]
    assert "山田" not in item["text"] and "1234-5678" not in item["text"]
    assert {"code": "nodule", "status": "present"} in item["findings"]

    events = _audit(hub, "report.ingest")
    assert [e["detail"]["stored"] for e in events] == [1, 0]
    assert _audit(hub, "report.read")[-1]["resource"] == f"study/{uid}/reports"


def test_a_report_before_its_images_links_when_they_arrive(hub: Hub) -> None:
    report = _report("1.2.3.5", "No pneumothorax.")
    assert _post(hub, [report]).status_code == 201
    uid = _upload_study(hub, "1.2.3.5")
    got = hub.client.get(f"/api/v1/studies/{uid}/reports", headers=hub.auth("researcher"))
    assert got.json()["items"][0]["findings"] == [{"code": "pneumothorax", "status": "absent"}]


def test_researcher_of_another_project_sees_no_reports(hub: Hub) -> None:
    uid = _upload_study(hub, "1.2.3.6")
    assert _post(hub, [_report("1.2.3.6", "気胸あり。")]).status_code == 201
    r = hub.client.get(f"/api/v1/studies/{uid}/reports", headers=hub.auth("researcher_brain"))
    assert r.status_code == 404, r.text
    assert "気胸" not in r.text
    refused = hub.client.get(f"/api/v1/studies/{uid}/reports", headers=hub.auth("clinician"))
    assert refused.status_code == 403
    assert hub.client.get(f"/api/v1/studies/{uid}/reports").status_code == 401
    # The refused reads are audited too.
    assert any(e["outcome"].startswith("refused:404") for e in _audit(hub, "report.read"))


def test_only_site_tokens_send_reports(hub: Hub) -> None:
    r = _post(hub, [_report("1.2.3.7", "結節なし")], who="researcher")
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"study_uid": "1.2.840.113619.2.55.3.604688"}, "not a remapped UID"),
        ({"patient": "YAMADA^TARO"}, "not a site pseudonym"),
        ({"text": "結節なし。連絡先 03-1234-5678"}, "still holds identifiers"),
        ({"text": "No nodule. yamada@example.jp"}, "email"),
        ({"text": ""}, "text"),
        ({"date": "April"}, "date"),
        ({"extra": "field"}, "extra"),
        ({"text": "結節なし\x00"}, "control characters"),
    ],
)
def test_reports_that_do_not_look_deidentified_are_refused_whole(
    hub: Hub, change: dict[str, str], message: str
) -> None:
    good = _report("1.2.3.8", "結節なし")
    bad = {**good, **change}
    r = _post(hub, [good, bad])
    assert r.status_code == 400, r.text
    assert message in r.json()["detail"]
    assert "03-1234-5678" not in r.text and "yamada@" not in r.text  # never echoed
    # Nothing of the batch was stored, and the refusal is audited.
    uid = good["study_uid"]
    assert hub.client.get(f"/api/v1/studies/{uid}/reports", headers=hub.auth("researcher")).status_code == 404
    assert _audit(hub, "report.ingest")[-1]["outcome"] == "refused:400:invalid-input"


def test_malformed_and_oversized_bodies_get_4xx(hub: Hub) -> None:
    h = hub.auth("site_a")
    assert hub.client.post("/api/v1/reports", content=b"{not json", headers=h).status_code == 400
    assert hub.client.post("/api/v1/reports", content=b"[]", headers=h).status_code == 400
    assert hub.client.post("/api/v1/reports", content=b'{"study_uid": "2.25.1"}', headers=h).status_code == 400
    big = [_report("1.2.3.9", "結節なし")] * 1001
    assert _post(hub, big).status_code == 400
    huge = b"[" + b" " * (17 * 1024 * 1024) + b"]"
    assert hub.client.post("/api/v1/reports", content=huge, headers=h).status_code == 413


def test_a_report_clashing_with_the_study_owner_is_rejected_others_stored(hub: Hub) -> None:
    _upload_study(hub, "1.2.4.1", patient_id="P1")
    wrong_patient = _report("1.2.4.1", "気胸あり", patient_id="P2")
    fine = _report("1.2.4.2", "気胸あり")
    r = _post(hub, [wrong_patient, fine])
    assert r.status_code == 201, r.text
    items = r.json()["items"]
    assert items[0]["status"] == "rejected" and "another patient" in items[0]["reason"]
    assert items[1]["status"] == "stored"
    # Site B (project lung too) may not attach reports to site A's study.
    other = _report("1.2.4.1", "結節あり", patient_id="P1")
    r = _post(hub, [other], who="site_b", **{"X-Medcloud-Project": "lung"})
    assert r.status_code == 200 and r.json()["items"][0]["status"] == "rejected"
    # A project the site token is not granted is refused.
    assert _post(hub, [fine], **{"X-Medcloud-Project": "brain"}).status_code == 403


def test_study_search_by_finding(hub: Hub) -> None:
    a = _upload_study(hub, "1.2.5.1", patient_id="P1")
    b = _upload_study(hub, "1.2.5.2", patient_id="P2")
    c = _upload_study(hub, "1.2.5.3", patient_id="P3")
    reports = [
        _report("1.2.5.1", "右気胸を認める。胸水なし。", patient_id="P1"),
        _report("1.2.5.2", "Right pneumothorax with pleural effusion.", patient_id="P2"),
        _report("1.2.5.3", "No pneumothorax.", patient_id="P3"),
    ]
    assert _post(hub, reports).status_code == 201

    def search(*finding: str, who: str = "researcher") -> set[str]:
        r = hub.client.get("/api/v1/studies", params={"finding": list(finding)}, headers=hub.auth(who))
        assert r.status_code == 200, r.text
        return {s["study_uid"] for s in r.json()["items"]}

    assert search("pneumothorax:present") == {a, b}
    assert search("pneumothorax") == {a, b}  # status defaults to present
    assert search("pneumothorax:absent") == {c}
    assert search("pneumothorax:present", "-pleural_effusion:present") == {a}
    assert search("pneumothorax:present", "pleural_effusion:present") == {b}
    assert search("pneumothorax:present", who="researcher_brain") == set()
    inst = hub.client.get("/api/v1/instances", params={"finding": "pleural_effusion"}, headers=hub.auth("researcher"))
    assert {i["study_uid"] for i in inst.json()["items"]} == {b}
    for bad in ("unicorn:present", "pneumothorax:maybe"):
        r = hub.client.get("/api/v1/studies", params={"finding": bad}, headers=hub.auth("researcher"))
        assert r.status_code == 400 and "finding" in r.json()["detail"]


def test_reports_on_postgresql(pg_hub: Hub) -> None:
    uid = _upload_study(pg_hub, "1.2.6.1")
    report = _report("1.2.6.1", "縦隔リンパ節腫大あり。")
    assert _post(pg_hub, [report]).status_code == 201
    assert _post(pg_hub, [report]).json()["duplicate"] == 1
    r = pg_hub.client.get("/api/v1/studies", params={"finding": "lymphadenopathy"}, headers=pg_hub.auth("researcher"))
    assert [s["study_uid"] for s in r.json()["items"]] == [uid]


def test_nul_in_report_text_is_a_400_not_a_500_on_postgresql(pg_hub: Hub) -> None:
    # PostgreSQL cannot store NUL in text: the insert failed with a 500 before the hub refused it.
    report = {**_report("1.2.6.2", "結節なし"), "text": "結節なし\x00"}
    r = _post(pg_hub, [report])
    assert r.status_code == 400, r.text
    assert "control characters" in r.json()["detail"]


def test_too_many_finding_filters_are_refused(hub: Hub) -> None:
    r = hub.client.get("/api/v1/studies", params={"finding": ["nodule"] * 21}, headers=hub.auth("researcher"))
    assert r.status_code == 400
