"""End to end over a real uvicorn hub: `medcloud results push` (CLI) and the job helper store results that the
real `dicomweb-client` then finds (QIDO Modality=SR|SEG) and retrieves (WADO-RS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pytest
from PIL import Image

from medcloud.errors import NotFound
from medcloud.results.client import ResultsClient, push_boxes, push_mask
from tests.dicomweb.test_dicomweb_client import LiveHub, live  # noqa: F401 - the live hub fixture
from tests.live_hub import SRC
from tests.results.conftest import SERIES, STUDY, ct_series, to_bytes

dicomweb_client = pytest.importorskip("dicomweb_client")


def _seed(live: LiveHub) -> list[str]:  # noqa: F811
    uids = []
    for ds in ct_series():
        r = httpx.post(f"{live.url}/api/v1/ingest", content=to_bytes(ds),
                       headers={"Authorization": f"Bearer {live.site}"})  # fmt: skip
        assert r.status_code in (200, 201), r.text
        uids.append(str(ds.SOPInstanceUID))
    return uids


def test_cli_push_and_job_helper_then_dicomweb_client(live: LiveHub, tmp_path: Path) -> None:  # noqa: F811
    sources = _seed(live)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps([{"x": 5, "y": 6, "w": 20, "h": 10, "label": "nodule", "score": 0.7}]))
    env = {**os.environ, "PYTHONPATH": str(SRC), "MEDCLOUD_HUB_URL": live.url, "MEDCLOUD_TOKEN": live.researcher}
    base = [sys.executable, "-m", "medcloud.cli", "results", "push", "--source", sources[0],
            "--algorithm", "cli-model", "--algorithm-version", "0.1"]  # fmt: skip
    done = subprocess.run([*base, "--boxes", str(boxes)], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sr_out = json.loads(done.stdout)
    # A mask PNG through the CLI as well, and a wrong-size one refused with the hub's reason.
    good, bad = tmp_path / "m.png", tmp_path / "bad.png"
    m = np.zeros((128, 128), np.uint8)
    m[10:20, 10:30] = 255
    Image.fromarray(m).save(good)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(bad)
    refused = subprocess.run([*base, "--mask", str(bad)], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "10x10" in refused.stderr, refused.stderr
    done = subprocess.run([*base, "--mask", str(good), "--label", "spot"], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    cli_seg = json.loads(done.stdout)
    # The job helper: a mask per slice posted with the job's token.
    client = ResultsClient(live.url, live.researcher)
    try:
        masks = {uid: np.zeros((128, 128), bool) for uid in sources}
        masks[sources[3]][60:70, 60:80] = True
        seg_out = push_mask(client, masks, label="lesion", algorithm="job-seg", version="3")
        assert seg_out["modality"] == "SEG" and seg_out["study_uid"] == STUDY
        more = push_boxes(client, [sources[2]], [{"x": 0, "y": 0, "w": 1, "h": 1, "label": "dot"}],
                          algorithm="job-det", version="1")  # fmt: skip
        assert more["modality"] == "SR"
    finally:
        client.close()
    other = ResultsClient(live.url, live.other)
    try:  # the brain researcher cannot see, so cannot write on, a lung source
        with pytest.raises(NotFound):
            push_boxes(
                other, [sources[0]], [{"x": 0, "y": 0, "w": 1, "h": 1, "label": "x"}], algorithm="a", version="1"
            )
    finally:
        other.close()
    dw = live.client(live.researcher)
    found = dw.search_for_series(study_instance_uid=STUDY, search_filters={"Modality": "SR"})
    assert {s["0020000E"]["Value"][0] for s in found} == {sr_out["series_uid"], more["series_uid"]}
    found = dw.search_for_series(study_instance_uid=STUDY, search_filters={"Modality": "SEG"})
    assert {s["0020000E"]["Value"][0] for s in found} == {seg_out["series_uid"], cli_seg["series_uid"]}
    sr = dw.retrieve_instance(STUDY, sr_out["series_uid"], sr_out["sop_uid"])
    (g,) = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    np.testing.assert_allclose(g.roi.value, [[5, 6], [25, 6], [25, 16], [5, 16], [5, 6]])
    assert g.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sources[0]
    (seg_ds,) = dw.retrieve_series(STUDY, seg_out["series_uid"])
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    px = seg.get_pixels_by_source_instance(source_sop_instance_uids=sources, segment_numbers=[1])
    assert px[3, 60:70, 60:80, 0].all() and int(px.sum()) == 200
    assert SERIES not in {sr_out["series_uid"], seg_out["series_uid"]}
