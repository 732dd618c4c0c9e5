"""`wsidicom`'s own DICOMweb client reads the DICOM WSI from a live hub (uvicorn on 127.0.0.1): QIDO for
the series' instances, WADO-RS metadata, and the tiles as WADO-RS frames, with the researcher's token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from medcloud.config import load_settings
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token
from tests.live_hub import hub_process

wsidicom = pytest.importorskip("wsidicom")
requests_auth = pytest.importorskip("requests.auth")


@dataclass
class LiveHub:
    url: str
    site: str
    researcher: str
    other: str


class Bearer(requests_auth.AuthBase):  # type: ignore[misc, name-defined]
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, r: object) -> object:
        r.headers["Authorization"] = f"Bearer {self.token}"  # type: ignore[attr-defined]
        return r


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    data = tmp_path_factory.mktemp("live-wsi") / "hub"
    state = HubState.open(load_settings(data_dir=data))
    try:
        site = issue_token(state.catalog, role="site", site="site-a", projects=["lung"]).token
        researcher = issue_token(state.catalog, role="researcher", projects=["lung"]).token
        other = issue_token(state.catalog, role="researcher", projects=["brain"]).token
    finally:
        state.close()
    with hub_process(data) as url:
        yield LiveHub(url, site, researcher, other)


@pytest.fixture(scope="module")
def stored(live: LiveHub, wsi_files: list[Path]) -> tuple[str, str]:
    for f in wsi_files:
        r = httpx.post(f"{live.url}/api/v1/ingest", content=f.read_bytes(),
                       headers={"Authorization": f"Bearer {live.site}"}, timeout=120)  # fmt: skip
        assert r.status_code == 201, r.text
    ds = pydicom.dcmread(wsi_files[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def _open_web(live: LiveHub, token: str, study: str, series: str) -> object:
    client = wsidicom.WsiDicomWebClient.create_client(f"{live.url}/dicom-web", auth=Bearer(token))
    return wsidicom.WsiDicom.open_web(client, study, series)


def _frames_serve_jpeg() -> bool:
    """Whether WADO-RS frames answer `multipart/related; type="image/jpeg"`, which wsidicom asks for."""
    from medcloud.dicomweb import frames

    return hasattr(frames, "plan_frames")


@pytest.mark.skipif(
    not _frames_serve_jpeg(),
    reason="frames as image/jpeg come with the DICOMweb rendering/transcoding work (dicomweb.frames.plan_frames)",
)
def test_wsidicom_web_client_reads_the_slide(live: LiveHub, stored: tuple[str, str], wsi_files: list[Path]) -> None:
    study, series = stored
    local = wsidicom.WsiDicom.open(wsi_files)
    remote = _open_web(live, live.researcher, study, series)
    try:
        assert [(lv.level, lv.size) for lv in remote.levels] == [(lv.level, lv.size) for lv in local.levels]
        assert remote.mpp.width == pytest.approx(0.499)
        for location, level, size in (((700, 1300), 0, (600, 400)), ((100, 50), 2, (300, 300))):
            got = np.asarray(remote.read_region(location, level, size).convert("RGB"))
            want = np.asarray(local.read_region(location, level, size).convert("RGB"))
            assert got.shape == (size[1], size[0], 3)
            assert np.array_equal(got, want)
    finally:
        remote.close()
        local.close()


def test_another_projects_token_sees_no_slide(live: LiveHub, stored: tuple[str, str], wsi_files: list[Path]) -> None:
    study, series = stored
    with pytest.raises(Exception):  # noqa: B017 - wsidicom raises its own error for a series it cannot see
        _open_web(live, live.other, study, series)
    # The search and the frames route refuse the other project's token as they refuse a missing study.
    sop = pydicom.dcmread(wsi_files[0], stop_before_pixels=True).SOPInstanceUID
    base = f"{live.url}/dicom-web/studies/{study}/series/{series}/instances"
    octet = "multipart/related; type=application/octet-stream; transfer-syntax=*"
    for token in (live.other, live.researcher):
        headers = {"Authorization": f"Bearer {token}", "Accept": octet}
        r = httpx.get(f"{base}/{sop}/frames/1", headers=headers)
        assert r.status_code == (404 if token == live.other else 200), r.text
    r = httpx.get(base, headers={"Authorization": f"Bearer {live.other}"})
    assert r.status_code == 404
