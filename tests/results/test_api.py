"""POST /api/v1/results on a real hub: stored beside the source study, found by the catalog and DICOMweb, audited;
refused for another project, an unknown source, a box outside the image, a mask of the wrong size."""

from __future__ import annotations

import base64
import io
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from medcloud.dicomweb.media import parse_media_type
from medcloud.dicomweb.multipart import split_parts
from tests.results.conftest import BRAIN_STUDY, SERIES, STUDY, Seeded

SOURCES = [f"{SERIES}.{k}" for k in range(1, 5)]


def _boxes(**over: Any) -> dict[str, Any]:
    body = {
        "kind": "boxes",
        "sources": [SOURCES[1]],
        "algorithm": "nodule-detector",
        "algorithm_version": "1.0.0",
        "boxes": [{"x": 10, "y": 20, "w": 30, "h": 40, "label": "nodule", "score": 0.87,
                   "code": {"value": "27925004", "scheme": "SCT", "meaning": "Nodule"}}],
    }  # fmt: skip
    return {**body, **over}


def _png(mask: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _instances(s: Seeded, study: str, who: str = "researcher") -> dict[str, dict[str, Any]]:
    r = s.hub.client.get(f"/api/v1/instances?study={study}", headers=s.hub.auth(who))
    return {i["sop_uid"]: i for i in r.json()["items"]}


def _events(s: Seeded, action: str) -> list[dict[str, Any]]:
    r = s.hub.client.get(f"/api/v1/audit?limit=1000&action={action}", headers=s.hub.auth("auditor"))
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _retrieve(s: Seeded, url: str) -> list[bytes]:
    r = s.hub.client.get(
        url, headers={**s.hub.auth("researcher"), "Accept": 'multipart/related; type="application/dicom"'}
    )
    assert r.status_code == 200, r.text
    ctype = parse_media_type(r.headers["content-type"])
    return [bytes(p.data) for p in split_parts(r.content, ctype.params["boundary"].encode())]


def test_boxes_become_an_sr_in_the_source_study(seeded: Seeded) -> None:
    s = seeded
    r = s.hub.client.post("/api/v1/results", json=_boxes(), headers=s.hub.auth("researcher"))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["study_uid"] == STUDY and out["modality"] == "SR" and out["project"] == "lung"
    assert out["series_uid"] != SERIES and out["sources"] == [SOURCES[1]]
    # The catalog: the study now has an SR series with one instance, whose blob is the reply's.
    study = s.hub.client.get(f"/api/v1/studies/{STUDY}", headers=s.hub.auth("researcher")).json()
    assert {x["modality"]: x["instance_count"] for x in study["series"]} == {"CT": 4, "SR": 1}
    assert _instances(s, STUDY)[out["sop_uid"]]["sha256"] == out["sha256"]
    # QIDO by modality finds it; a CT filter does not.
    q = s.hub.client.get(f"/dicom-web/studies/{STUDY}/series?Modality=SR", headers=s.hub.auth("researcher"))
    assert q.status_code == 200
    assert [x["0020000E"]["Value"][0] for x in q.json()] == [out["series_uid"]]
    q = s.hub.client.get(f"/dicom-web/studies/{STUDY}/series?Modality=CT", headers=s.hub.auth("researcher"))
    assert [x["0020000E"]["Value"][0] for x in q.json()] == [SERIES]
    # WADO retrieve gives the SR back; its box and codes are the ones sent.
    (data,) = _retrieve(s, f"/dicom-web/studies/{STUDY}/series/{out['series_uid']}/instances/{out['sop_uid']}")
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(data)))
    (g,) = sr.content.get_planar_roi_measurement_groups()
    np.testing.assert_allclose(g.roi.value, [[10, 20], [40, 20], [40, 60], [10, 60], [10, 20]])
    assert g.finding_type.value == "27925004"
    assert g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == SOURCES[1]
    assert g.get_measurements()[0].value == pytest.approx(0.87)
    # Audited twice: the ingest of the new instance and the results act, both by the researcher.
    (ev,) = _events(s, "results.create")
    assert ev["outcome"] == "stored" and ev["resource"] == f"instance/{out['sop_uid']}"
    assert ev["subject"].startswith("researcher:")
    ingest = [e for e in _events(s, "ingest") if e["resource"] == f"instance/{out['sop_uid']}"]
    assert len(ingest) == 1 and ingest[0]["subject"] == ev["subject"]


