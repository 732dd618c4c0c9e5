"""WADO-RS rendered and thumbnail resources: known pixels through Modality LUT, window, MONOCHROME1, colour,
frames, viewport; errors (400/404/405/406), tokens and projects, audit. Files are synthetic (render_builders)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from medcloud.dicomweb.media import parse_media_type
from medcloud.dicomweb.multipart import split_parts
from tests.dicomweb import render_builders as rb
from tests.hub.conftest import Hub, _make_hub

STUDY, CT_SERIES, SCOUT_SERIES = "2.25.7001", "2.25.7001.2", "2.25.7001.1"
MONO1_SERIES, RGB_SERIES, MULTI_SERIES, SIGNED_SERIES = "2.25.7001.3", "2.25.7001.4", "2.25.7001.5", "2.25.7001.6"
SR_STUDY, SR_SERIES = "2.25.7002", "2.25.7002.1"
BRAIN_STUDY, BRAIN_SERIES = "2.25.7003", "2.25.7003.1"

# A CT ramp: stored 0..1020 along the columns, HU = 2 * stored - 1024, the file's window 40/400.
RAMP = np.tile((np.arange(256) * 4).astype(np.uint16), (64, 1))
RAMP_HU = RAMP.astype(np.float64) * 2 - 1024
MONO1 = np.tile(np.arange(256, dtype=np.uint8), (32, 1))
RGB = np.zeros((32, 48, 3), dtype=np.uint8)
RGB[:16, :24] = (255, 0, 0)
RGB[:16, 24:] = (0, 255, 0)
RGB[16:, :24] = (0, 0, 255)
RGB[16:, 24:] = (200, 100, 50)
MULTI = np.stack([np.full((16, 16), v, dtype=np.uint8) for v in (10, 100, 200)])
SIGNED = np.tile(np.linspace(-2048, 2047, 128).astype(np.int16), (8, 1))
EXACT = "127.5,256,linear-exact"  # maps 8-bit v to round((v + 0.5) * 255 / 256): v itself


@dataclass
class World:
    hub: Hub
    sop: dict[str, list[str]] = field(default_factory=dict)  # series -> SOP UIDs in instance order

    def url(self, series: str, index: int = 0, study: str = STUDY) -> str:
        return f"/dicom-web/studies/{study}/series/{series}/instances/{self.sop[series][index]}"

    def get(self, path: str, who: str = "researcher", **headers: str) -> Any:
        return self.hub.client.get(path, headers={**self.hub.auth(who), **headers})


def _ingest(h: Hub, data: bytes, who: str = "site_a") -> str:
    import pydicom

    r = h.client.post("/api/v1/ingest", content=data, headers=h.auth(who))
    assert r.status_code == 201, r.text
    return str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for h in _make_hub(Path(tmp_path_factory.mktemp("render")), None):
        w = World(h)
        plan: list[tuple[str, bytes]] = [
            (SCOUT_SERIES, rb.image(STUDY, SCOUT_SERIES, np.full((32, 32), 7, np.uint8))),
            *[(CT_SERIES, rb.image(STUDY, CT_SERIES, RAMP + i, bits_stored=12, number=i + 1, RescaleSlope=2,
                                   RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)) for i in range(3)],
            (MONO1_SERIES, rb.image(STUDY, MONO1_SERIES, MONO1, photometric="MONOCHROME1")),
            (RGB_SERIES, rb.image(STUDY, RGB_SERIES, RGB, photometric="RGB")),
            (MULTI_SERIES, rb.image(STUDY, MULTI_SERIES, MULTI)),
            (SIGNED_SERIES, rb.image(STUDY, SIGNED_SERIES, SIGNED, bits_stored=12)),
            (SR_SERIES, rb.structured_report(SR_STUDY, SR_SERIES)),
        ]  # fmt: skip
        for series, data in plan:
            w.sop.setdefault(series, []).append(_ingest(h, data))
        w.sop[BRAIN_SERIES] = [_ingest(h, rb.image(BRAIN_STUDY, BRAIN_SERIES, MONO1), who="site_c")]
        yield w


def _png(r: Any) -> np.ndarray:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)))


def _parts(r: Any) -> list[tuple[dict[str, str], bytes]]:
    ctype = parse_media_type(r.headers["content-type"])
    assert ctype.essence == "multipart/related"
    return [(p.headers, bytes(p.data)) for p in split_parts(r.content, ctype.params["boundary"].encode())]


def _events(w: World, action: str) -> list[dict[str, Any]]:
    r = w.hub.client.get(f"/api/v1/audit?limit=1000&action={action}", headers=w.hub.auth("auditor"))
    items: list[dict[str, Any]] = r.json()["items"]
    for item in items:
        if isinstance(item.get("detail"), str):
            item["detail"] = json.loads(item["detail"])
    return items


def test_ct_ramp_through_rescale_and_window_png_exact(world: World) -> None:
    url = world.url(CT_SERIES) + "/rendered"
    # The window in the query, on Hounsfield units (after slope 2, intercept -1024).
    for function in ("linear", "linear-exact", "sigmoid"):
        got = _png(world.get(f"{url}?window=0,1000,{function}&accept=image/png"))
        assert got.shape == RAMP.shape and got.dtype == np.uint8
        assert np.array_equal(got, rb.window(RAMP_HU, 0, 1000, function)), function
    # Without one: the file's own window (40/400, linear).
    got = _png(world.get(url, Accept="image/png"))
    assert np.array_equal(got, rb.window(RAMP_HU, 40, 400, "linear"))
    # JPEG (the default) within a lossy tolerance of the same values.
    r = world.get(f"{url}?window=0,1000")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content[:2] == b"\xff\xd8"
    jpeg = np.asarray(Image.open(io.BytesIO(r.content)).convert("L")).astype(int)
    assert np.abs(jpeg - rb.window(RAMP_HU, 0, 1000).astype(int)).max() <= 6
    lower = world.get(f"{url}?window=0,1000&quality=10")
    assert lower.status_code == 200 and len(lower.content) < len(r.content)


def test_signed_pixels_and_the_robust_default_window(world: World) -> None:
    got = _png(world.get(world.url(SIGNED_SERIES) + "/rendered?accept=image/png"))
    # No window in the file: 0.5..99.5th percentile, so the darkest and brightest columns saturate, in order.
    assert got[0, 0] == 0 and got[0, -1] == 255
    assert np.all(np.diff(got[0].astype(int)) >= 0) and len(np.unique(got[0])) > 100
    got = _png(world.get(world.url(SIGNED_SERIES) + "/rendered?accept=image/png&window=0,4096,linear-exact"))
    assert np.array_equal(got, rb.window(SIGNED.astype(np.float64), 0, 4096))


def test_monochrome1_is_inverted(world: World) -> None:
    got = _png(world.get(world.url(MONO1_SERIES) + f"/rendered?window={EXACT}", Accept="image/png"))
    assert np.array_equal(got, 255 - MONO1)


def test_rgb_comes_out_as_stored(world: World) -> None:
    got = _png(world.get(world.url(RGB_SERIES) + "/rendered?accept=image/png"))
    assert got.shape == RGB.shape and np.array_equal(got, RGB)
    r = world.get(world.url(RGB_SERIES) + "/rendered")
    jpeg = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
    assert np.abs(jpeg[4:12, 4:20] - RGB[4:12, 4:20]).max() <= 12  # away from the chroma-subsampled edges


def test_frames_of_a_multiframe_image(world: World) -> None:
    base = world.url(MULTI_SERIES)
    for n, value in ((1, 10), (2, 100), (3, 200)):
        got = _png(world.get(f"{base}/frames/{n}/rendered?accept=image/png&window={EXACT}"))
        assert got.shape == (16, 16) and np.all(got == value)
    assert np.all(_png(world.get(f"{base}/rendered?accept=image/png&window={EXACT}")) == 10)  # instance: frame 1
    # A frame list as multipart/related, one part per frame, in the order asked.
    r = world.get(f"{base}/frames/3,1/rendered?window={EXACT}", Accept='multipart/related; type="image/png"')
    assert r.status_code == 200, r.text
    parts = _parts(r)
    assert [np.asarray(Image.open(io.BytesIO(d))).max() for _, d in parts] == [200, 10]
    assert parts[0][0]["content-type"] == "image/png" and parts[0][0]["content-location"].endswith("/frames/3/rendered")
    # Several frames cannot be one image/jpeg.
    assert world.get(f"{base}/frames/1,2/rendered", Accept="image/jpeg").status_code == 406
    # The middle frame is the thumbnail of a multi-frame image.
    got = _png(world.get(f"{base}/thumbnail?accept=image/png&window={EXACT}"))
    assert np.all(got == 100)


def test_viewport_scales_crops_and_flips(world: World) -> None:
    url = world.url(MONO1_SERIES) + "/rendered"
    inverse = 255 - MONO1
    # Scaled to fit 64x64 with the aspect ratio kept: 256x32 becomes 64x8.
    assert _png(world.get(f"{url}?accept=image/png&viewport=64,64")).shape == (8, 64)
    # A region at scale 1 is an exact crop; a negative width flips it.
    crop = _png(world.get(f"{url}?accept=image/png&window={EXACT}&viewport=16,8,100,4,16,8"))
    assert np.array_equal(crop, inverse[4:12, 100:116])
    flipped = _png(world.get(f"{url}?accept=image/png&window={EXACT}&viewport=16,8,116,4,-16,8"))
    assert np.array_equal(flipped, inverse[4:12, 100:116][:, ::-1])
    # Empty members default to the rest of the image.
    assert _png(world.get(f"{url}?accept=image/png&viewport=256,32,128,,,")).shape == (32, 128)


def test_thumbnails_pick_the_main_series_middle_image_and_are_cached(world: World) -> None:
    from medcloud.hub.routes.dicomweb_render import RENDERED

    # The study's thumbnail comes from the 3-image CT series (not the one-image scout), its middle image.
    r = world.get(f"/dicom-web/studies/{STUDY}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(r.content)).size) == 128  # 256x64 fits 128x128 as 128x32
    events = [e for e in _events(world, "dicomweb.thumbnail") if e["resource"] == f"study/{STUDY}"]
    assert events[-1]["outcome"] == "ok" and events[-1]["detail"]["sop"] == world.sop[CT_SERIES][1]
    series = world.get(f"/dicom-web/studies/{STUDY}/series/{SCOUT_SERIES}/thumbnail?accept=image/png")
    assert np.all(_png(series) == 128)  # a constant image: the robust window puts it mid-grey
    assert world.get(f"/dicom-web/studies/{STUDY}/series/{RGB_SERIES}/thumbnail?viewport=24,24").status_code == 200
    hits = RENDERED.hits
    again = world.get(f"/dicom-web/studies/{STUDY}/thumbnail")
    assert again.content == r.content and RENDERED.hits == hits + 1
    # Cached or not, every read is audited.
    assert len([e for e in _events(world, "dicomweb.thumbnail") if e["resource"] == f"study/{STUDY}"]) == len(
        events) + 1  # fmt: skip
    assert world.get(world.url(CT_SERIES, 0) + "/thumbnail").status_code == 200
    assert world.get(world.url(MULTI_SERIES) + "/frames/3/thumbnail").status_code == 200


def test_series_and_study_rendered_are_multipart(world: World) -> None:
    r = world.get(f"/dicom-web/studies/{STUDY}/series/{CT_SERIES}/rendered?window=0,1000")
    assert r.status_code == 200, r.text
    assert parse_media_type(r.headers["content-type"]).params["type"] == "image/jpeg"
    parts = _parts(r)
    assert len(parts) == 3 and all(d[:2] == b"\xff\xd8" for _, d in parts)
    assert [h["content-location"].split("/instances/")[1].split("/")[0] for h, _ in parts] == world.sop[CT_SERIES]
    whole = world.get(f"/dicom-web/studies/{STUDY}/rendered")
    assert whole.status_code == 200 and len(_parts(whole)) == 8  # every image of the study, first frames
    # One image asked for where there are three: 406; where there is one, the image itself.
    assert world.get(f"/dicom-web/studies/{STUDY}/series/{CT_SERIES}/rendered", Accept="image/jpeg").status_code == 406
    one = world.get(f"/dicom-web/studies/{STUDY}/series/{SCOUT_SERIES}/rendered", Accept="image/png")
    assert one.headers["content-type"] == "image/png"


@pytest.mark.parametrize(
    ("query", "accept", "status"),
    [
        ("window=abc,400", None, 400),
        ("window=40", None, 400),
        ("window=40,0", None, 400),
        ("window=40,400,cubic", None, 400),
        ("window=40,inf", None, 400),
        ("window=1,2&window=3,4", None, 400),
        ("viewport=0,10", None, 400),
        ("viewport=a,b", None, 400),
        ("viewport=10,10,1", None, 400),
        ("viewport=10,10,5000,5000,10,10", None, 400),  # a region outside the image
        ("viewport=99999,10", None, 400),
        ("quality=0", None, 400),
        ("quality=101", None, 400),
        ("quality=high", None, 400),
        ("accept=image/gif", None, 406),
        ("", "application/dicom", 406),
        ("", 'multipart/related; type="application/dicom"', 406),
        ("", "image/jpeg; q=2", 400),
        ("", 'image/png; x="', 400),
        ("", "image/*", 200),
        ("annotation=patient", "*/*", 200),  # accepted and not acted on, with a Warning
        ("x%0D%0AX-Evil%3A%201=2", "*/*", 200),  # an unknown name never becomes a header of its own
    ],
)
def test_bad_parameters_and_media_types(world: World, query: str, accept: str | None, status: int) -> None:
    headers = {"Accept": accept} if accept else {}
    r = world.get(world.url(CT_SERIES) + f"/rendered?{query}", **headers)
    assert r.status_code == status, r.text
    if status != 200:
        assert r.headers["content-type"] == "application/problem+json"
    elif "annotation" in query:
        assert "annotation" in r.headers["warning"]
    else:
        assert "x-evil" not in r.headers and "\n" not in r.headers.get("warning", "")


def test_no_image_missing_frame_and_wrong_method(world: World) -> None:
    sr = world.url(SR_SERIES, study=SR_STUDY)
    for path in (f"{sr}/rendered", f"{sr}/thumbnail", f"/dicom-web/studies/{SR_STUDY}/thumbnail"):
        r = world.get(path)
        assert r.status_code == 406 and r.headers["content-type"] == "application/problem+json", r.text
        assert "no image" in r.json()["detail"]
    assert world.get(world.url(MULTI_SERIES) + "/frames/4/rendered").status_code == 404
    assert world.get(world.url(MULTI_SERIES) + "/frames/0/rendered").status_code == 400
    assert world.get(world.url(MULTI_SERIES) + "/frames/1,2/thumbnail").status_code == 400
    assert world.get(f"/dicom-web/studies/{STUDY}/series/1.2.3/thumbnail").status_code == 404
    r = world.hub.client.post(world.url(CT_SERIES) + "/rendered", headers=world.hub.auth("researcher"))
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    r = world.hub.client.delete(f"/dicom-web/studies/{STUDY}/thumbnail", headers=world.hub.auth("researcher"))
    assert r.status_code == 405 and r.headers["allow"] == "GET"


def test_tokens_projects_and_audit(world: World) -> None:
    c = world.hub.client
    url = world.url(CT_SERIES) + "/rendered"
    assert c.get(url).status_code == 401
    assert c.get(url, headers={"Authorization": "Bearer mct_0000000000000000.wrong"}).status_code == 401
    assert world.get(url, who="clinician").status_code == 403
    assert world.get(f"/dicom-web/studies/{STUDY}/thumbnail", who="site_a").status_code == 403
    # Another project's study is not there for this researcher, and is for its own.
    brain = world.url(BRAIN_SERIES, study=BRAIN_STUDY)
    for path in (f"{brain}/rendered", f"/dicom-web/studies/{BRAIN_STUDY}/thumbnail",
                 f"/dicom-web/studies/{BRAIN_STUDY}/series/{BRAIN_SERIES}/thumbnail"):  # fmt: skip
        assert world.get(path).status_code == 404
        assert world.get(path, who="researcher_brain").status_code == 200
    assert world.get(f"/dicom-web/studies/{STUDY}/thumbnail", who="researcher_brain").status_code == 404
    events = _events(world, "dicomweb.rendered")
    ct = [e for e in events if e["resource"] == f"study/{STUDY}/series/{CT_SERIES}/instance/{world.sop[CT_SERIES][0]}"]
    ok = [e for e in ct if e["outcome"] == "ok"]
    assert ok and ok[0]["detail"]["project"] == "lung" and ok[0]["detail"]["media"] in ("image/png", "image/jpeg")
    assert {"refused:400:invalid-input", "refused:406:not-acceptable"} <= {e["outcome"] for e in ct}  # bad params
    refused = [e for e in events if e["resource"].startswith(f"study/{BRAIN_STUDY}")]
    assert refused and refused[0]["outcome"].startswith("refused:404")
    thumbs = [e for e in _events(world, "dicomweb.thumbnail") if e["resource"] == f"study/{BRAIN_STUDY}"]
    assert {e["outcome"][:11] for e in thumbs} == {"refused:404", "ok"}
