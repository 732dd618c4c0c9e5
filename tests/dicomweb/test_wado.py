"""WADO-RS: instances as multipart/related, metadata as DICOM JSON, native frames; 404/405/406/400; audit."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from medcloud.dicomweb.media import parse_media_type
from medcloud.dicomweb.multipart import split_parts
from tests.dicomweb.conftest import BRAIN_CT, LUNG_CT, LUNG_CT_SERIES, LUNG_MR, Seeded, dicom_file

OHIF_FRAMES = "multipart/related; type=application/octet-stream; transfer-syntax=*"
OHIF_METADATA = "application/dicom+json, multipart/related; type=application/octet-stream; transfer-syntax=*"


def _parts(r: Any) -> list[tuple[dict[str, str], bytes]]:
    ctype = parse_media_type(r.headers["content-type"])
    assert ctype.essence == "multipart/related"
    return [(p.headers, bytes(p.data)) for p in split_parts(r.content, ctype.params["boundary"].encode())]


def _stored(s: Seeded, study: str) -> dict[str, str]:
    r = s.hub.client.get(f"/api/v1/instances?study={study}", headers=s.hub.auth("researcher"))
    return {i["sop_uid"]: i["sha256"] for i in r.json()["items"]}


def _events(s: Seeded, action: str) -> list[dict[str, Any]]:
    r = s.hub.client.get(f"/api/v1/audit?limit=1000&action={action}", headers=s.hub.auth("auditor"))
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_retrieve_study_series_instance_as_multipart_dicom(seeded: Seeded) -> None:
    c, auth = seeded.hub.client, seeded.hub.auth("researcher")
    stored = _stored(seeded, LUNG_CT)
    for url, n in [
        (f"/dicom-web/studies/{LUNG_CT}", 2),
        (f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}", 2),
        (f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances/{seeded.sop[LUNG_CT][0]}", 1),
    ]:
        r = c.get(url, headers=auth)
        assert r.status_code == 200, r.text
        assert parse_media_type(r.headers["content-type"]).params["type"] == "application/dicom"
        assert r.headers["cache-control"] == "no-store"
        parts = _parts(r)
        assert len(parts) == n
        for headers, data in parts:
            assert headers["content-type"].startswith("application/dicom")
            sop = headers["content-location"].rsplit("/", 1)[1]
            assert hashlib.sha256(data).hexdigest() == stored[sop]  # the stored bytes, unchanged
    events = _events(seeded, "dicomweb.retrieve")
    assert len(events) == 3 and events[0]["resource"] == f"study/{LUNG_CT}" and events[0]["outcome"] == "ok"


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        ('multipart/related; type="application/dicom"', 200),
        ("multipart/related; type=application/dicom; transfer-syntax=*", 200),
        ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1', 200),
        ('multipart/related; type="*/*"', 200),  # Orthanc 1.x answered 400 here
        ("*/*", 200),
        ("multipart/related", 200),
        ('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50', 406),
        ("application/dicom+json", 406),
        ("image/jpeg", 406),
        ('multipart/related; type="application/dicom', 400),  # unbalanced quote
        ("multipart/related; type=", 400),
        ("nonsense", 400),
    ],
)
def test_retrieve_accept_negotiation(seeded: Seeded, accept: str, status: int) -> None:
    r = seeded.hub.client.get(
        f"/dicom-web/studies/{LUNG_CT}", headers={**seeded.hub.auth("researcher"), "Accept": accept}
    )
    assert r.status_code == status, r.text


def _walk(attrs: dict[str, Any]) -> None:
    """Every attribute obeys F.2: a VR, and a Value key only with values."""
    for attr in attrs.values():
        assert "vr" in attr
        if "Value" in attr:
            assert attr["Value"] not in ([], "", None)
            if attr["vr"] in ("IS", "DS", "US", "UL", "SS", "SL", "FL", "FD"):
                assert all(isinstance(v, int | float) or v is None for v in attr["Value"]), attr
            if attr["vr"] == "SQ":
                for item in attr["Value"]:
                    _walk(item)


def test_metadata_at_three_levels_follows_f2(seeded: Seeded) -> None:
    c, auth = seeded.hub.client, seeded.hub.auth("researcher")
    sop = seeded.sop[LUNG_CT][0]
    base = f"/dicom-web/studies/{LUNG_CT}"
    for url, n in [(f"{base}/metadata", 2), (f"{base}/series/{LUNG_CT_SERIES}/metadata", 2),
                   (f"{base}/series/{LUNG_CT_SERIES}/instances/{sop}/metadata", 1)]:  # fmt: skip
        r = c.get(url, headers={**auth, "Accept": OHIF_METADATA})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert len(body) == n
        for ds in body:
            _walk(ds)
            assert ds["00280030"]["vr"] == "DS" and all(isinstance(v, float | int) for v in ds["00280030"]["Value"])
            assert ds["00200013"]["vr"] == "IS" and isinstance(ds["00200013"]["Value"][0], int)
            assert "00020010" not in ds  # no file meta in metadata
            pixel = ds["7FE00010"]
            assert set(pixel) == {"vr", "BulkDataURI"} and pixel["vr"] == "OW"
    # The pixel BulkDataURI is served: it is the frames resource.
    uri = body[0]["7FE00010"]["BulkDataURI"].replace("http://testserver", "")
    r = c.get(uri, headers={**auth, "Accept": OHIF_FRAMES})
    assert r.status_code == 200 and len(_parts(r)[0][1]) == 128 * 128 * 2


def test_metadata_person_names_keep_their_three_groups(seeded: Seeded) -> None:
    import io

    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom_file(study_uid=LUNG_MR, patient="PSEUDO-2", modality="MR",
                                               source="MR_small.dcm")))  # fmt: skip
    ds.ReferringPhysicianName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.InstitutionName = ""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    h = seeded.hub
    assert h.client.post("/api/v1/ingest", content=buf.getvalue(), headers=h.auth("site_a")).status_code == 201
    url = f"/dicom-web/studies/{LUNG_MR}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/metadata"
    meta = h.client.get(url, headers=h.auth("researcher")).json()[0]
    assert meta["00080090"] == {
        "vr": "PN",
        "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}],
    }
    assert meta["00080080"] == {"vr": "LO"}  # empty: no Value key


QUOTED_FRAMES = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'


@pytest.mark.parametrize(
    "accept", [OHIF_FRAMES, QUOTED_FRAMES, 'multipart/related; type="application/octet-stream"', None]
)
def test_frames_with_ohif_accept_quoted_or_not(seeded: Seeded, accept: str | None) -> None:
    sop = seeded.sop[LUNG_CT][0]
    headers = seeded.hub.auth("researcher") | ({"Accept": accept} if accept else {})
    r = seeded.hub.client.get(f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances/{sop}/frames/1",
                              headers=headers)  # fmt: skip
    assert r.status_code == 200, r.text
    [(headers_, data)] = _parts(r)
    assert headers_["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1"
    import io

    import pydicom

    raw = seeded.hub.client.get(f"/api/v1/instances/{sop}/file", headers=seeded.hub.auth("researcher")).content
    assert data == pydicom.dcmread(io.BytesIO(raw)).PixelData  # one frame: all of the pixel data


@pytest.mark.parametrize(
    ("frames", "accept", "status"),
    [
        ("2", OHIF_FRAMES, 404),  # a single-frame image has no frame 2
        ("0", OHIF_FRAMES, 400),
        ("1,x", OHIF_FRAMES, 400),
        ("1", 'multipart/related; type="image/jpeg"', 406),
        ("1", "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50", 406),
        ("1", "multipart/related; type=application/octet-stream; q=2", 400),
    ],
)
def test_frames_errors(seeded: Seeded, frames: str, accept: str, status: int) -> None:
    sop = seeded.sop[LUNG_CT][0]
    r = seeded.hub.client.get(f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances/{sop}/frames/{frames}",
                              headers={**seeded.hub.auth("researcher"), "Accept": accept})  # fmt: skip
    assert r.status_code == status, r.text


def test_missing_and_foreign_resources_are_404_and_audited(seeded: Seeded) -> None:
    c, auth = seeded.hub.client, seeded.hub.auth("researcher")
    brain_sop = seeded.sop[BRAIN_CT][0]
    for url in [
        f"/dicom-web/studies/{BRAIN_CT}",  # another project's study: exactly as if it did not exist
        f"/dicom-web/studies/{BRAIN_CT}/metadata",
        f"/dicom-web/studies/{BRAIN_CT}/series/x/instances/{brain_sop}/frames/1",
        "/dicom-web/studies/1.2.3",
        f"/dicom-web/studies/{LUNG_CT}/series/1.2.3",
        f"/dicom-web/studies/{LUNG_MR}/series/{LUNG_CT_SERIES}/metadata",  # a series of another study
    ]:
        r = c.get(url, headers=auth)
        assert r.status_code == 404, (url, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    refused = [e for e in _events(seeded, "dicomweb.retrieve") if e["outcome"].startswith("refused:404")]
    assert refused and refused[0]["resource"] == f"study/{BRAIN_CT}"
    # The brain researcher reads it.
    assert c.get(f"/dicom-web/studies/{BRAIN_CT}", headers=seeded.hub.auth("researcher_brain")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", f"/dicom-web/studies/{LUNG_CT}", "GET, POST"),
        ("PUT", "/dicom-web/studies", "GET, POST"),
        ("POST", f"/dicom-web/studies/{LUNG_CT}/metadata", "GET"),
        ("POST", "/dicom-web/series", "GET"),
        ("HEAD", "/dicom-web/studies", "GET, POST"),
        ("DELETE", f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances/1.2/frames/1", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(seeded: Seeded, method: str, path: str, allow: str) -> None:
    r = seeded.hub.client.request(method, path, headers=seeded.hub.auth("researcher"))
    assert r.status_code == 405 and r.headers["allow"] == allow


def test_bytes_need_a_reader_token(seeded: Seeded) -> None:
    c = seeded.hub.client
    assert c.get(f"/dicom-web/studies/{LUNG_CT}").status_code == 401
    assert c.get(f"/dicom-web/studies/{LUNG_CT}", headers=seeded.hub.auth("clinician")).status_code == 403
    assert c.get(f"/dicom-web/studies/{LUNG_CT}/metadata", headers=seeded.hub.auth("admin")).status_code == 403


def test_compressed_frames_go_out_as_stored_to_a_client_that_accepts_any_syntax(seeded: Seeded) -> None:
    import io

    import pydicom
    from pydicom.encaps import generate_frames

    data = dicom_file(study_uid=LUNG_MR, patient="PSEUDO-2", modality="MR", source="emri_small_jpeg_2k_lossless.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    h = seeded.hub
    assert h.client.post("/api/v1/ingest", content=data, headers=h.auth("site_a")).status_code == 201
    base = f"/dicom-web/studies/{LUNG_MR}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    expected = list(generate_frames(ds.PixelData, number_of_frames=10))
    r = h.client.get(f"{base}/frames/2,5", headers={**h.auth("researcher"), "Accept": OHIF_FRAMES})
    assert r.status_code == 200, r.text
    parts = _parts(r)
    assert [p[1] for p in parts] == [expected[1], expected[4]]
    assert parts[0][0]["content-type"] == "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.90"
    named = "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.90"
    assert h.client.get(f"{base}/frames/1", headers={**h.auth("researcher"), "Accept": named}).status_code == 200
    # Without a transfer syntax the client wants Explicit VR Little Endian: decoded (test_transcode.py).
    plain = 'multipart/related; type="application/octet-stream"'
    decoded = h.client.get(f"{base}/frames/1", headers={**h.auth("researcher"), "Accept": plain})
    assert decoded.status_code == 200 and len(_parts(decoded)[0][1]) == ds.Rows * ds.Columns * 2
    assert h.client.get(f"{base}/frames/11", headers={**h.auth("researcher"), "Accept": OHIF_FRAMES}).status_code == 404
    meta = h.client.get(f"{base}/metadata", headers=h.auth("researcher")).json()[0]
    assert meta["7FE00010"]["vr"] == "OB" and meta["7FE00010"]["BulkDataURI"].endswith("/frames/1,2,3,4,5,6,7,8,9,10")


@pytest.mark.parametrize(
    ("source", "alphabetic", "ideographic", "phonetic"),
    [
        ("chrH32.dcm", "ﾔﾏﾀﾞ^ﾀﾛｳ", "山田^太郎", "やまだ^たろう"),  # ISO 2022 IR 13 + IR 87 (Japanese sites)
        ("chrH31.dcm", "Yamada^Tarou", "山田^太郎", "やまだ^たろう"),  # ISO 2022 IR 87
        ("chrX1.dcm", "Wang^XiaoDong", "王^小東", None),  # ISO_IR 192 (Orthanc issue 113)
        ("chrX2.dcm", "Wang^XiaoDong", "王^小东", None),  # GB18030
    ],
)
def test_metadata_decodes_the_files_character_set(
    hub: Any, source: str, alphabetic: str, ideographic: str, phonetic: str | None
) -> None:
    """Names in ISO 2022 and other character sets come back as Unicode groups (Orthanc's came back empty)."""
    import io
    from pathlib import Path

    import pydicom
    import pydicom.data

    path = Path(pydicom.data.DATA_ROOT, "charset_files", source)
    ds = pydicom.dcmread(path)
    name = ds.PatientName  # moved to a non-identifying element: the hub refuses nothing for it
    ds.ReferringPhysicianName = name
    ds.PatientName = "PSEUDO-9"
    ds.PatientID = "PSEUDO-9"
    ds.PatientIdentityRemoved = "YES"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = "2.25.5001", "2.25.5001.1", "2.25.5001.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert hub.client.post("/api/v1/ingest", content=buf.getvalue(), headers=hub.auth("site_a")).status_code == 201
    meta = hub.client.get("/dicom-web/studies/2.25.5001/metadata", headers=hub.auth("researcher")).json()[0]
    expected = {"Alphabetic": alphabetic, "Ideographic": ideographic}
    if phonetic:
        expected["Phonetic"] = phonetic
    assert meta["00080090"] == {"vr": "PN", "Value": [expected]}
