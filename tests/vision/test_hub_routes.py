"""The hub's inference and models routes: roles, audit, keep=false by default, problem+json on bad input."""

from __future__ import annotations

import json

from medcloud.vision.synth import Smear

from .conftest import VisionHub, png_bytes


def _audit_rows(hub: VisionHub, action: str) -> list[dict[str, object]]:
    return hub.state.catalog.audit.page(0, 1000, action=action)


def test_clinician_gets_boxes_and_it_is_audited(hub: VisionHub, smear: Smear) -> None:
    r = hub.client.post("/api/v1/inference", content=png_bytes(smear), headers=hub.auth("clinician"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["synthetic_model"] is True and body["kept"] is False
    assert body["detections"] and body["counts"][0]["code"] == "s_aureus"
    assert body["counts"][0]["ja"] == "黄色ブドウ球菌"
    x0, y0, x1, y1 = body["detections"][0]["box"]
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 640
    rows = _audit_rows(hub, "inference.run")
    assert len(rows) == 1 and rows[0]["outcome"] == "ok"
    assert str(rows[0]["resource"]).startswith("model/gram-stain/")
    detail = rows[0]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert detail["kept"] is None and detail["counts"]["s_aureus"] >= 1
    # Nothing was kept: the blob store holds nothing.
    assert hub.state.blobs.count() == 0


def test_keep_true_stores_the_image(hub: VisionHub, smear: Smear) -> None:
    data = png_bytes(smear)
    r = hub.client.post(
        "/api/v1/inference?keep=true", files={"image": ("s.png", data, "image/png")}, headers=hub.auth("clinician")
    )
    assert r.status_code == 200, r.text
    kept = r.json()["kept_blob"]
    assert hub.state.blobs.exists(kept["sha256"]) and kept["bytes"] == len(data)


def test_refusals(hub: VisionHub, smear: Smear) -> None:
    data = png_bytes(smear)
    r = hub.client.post("/api/v1/inference", content=data)
    assert r.status_code == 401 and r.headers["content-type"].startswith("application/problem+json")
    for role in ("researcher", "site", "auditor", "admin"):
        assert hub.client.post("/api/v1/inference", content=data, headers=hub.auth(role)).status_code == 403, role
    r = hub.client.post("/api/v1/inference", content=b"%PDF-1.4 nope", headers=hub.auth("clinician"))
    assert r.status_code == 415
    r = hub.client.post("/api/v1/inference", content=b"", headers=hub.auth("clinician"))
    assert r.status_code == 400
    refused = [e for e in _audit_rows(hub, "inference.run") if e["outcome"] != "ok"]
    assert len(refused) >= 3


def test_models_listing(hub: VisionHub) -> None:
    assert hub.client.get("/api/v1/models").status_code == 401
    assert hub.client.get("/api/v1/models", headers=hub.auth("site")).status_code == 403
    r = hub.client.get("/api/v1/models", headers=hub.auth("clinician"))
    assert r.status_code == 200
    models = r.json()["models"]
    assert models and models[0]["synthetic"] is True and len(models[0]["labels"]) == 17
    m = models[0]
    assert {"per_class", "per_site"} <= set(m["metrics"])
    card = hub.client.get(f"/api/v1/models/{m['name']}/{m['version']}", headers=hub.auth("researcher")).json()
    assert card["sha256"] == card["files"]["detector.onnx"]["sha256"]
    assert any(not s["seen_in_training"] for s in card["sites"].values())


def test_page_is_served_under_csp(hub: VisionHub) -> None:
    r = hub.client.get("/")
    assert r.status_code == 200 and "script-src 'self'" in r.headers["content-security-policy"]
    assert "<script>" not in r.text and "style=" not in r.text
    assert hub.client.get("/static/app.js").status_code == 200


def test_models_and_answers_carry_the_cards_robustness_flag(hub: VisionHub, smear: Smear) -> None:
    from medcloud.vision.registry import resolve
    from medcloud.vision.robustness import card_robustness

    listed = hub.client.get("/api/v1/models", headers=hub.auth("clinician")).json()["models"][0]
    expected = card_robustness(resolve(None, listed["name"], listed["version"]).card)
    assert list(listed)[:2] == ["headline", "robustness_warning"]  # the worst never-seen site leads
    assert listed["robustness_warning"] == expected["robustness_warning"]
    assert listed["headline"]["worst_unseen_site"] == expected["headline"]["worst_unseen_site"]
    card = hub.client.get(f"/api/v1/models/{listed['name']}/{listed['version']}", headers=hub.auth("clinician"))
    assert list(card.json())[:2] == ["headline", "robustness_warning"] and card.json()["files"]
    r = hub.client.post("/api/v1/inference", content=png_bytes(smear), headers=hub.auth("clinician"))
    assert r.status_code == 200
    assert r.json()["model"]["robustness_warning"] == listed["robustness_warning"]


def test_yeast_only_smear_answers_yeast_without_gram_verdict(hub: VisionHub) -> None:
    from medcloud.vision.synth import render_smear

    yeast = render_smear(777, "site-a", (640, 640), 1.0, species=["candida"] * 4)
    r = hub.client.post("/api/v1/inference", content=png_bytes(yeast), headers=hub.auth("clinician"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["verdict"] is None, "yeast is not a bacterium: no Gram verdict"
    assert body["yeast"]["en"] == "yeast seen (Candida)" and body["yeast"]["ja"] == "酵母様真菌 (カンジダ)"
    assert body["yeast"]["count"] >= 1
    rows = _audit_rows(hub, "inference.run")
    detail = rows[-1]["detail"]
    detail = json.loads(detail) if isinstance(detail, str) else detail
    assert detail["yeast"] is True and detail["verdict"] is None
