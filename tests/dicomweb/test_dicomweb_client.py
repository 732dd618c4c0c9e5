"""The real `dicomweb-client` (0.61.2) and OHIF v3's exact requests against a real uvicorn hub on 127.0.0.1."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from medcloud.config import load_settings
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token
from tests.dicomweb.conftest import dicom_file
from tests.live_hub import hub_process

dicomweb_client = pytest.importorskip("dicomweb_client")

CT, CT_SERIES, MR = "2.25.4001", "2.25.4001.1", "2.25.4002"


@dataclass
class LiveHub:
    url: str
    site: str
    researcher: str
    other: str

    def client(self, token: str) -> dicomweb_client.DICOMwebClient:
        return dicomweb_client.DICOMwebClient(url=f"{self.url}/dicom-web", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveHub]:
    data = tmp_path_factory.mktemp("live") / "hub"
    state = HubState.open(load_settings(data_dir=data))
    try:
        site = issue_token(state.catalog, role="site", site="site-a", projects=["lung"]).token
        researcher = issue_token(state.catalog, role="researcher", projects=["lung"]).token
        other = issue_token(state.catalog, role="researcher", projects=["brain"]).token
    finally:
        state.close()
    with hub_process(data) as url:
        yield LiveHub(url, site, researcher, other)


def _ds(**kw: str) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(dicom_file(**kw)))


@pytest.fixture(scope="module")
def stored(live: LiveHub) -> list[pydicom.Dataset]:
    datasets = [_ds(study_uid=CT, series_uid=CT_SERIES, patient="PSEUDO-1", description="CHEST CT") for _ in range(2)]
    datasets.append(_ds(study_uid=MR, patient="PSEUDO-2", modality="MR", description="頭部 MRI", source="MR_small.dcm"))
    answer = live.client(live.site).store_instances(datasets=datasets)
    refs = answer.ReferencedSOPSequence
    assert [r.ReferencedSOPInstanceUID for r in refs] == [d.SOPInstanceUID for d in datasets]
    assert "FailedSOPSequence" not in answer
    return datasets


def test_search_at_every_level(live: LiveHub, stored: list[pydicom.Dataset]) -> None:
    c = live.client(live.researcher)
    studies = c.search_for_studies()
    assert {s["0020000D"]["Value"][0] for s in studies} == {CT, MR}
    assert {s["0020000D"]["Value"][0] for s in c.search_for_studies(search_filters={"PatientID": "PSEUDO-*"})} == {
        MR, CT}  # fmt: skip
    # Kanji and a wildcard, percent-encoded by the client (Orthanc's plugin returned nothing here).
    kanji = c.search_for_studies(search_filters={"StudyDescription": "頭部*"}, fuzzymatching=True)
    assert [s["0020000D"]["Value"][0] for s in kanji] == [MR]
    assert kanji[0]["00081030"]["Value"] == ["頭部 MRI"]
    assert len(c.search_for_studies(search_filters={"StudyInstanceUID": [CT, MR]})) == 2
    series = c.search_for_series(study_instance_uid=CT)
    assert [s["0020000E"]["Value"][0] for s in series] == [CT_SERIES]
    assert len(c.search_for_series(search_filters={"Modality": "MR"})) == 1
    instances = c.search_for_instances(study_instance_uid=CT, series_instance_uid=CT_SERIES)
    assert sorted(i["00080018"]["Value"][0] for i in instances) == sorted(d.SOPInstanceUID for d in stored[:2])
    assert len(c.search_for_instances(limit=1, offset=1)) == 1
    # Another project's researcher sees none of it.
    assert live.client(live.other).search_for_studies() == []


def test_retrieve_instance_study_metadata_and_frames(live: LiveHub, stored: list[pydicom.Dataset]) -> None:
    c = live.client(live.researcher)
    first = stored[0]
    got = c.retrieve_instance(CT, CT_SERIES, first.SOPInstanceUID)
    assert got.SOPInstanceUID == first.SOPInstanceUID and got.PixelData == first.PixelData
    study = c.retrieve_study(CT)
    assert sorted(d.SOPInstanceUID for d in study) == sorted(d.SOPInstanceUID for d in stored[:2])
    metadata = c.retrieve_study_metadata(CT)
    assert len(metadata) == 2
    parsed = pydicom.Dataset.from_json(metadata[0])  # pydicom reads it back: valid DICOM JSON
    assert parsed.StudyInstanceUID == CT and parsed.Rows == 128
    frames = c.retrieve_instance_frames(CT, CT_SERIES, first.SOPInstanceUID, frame_numbers=[1])
    assert frames == [first.PixelData]
    assert len(c.retrieve_series_metadata(CT, CT_SERIES)) == 2
    assert c.retrieve_instance_metadata(CT, CT_SERIES, first.SOPInstanceUID)["00080018"]["Value"] == [
        first.SOPInstanceUID]  # fmt: skip


def test_other_project_cannot_retrieve(live: LiveHub, stored: list[pydicom.Dataset]) -> None:
    import requests

    with pytest.raises(requests.HTTPError) as err:
        live.client(live.other).retrieve_study_metadata(CT)
    assert err.value.response.status_code == 404


def test_ohif_requests_replayed(live: LiveHub, stored: list[pydicom.Dataset]) -> None:
    auth = {"Authorization": f"Bearer {live.researcher}"}
    base = f"{live.url}/dicom-web"
    r = httpx.get(
        f"{base}/studies?limit=101&offset=0&fuzzymatching=false&includefield=00081030%2C00080060%2C00080090%2C00100030",
        headers={**auth, "Accept": "application/dicom+json"},
    )
    assert r.status_code == 200 and len(r.json()) == 2
    assert all({"00081030", "00080090", "00100030", "00201208", "00080061"} <= set(s) for s in r.json())
    r = httpx.get(f"{base}/studies/{CT}/series?includefield=0008103E,00080021", headers=auth)
    assert r.status_code == 200 and r.json()[0]["0020000E"]["Value"] == [CT_SERIES]
    accept = "application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*"
    r = httpx.get(f"{base}/studies/{CT}/series/{CT_SERIES}/metadata", headers={**auth, "Accept": accept})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
    sop = stored[0].SOPInstanceUID
    for frames_accept in ("multipart/related; type=application/octet-stream; transfer-syntax=*",
                          'multipart/related; type="application/octet-stream"; transfer-syntax=*'):  # fmt: skip
        r = httpx.get(f"{base}/studies/{CT}/series/{CT_SERIES}/instances/{sop}/frames/1",
                      headers={**auth, "Accept": frames_accept})  # fmt: skip
        assert r.status_code == 200 and stored[0].PixelData in r.content


def test_dicomweb_client_cli(live: LiveHub, stored: list[pydicom.Dataset], tmp_path: Path) -> None:
    """The client's command line: a kanji wildcard search, metadata, and a store, as a shell user types them."""
    import json
    import shutil

    exe = shutil.which("dicomweb_client", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("dicomweb_client's command is not installed next to this Python")

    def run(token: str, *args: str) -> str:
        cmd = [exe, "--url", f"{live.url}/dicom-web", "--bearer-token", token, *args]
        out = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        assert out.returncode == 0, out.stderr.decode()[-1500:]
        return out.stdout.decode()

    found = json.loads(run(live.researcher, "search", "studies", "--filter", "StudyDescription=頭部*", "--prettify"))
    assert [s["0020000D"]["Value"][0] for s in found] == [MR]
    first = stored[0]
    meta = json.loads(
        run(
            live.researcher,
            "retrieve",
            "instances",
            "--study",
            CT,
            "--series",
            CT_SERIES,
            "--instance",
            first.SOPInstanceUID,
            "metadata",
            "--prettify",
        )
    )
    meta = meta[0] if isinstance(meta, list) else meta
    assert meta["00080018"]["Value"] == [first.SOPInstanceUID]
    extra = tmp_path / "extra.dcm"
    extra.write_bytes(dicom_file(study_uid=CT, series_uid=CT_SERIES))
    run(live.site, "store", "instances", str(extra))
    assert len(live.client(live.researcher).search_for_instances(study_instance_uid=CT)) == 3