def test_mask_becomes_a_seg_with_the_pixels_sent(seeded: Seeded) -> None:
    s = seeded
    masks = [np.zeros((128, 128), bool) for _ in SOURCES]
    masks[2][40:60, 50:90] = True
    body = {"kind": "mask", "sources": SOURCES, "algorithm": "seg-net", "algorithm_version": "2", "label": "lesion",
            "masks": [{"sop_uid": u, "png": _png(m)} for u, m in zip(SOURCES, masks, strict=True)]}  # fmt: skip
    r = s.hub.client.post("/api/v1/results", json=body, headers=s.hub.auth("researcher"))
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["modality"] == "SEG"
    q = s.hub.client.get(f"/dicom-web/studies/{STUDY}/series?Modality=SEG", headers=s.hub.auth("researcher"))
    assert [x["0020000E"]["Value"][0] for x in q.json()] == [out["series_uid"]]
    (data,) = _retrieve(s, f"/dicom-web/studies/{STUDY}/series/{out['series_uid']}")
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(data)))
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=SOURCES, segment_numbers=[1])
    for k in range(4):
        np.testing.assert_array_equal(px[k, :, :, 0].astype(bool), masks[k])


def test_refusals_store_nothing(seeded: Seeded) -> None:
    s = seeded
    c = s.hub.client
    before = set(_instances(s, STUDY))
    brain_uid = str(s.brain[0].SOPInstanceUID)
    cases = [
        # Another project's source is not found for this token (as in every catalog read).
        ("researcher", _boxes(sources=[brain_uid]), 404),
        ("researcher", _boxes(sources=["2.25.999999"]), 404),
        ("researcher", _boxes(boxes=[{"x": 100, "y": 0, "w": 40, "h": 10, "label": "nodule"}]), 400),
        ("researcher", _boxes(boxes=[{"x": -1, "y": 0, "w": 4, "h": 10, "label": "nodule"}]), 400),
        ("researcher", _boxes(boxes=[]), 400),
        ("researcher", _boxes(sources=SOURCES[:2]), 400),  # two sources, the box names neither
        ("researcher", {**_boxes(), "kind": "mask", "boxes": [],
                        "masks": [{"sop_uid": SOURCES[1], "png": _png(np.ones((64, 64), bool))}]}, 400),
        ("researcher", {**_boxes(), "kind": "mask", "boxes": [], "masks": [{"png": "%%%"}]}, 400),
        ("researcher", {**_boxes(), "kind": "mask", "boxes": [],
                        "masks": [{"sop_uid": SOURCES[0], "png": _png(np.ones((128, 128), bool))}]}, 400),
        ("researcher", _boxes(kind="polygons"), 400),
        ("site_a", _boxes(), 403),  # a site uploads images; it does not write results
        ("clinician", _boxes(), 403),
    ]  # fmt: skip
    for who, body, status in cases:
        r = c.post("/api/v1/results", json=body, headers=s.hub.auth(who))
        assert r.status_code == status, (who, body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = c.post("/api/v1/results", json=_boxes())
    assert r.status_code == 401
    assert set(_instances(s, STUDY)) == before
    assert len(_instances(s, BRAIN_STUDY, "researcher_brain")) == 1
    # Every refusal is audited: as results.create once the route runs, by method and path before it.
    audited = _events(s, "results.create") + _events(s, "POST /api/v1/results")
    assert len([e for e in audited if e["outcome"].startswith("refused")]) == len(cases) + 1
    # The brain researcher may write results on its own project's source.
    r = c.post("/api/v1/results", json=_boxes(sources=[brain_uid]), headers=s.hub.auth("researcher_brain"))
    assert r.status_code == 201, r.text
    assert r.json()["study_uid"] == BRAIN_STUDY and r.json()["project"] == "brain"
