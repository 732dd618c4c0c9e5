"""The slide routes against a hub (TestClient) holding the real SVS and its DICOM WSI conversion."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import tiffslide
from PIL import Image

from tests.wsi.conftest import SlideHub

wsidicom = pytest.importorskip("wsidicom")


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _get(s: SlideHub, path: str, who: str = "researcher") -> tuple[int, bytes, str]:
    r = s.hub.client.get(path, headers=s.hub.auth(who))
    return r.status_code, r.content, r.headers.get("content-type", "")


def test_list_and_info(slides: SlideHub) -> None:
    h = slides.hub
    r = h.client.get("/api/v1/slides", headers=h.auth("researcher"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["total"] == 2
    by_id = {s["id"]: s for s in body["slides"]}
    assert set(by_id) == {slides.svs_id, slides.dcm_id}
    svs, dcm = by_id[slides.svs_id], by_id[slides.dcm_id]
    assert svs["kind"] == "svs" and dcm["kind"] == "dicom-wsi"
    for info in (svs, dcm):
        assert (info["width"], info["height"]) == (2220, 2967)
        assert info["mpp"] == pytest.approx([0.499, 0.499])
        assert info["tile_size"] == 512 and info["overlap"] == 0 and info["format"] == "jpeg"
        assert info["project"] == "lung"
        assert info["dzi_url"] == f"/api/v1/slides/{info['id']}/dzi/"
    assert svs["study_uid"] is None and dcm["study_uid"] == slides.study_uid
    assert len(svs["levels"]) == 1
    assert [(lv["width"], lv["height"]) for lv in dcm["levels"]] == [
        (2220, 2967), (1110, 1484), (555, 742), (278, 371), (139, 186)]  # fmt: skip
    assert dcm["levels"][1]["downsample"] == pytest.approx(2.0, rel=0.01)
    one = h.client.get(f"/api/v1/slides/{slides.dcm_id}", headers=h.auth("researcher")).json()
    assert one == dcm
    # Paging runs across both kinds.
    page = h.client.get("/api/v1/slides?limit=1&offset=1", headers=h.auth("researcher")).json()
    assert page["total"] == 2 and [s["id"] for s in page["slides"]] == [slides.dcm_id]


def test_full_resolution_tiles_equal_the_libraries_reads(slides: SlideHub, svs_bytes: bytes, wsi_files: list[Path]) -> None:
    base = "/api/v1/slides"
    svs = tiffslide.TiffSlide(io.BytesIO(svs_bytes))
    wsi = wsidicom.WsiDicom.open(wsi_files)
    # DeepZoom max level is 12 (2**12 >= 2967); tile (1, 2) is full 512 x 512, (4, 5) the clipped corner.
    for col, row in ((1, 2), (4, 5)):
        x, y = col * 512, row * 512
        w, h = min(512, 2220 - x), min(512, 2967 - y)
        want_svs = np.asarray(svs.read_region((x, y), 0, (w, h), as_array=True))[..., :3]
        status, data, ctype = _get(slides, f"{base}/{slides.svs_id}/dzi/12/{col}_{row}.png")
        assert status == 200 and ctype == "image/png"
        assert np.array_equal(_png(data), want_svs)
        want_dcm = np.asarray(wsi.read_region((x, y), 0, (w, h)).convert("RGB"))
        status, data, _ = _get(slides, f"{base}/{slides.dcm_id}/dzi/12/{col}_{row}.png")
        assert status == 200 and np.array_equal(_png(data), want_dcm)
    status, data, ctype = _get(slides, f"{base}/{slides.dcm_id}/dzi/12/1_2.jpeg")
    assert status == 200 and ctype == "image/jpeg"
    jpeg = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    want = np.asarray(wsi.read_region((512, 1024), 0, (512, 512)).convert("RGB")).astype(int)
    assert jpeg.shape == (512, 512, 3) and np.abs(jpeg - want).mean() < 4  # lossy, yet close


def test_zoomed_out_tiles_come_from_the_matching_native_level(slides: SlideHub, wsi_files: list[Path]) -> None:
    wsi = wsidicom.WsiDicom.open(wsi_files)
    # DeepZoom level 11 is 1110 x 1484: exactly native level 1 (downsample 2) of the DICOM pyramid.
    status, data, _ = _get(slides, f"/api/v1/slides/{slides.dcm_id}/dzi/11/1_1.png")
    assert status == 200
    want = np.asarray(wsi.read_region((512, 512), 1, (512, 512)).convert("RGB"))
    assert np.array_equal(_png(data), want)
    # The same through the native-tile route, and DeepZoom level 0 is one pixel.
    status, data, _ = _get(slides, f"/api/v1/slides/{slides.dcm_id}/levels/1/tiles/1/1?format=png")
    assert status == 200 and np.array_equal(_png(data), want)
    status, data, _ = _get(slides, f"/api/v1/slides/{slides.dcm_id}/levels/4/tiles/0/0")
    assert status == 200 and Image.open(io.BytesIO(data)).size == (139, 186)
    for slide in (slides.svs_id, slides.dcm_id):
        status, data, _ = _get(slides, f"/api/v1/slides/{slide}/dzi/0/0_0.jpeg")
        assert status == 200 and Image.open(io.BytesIO(data)).size == (1, 1)
        status, data, _ = _get(slides, f"/api/v1/slides/{slide}/dzi/9/0_0.jpeg")
        assert status == 200 and Image.open(io.BytesIO(data)).size == (278, 371)


def test_thumbnail(slides: SlideHub) -> None:
    for slide in (slides.svs_id, slides.dcm_id):
        status, data, ctype = _get(slides, f"/api/v1/slides/{slide}/thumbnail?max=256")
        assert status == 200 and ctype == "image/jpeg"
        w, h = Image.open(io.BytesIO(data)).size
        assert h == 256 and 189 <= w <= 193  # 2220 x 2967 kept in proportion
        status, data, _ = _get(slides, f"/api/v1/slides/{slide}/thumbnail")
        assert status == 200 and max(Image.open(io.BytesIO(data)).size) == 256


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/slides/{dcm}/dzi/13/0_0.jpeg", 404),  # past the max level
        ("/api/v1/slides/{dcm}/dzi/12/5_0.jpeg", 404),  # 2220 px wide: columns 0..4
        ("/api/v1/slides/{dcm}/dzi/12/0_6.jpeg", 404),
        ("/api/v1/slides/{dcm}/dzi/-1/0_0.jpeg", 404),
        ("/api/v1/slides/{dcm}/dzi/12/0-0.jpeg", 400),
        ("/api/v1/slides/{dcm}/dzi/12/0_0.gif", 400),
        ("/api/v1/slides/{dcm}/dzi/x/0_0.jpeg", 400),
        ("/api/v1/slides/{dcm}/levels/5/tiles/0/0", 404),
        ("/api/v1/slides/{dcm}/levels/0/tiles/5/0", 404),
        ("/api/v1/slides/{dcm}/levels/0/tiles/0/-1", 404),
        ("/api/v1/slides/{dcm}/levels/0/tiles/0/0?format=gif", 400),
        ("/api/v1/slides/{svs}/levels/1/tiles/0/0", 404),
        ("/api/v1/slides/{svs}/thumbnail?max=0", 400),
        ("/api/v1/slides/{svs}/thumbnail?max=99999", 400),
        ("/api/v1/slides/svs-999999", 404),
        ("/api/v1/slides/dcm-1.2.3/dzi/0/0_0.jpeg", 404),
        ("/api/v1/slides/nonsense", 400),
        ("/api/v1/slides/svs-01", 400),
        ("/api/v1/slides/dcm-1..2/thumbnail", 400),
        ("/api/v1/slides?limit=0", 400),
    ],
)
def test_bad_requests_are_4xx(slides: SlideHub, path: str, status: int) -> None:
    url = path.format(dcm=slides.dcm_id, svs=slides.svs_id)
    r = slides.hub.client.get(url, headers=slides.hub.auth("researcher"))
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")


def test_other_projects_and_roles_are_refused(slides: SlideHub) -> None:
    h = slides.hub
    r = h.client.get("/api/v1/slides", headers=h.auth("researcher_brain"))
    assert r.status_code == 200 and r.json() == {"slides": [], "total": 0, "limit": 50, "offset": 0}
    assert h.client.get("/api/v1/slides?project=brain", headers=h.auth("researcher")).status_code == 403
    for slide in (slides.svs_id, slides.dcm_id):
        for suffix in ("", "/thumbnail", "/dzi/12/0_0.jpeg", "/levels/0/tiles/0/0"):
            url = f"/api/v1/slides/{slide}{suffix}"
            assert h.client.get(url, headers=h.auth("researcher_brain")).status_code == 404, url
            assert h.client.get(url).status_code == 401, url
            assert h.client.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401, url
        # A site token uploads; it reads nothing.
        assert h.client.get(f"/api/v1/slides/{slide}/dzi/12/0_0.jpeg", headers=h.auth("site_a")).status_code == 403
    refused = [e for e in h.state.catalog.audit.page(limit=1000) if e["action"] == "slide.tiles" and e["outcome"] != "ok"]
    assert len(refused) >= 4 and all(e["resource"].startswith("slide/") for e in refused)


def test_audit_one_event_per_open_and_thumbnail_and_one_per_tile_window(fresh_slides: SlideHub) -> None:
    slides = fresh_slides
    h = slides.hub
    before = h.state.catalog.audit.head_seq()
    assert _get(slides, f"/api/v1/slides/{slides.dcm_id}")[0] == 200
    for col in range(4):
        assert _get(slides, f"/api/v1/slides/{slides.dcm_id}/dzi/12/{col}_0.jpeg")[0] == 200
    assert _get(slides, f"/api/v1/slides/{slides.dcm_id}/levels/0/tiles/0/0")[0] == 200
    assert _get(slides, f"/api/v1/slides/{slides.dcm_id}/thumbnail")[0] == 200
    events = [e for e in h.state.catalog.audit.page(after_seq=before, limit=100)]
    got = [(e["action"], e["resource"], e["outcome"]) for e in events]
    res = f"slide/{slides.dcm_id}"
    assert got == [("slide.open", res, "ok"), ("slide.tiles", res, "ok"), ("slide.thumbnail", res, "ok")]
    assert events[1]["subject"] == events[0]["subject"] != "anonymous"
