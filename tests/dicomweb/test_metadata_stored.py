"""WADO-RS metadata converted at ingest: the converter agrees with pydicom, the JSON is stored once per
file, served with the request's base URL, and files stored before the change are backfilled on first read.
"""

from __future__ import annotations

import io
import json
import warnings
import zlib
from pathlib import Path
from typing import Any

import pydicom
import pytest
import sqlalchemy as sa

from medcloud.dicomweb.json import instance_metadata
from medcloud.errors import InvalidInput, UnsupportedFormat
from medcloud.formats.dicom import open_dicom
from medcloud.formats.dicomjson import (
    BULK_KEY,
    bulk_split,
    dataset_json,
    file_json,
    join_with_base,
    pack_stored,
    pixel_vr,
    unpack_stored,
    with_base,
)
from medcloud.store.tables import instance_json
from tests.dicomweb.conftest import LUNG_CT, LUNG_CT_SERIES, Seeded
from tests.hub.conftest import deidentified_dicom

# Where our converter and pydicom's disagree on purpose, file by file (checked: the rest must be equal).
KNOWN_DIFFERENCES = {
    # pydicom fails on a value in these and drops the whole element (suppress_invalid_tags); we keep it.
    "rtdose.dcm", "rtdose_1frame.dcm", "rtdose_expb.dcm", "rtdose_expb_1frame.dcm", "rtdose_rle.dcm",
    "rtdose_rle_1frame.dcm",
    # An IS holding a non-number: pydicom drops the element, we keep it without a value (F.2.5).
    "badVR.dcm",
}  # fmt: skip


def _pydicom_files() -> list[Path]:
    root = Path(pydicom.__file__).parent / "data" / "test_files"
    return sorted(root.rglob("*.dcm"))


def test_converter_matches_pydicom_on_its_test_files() -> None:
    """Every pydicom test file we convert gives pydicom's DICOM JSON (F.2 rules: numbers, PN groups, empties)."""
    compared, differing = 0, []
    for path in _pydicom_files():
        data = path.read_bytes()
        try:
            ours = json.loads(file_json(data, "studies/1/series/2/instances/3/frames/1"))
        except (InvalidInput, UnsupportedFormat):
            continue  # truncated or preamble-less files: ingest refuses them before conversion
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = json.loads(
                json.dumps(instance_metadata(io.BytesIO(data), "studies/1/series/2/instances/3/frames/1"))
            )
        compared += 1
        if ours != theirs and path.name not in KNOWN_DIFFERENCES:
            key = next(k for k in sorted(set(ours) | set(theirs)) if ours.get(k) != theirs.get(k))
            differing.append(f"{path.name} {key}: ours {ours.get(key)} pydicom {theirs.get(key)}")
    assert compared > 60
    assert not differing, differing[:5]


def _objects_serialised(data: bytes, pixel_path: str | None) -> bytes:
    """What `file_json` wrote before it wrote text directly: the objects of `dataset_json`, then json.dumps."""
    buf, meta, syn, pos, _ = open_dicom(data, inflate_to_disk=True)
    attrs = dataset_json(buf, syn, pos)
    if pixel_path is not None:
        syntax = meta.get(0x00020010, b"").rstrip(b" \x00").decode("ascii", "replace")
        attrs["7FE00010"] = {"vr": pixel_vr(syntax, attrs), "BulkDataURI": pixel_path}
    return json.dumps(attrs, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


@pytest.mark.parametrize("pixel_path", ["studies/1/series/2/instances/3/frames/1", None, 'a "quoted" \\ path'])
def test_text_written_directly_is_the_objects_serialised_byte_for_byte(pixel_path: str | None) -> None:
    """The text `file_json` writes at ingest equals json.dumps of the objects `dataset_json` builds, for every
    pydicom test file either converts (non-Latin names, sequences, signed pixels, odd VRs); a file one of
    them refuses is refused by the other too."""
    compared = 0
    for path in _pydicom_files():
        data = path.read_bytes()
        try:
            expected: bytes | type[Exception] = _objects_serialised(data, pixel_path)
        except Exception as exc:  # whatever one refuses, the other must refuse
            expected = type(exc)
        try:
            ours: bytes | type[Exception] = file_json(data, pixel_path)
        except Exception as exc:
            ours = type(exc)
        assert ours == expected, path.name
        compared += isinstance(ours, bytes)
    assert compared > 60


def test_bulk_data_uri_gets_the_base_only_in_our_key() -> None:
    stored = (
        b'{"7FE00010":{"vr":"OW","BulkDataURI":"studies/1/frames/1"},'
        b'"00081030":{"vr":"LO","Value":["\\"BulkDataURI\\":\\""]}}'
    )
    out = json.loads(with_base(stored, b"https://h/dicom-web/"))
    assert out["7FE00010"]["BulkDataURI"] == "https://h/dicom-web/studies/1/frames/1"
    assert out["00081030"]["Value"] == ['"BulkDataURI":"']  # a value with the same characters is untouched


def test_join_with_base_is_with_base_of_the_joined_array() -> None:
    docs = [
        b'{"7FE00010":{"vr":"OW","BulkDataURI":"studies/1/frames/1"},'
        b'"00081030":{"vr":"LO","Value":["\\"BulkDataURI\\":\\""]}}',
        b"{}",
        b'{"00100020":{"vr":"LO","Value":["A"]}}',
        b'{"7FE00010":{"vr":"OB","BulkDataURI":"a"},"00091001":{"vr":"OB","BulkDataURI":"b"}}',
    ]
    for chosen in ([], docs[:1], docs[1:2], docs, docs[::-1]):
        joined = b"[" + b",".join(chosen) + b"]"
        expected = with_base(joined, b"https://h/dicom-web/")
        assert join_with_base([bulk_split(d) for d in chosen], b"https://h/dicom-web/") == expected
        json.loads(expected)
    stored = _real_stored_json()
    assert stored.count(BULK_KEY) == 1
    expected = with_base(b"[" + b",".join([stored, stored]) + b"]", b"http://x/dicom-web/")
    assert join_with_base([bulk_split(stored)] * 2, b"http://x/dicom-web/") == expected


def _real_stored_json() -> bytes:
    data = deidentified_dicom()
    return file_json(data, "studies/1/series/2/instances/3/frames/1")


def _stored(seeded: Seeded) -> dict[str, bytes]:
    db = seeded.hub.state.catalog.db
    with db.read() as conn:
        return {r.sha256: bytes(r.body) for r in conn.execute(sa.select(instance_json))}


def test_json_is_stored_at_ingest_and_served_with_the_request_base(seeded: Seeded) -> None:
    h = seeded.hub
    stored = _stored(seeded)
    assert len(stored) == 4  # one row per stored file
    url = f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/metadata"
    meta = h.client.get(url, headers=h.auth("researcher")).json()
    assert len(meta) == 2
    for ds in meta:
        uri = ds["7FE00010"]["BulkDataURI"]
        assert uri.startswith("http://testserver/dicom-web/studies/"), uri
        assert uri.endswith("/frames/1")
    other = h.client.get(url, headers={**h.auth("researcher"), "Host": "pacs.example:8443"}).json()
    assert other[0]["7FE00010"]["BulkDataURI"].startswith("http://pacs.example:8443/dicom-web/studies/")
    assert {k: v for k, v in other[0].items() if k != "7FE00010"} == {
        k: v for k, v in meta[0].items() if k != "7FE00010"
    }


def test_files_stored_before_are_converted_on_first_read_and_kept(seeded: Seeded) -> None:
    h = seeded.hub
    url = f"/dicom-web/studies/{LUNG_CT}/metadata"
    before = h.client.get(url, headers=h.auth("researcher")).json()
    kept = _stored(seeded)
    with h.state.catalog.db.write() as conn:  # as if ingested before JSON was converted at ingest
        conn.execute(instance_json.delete())
    assert _stored(seeded) == {}
    after = h.client.get(url, headers=h.auth("researcher")).json()
    assert after == before
    backfilled = _stored(seeded)
    assert len(backfilled) == 2  # the two instances read, kept for the next reader
    for sha, body in backfilled.items():
        assert unpack_stored(body) == unpack_stored(kept[sha])


def test_json_kept_as_zlib_before_zstandard_is_still_answered(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """Catalogs filled before stored JSON moved to Zstandard hold zlib bodies: both kinds are read."""
    h = seeded.hub
    url = f"/dicom-web/studies/{LUNG_CT}/metadata"
    kept = _stored(seeded)
    assert kept and all(body[:4] == b"\x28\xb5\x2f\xfd" for body in kept.values())  # Zstandard frames
    before = h.client.get(url, headers=h.auth("researcher")).json()
    import medcloud.dicomweb.json as dj
    import medcloud.hub.routes.dicomweb as routes

    monkeypatch.setattr(routes, "_STORED_JSON", dj.StoredJsonCache())  # read from the catalog, not memory
    with h.state.catalog.db.write() as conn:
        for sha, body in kept.items():
            conn.execute(
                instance_json.update()
                .where(instance_json.c.sha256 == sha)
                .values(body=zlib.compress(unpack_stored(body), 1))
            )
    assert all(body[:1] == b"\x78" for body in _stored(seeded).values())
    assert h.client.get(url, headers=h.auth("researcher")).json() == before


def test_stored_form_round_trips_and_refuses_what_it_did_not_write() -> None:
    text = b'{"00100010":{"vr":"PN","Value":[{"Alphabetic":"\xe5\xb1\xb1\xe7\x94\xb0"}]}}' * 50
    packed = pack_stored(text)
    assert packed[:4] == b"\x28\xb5\x2f\xfd" and len(packed) < len(text)
    assert unpack_stored(packed) == text
    assert unpack_stored(zlib.compress(text, 1)) == text
    with pytest.raises(zlib.error):
        unpack_stored(b"MCE1 not a body")


def test_inflated_json_is_reused_from_memory_and_answers_the_same(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medcloud.hub.routes.dicomweb as routes

    h = seeded.hub
    url = f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/metadata"
    first = h.client.get(url, headers=h.auth("researcher")).json()
    fetched: list[list[str]] = []
    real = routes.DicomwebQueries.instance_json

    def spy(self: Any, shas: Any) -> dict[str, bytes]:
        fetched.append(list(shas))
        return real(self, shas)

    monkeypatch.setattr(routes.DicomwebQueries, "instance_json", spy)
    again = h.client.get(url, headers={**h.auth("researcher"), "Host": "pacs.example:8443"}).json()
    assert fetched == [[]]  # no stored body read again: both came from memory
    assert again == json.loads(json.dumps(first).replace("http://testserver/", "http://pacs.example:8443/"))
    # Access is checked before the cache is consulted: another project's reader still gets 404.
    assert h.client.get(url, headers=h.auth("researcher_brain")).status_code == 404


def test_metadata_matches_the_files_own_values(seeded: Seeded) -> None:
    h = seeded.hub
    meta: list[dict[str, Any]] = h.client.get(
        f"/dicom-web/studies/{LUNG_CT}/metadata", headers=h.auth("researcher")
    ).json()
    sops = {ds["00080018"]["Value"][0] for ds in meta}
    assert sops == set(seeded.sop[LUNG_CT])
    for ds in meta:
        assert ds["00280010"] == {"vr": "US", "Value": [128]}  # Rows of CT_small
        assert isinstance(ds["00200013"]["Value"][0], int)  # IS as a number
        assert all(isinstance(v, float) for v in ds["00280030"]["Value"])  # DS as numbers
        assert "00100010" in ds and ds["00100010"]["Value"][0] == {"Alphabetic": "PSEUDO-1"}


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_each_level_serves_stored_json(seeded: Seeded, level: str) -> None:
    h = seeded.hub
    sop = seeded.sop[LUNG_CT][0]
    url = {
        "study": f"/dicom-web/studies/{LUNG_CT}/metadata",
        "series": f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/metadata",
        "instance": f"/dicom-web/studies/{LUNG_CT}/series/{LUNG_CT_SERIES}/instances/{sop}/metadata",
    }[level]
    r = h.client.get(url, headers=h.auth("researcher"))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/dicom+json")
    assert len(r.json()) == (1 if level == "instance" else 2)


def test_a_file_our_converter_refuses_is_served_by_pydicom(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fallback: same answer shape, BulkDataURI filled with the base exactly once, nothing kept."""
    import medcloud.hub.routes.dicomweb as routes

    h = seeded.hub
    url = f"/dicom-web/studies/{LUNG_CT}/metadata"
    with h.state.catalog.db.write() as conn:
        conn.execute(instance_json.delete())

    def refuse(data: bytes, path: str | None) -> bytes:
        raise InvalidInput("not for this converter")

    monkeypatch.setattr(routes, "file_json", refuse)
    meta = h.client.get(url, headers=h.auth("researcher")).json()
    assert len(meta) == 2
    for ds in meta:
        assert ds["7FE00010"]["BulkDataURI"].startswith("http://testserver/dicom-web/studies/")
        assert ds["7FE00010"]["BulkDataURI"].count("/dicom-web/") == 1
        assert ds["00280010"] == {"vr": "US", "Value": [128]}
    assert _stored(seeded) == {}  # pydicom's answer is cached per process, not kept as the converted JSON


@pytest.mark.postgres
def test_stored_json_and_backfill_on_postgresql(pg_hub: Any) -> None:
    from tests.dicomweb.conftest import seed

    s = seed(pg_hub)
    assert len(_stored(s)) == 4
    url = f"/dicom-web/studies/{LUNG_CT}/metadata"
    before = pg_hub.client.get(url, headers=pg_hub.auth("researcher")).json()
    from medcloud.store.tables import instances

    with pg_hub.state.catalog.db.write() as conn:
        sha = conn.scalar(sa.select(instances.c.sha256).where(instances.c.sop_uid == s.sop[LUNG_CT][0]))
        conn.execute(instance_json.delete().where(instance_json.c.sha256 == sha))
    assert len(_stored(s)) == 3
    assert pg_hub.client.get(url, headers=pg_hub.auth("researcher")).json() == before
    assert len(_stored(s)) == 4  # the missing one kept again; the others left as they were (no conflict)


def test_an_absurd_number_of_frames_is_not_listed_frame_by_frame(seeded: Seeded) -> None:
    """Regression (fuzz seed 20261129, single:64): NumberOfFrames 999999999999 made ingest build a
    BulkDataURI listing every frame and the hub grow to 6 GB. Past MAX_LISTED_FRAMES the URI names the
    instance; the upload and its metadata are answered at once."""
    from medcloud.ingest.metadata import MAX_LISTED_FRAMES, frames_uri
    from tests.dicomweb.conftest import dicom_file

    assert frames_uri("1", "2", "3", 10, 3) == "studies/1/series/2/instances/3/frames/1,2,3"
    assert frames_uri("1", "2", "3", 10, MAX_LISTED_FRAMES + 1) == "studies/1/series/2/instances/3"
    assert frames_uri("1", "2", "3", None, 5) is None
    h = seeded.hub
    ds = pydicom.dcmread(io.BytesIO(dicom_file(study_uid="2.25.4242", series_uid="2.25.4243")))
    ds.NumberOfFrames = "999999999999"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    r = h.client.post("/api/v1/ingest", content=buf.getvalue(), headers=h.auth("site_a"))
    assert r.status_code in (200, 201), r.text
    meta = h.client.get("/dicom-web/studies/2.25.4242/metadata", headers=h.auth("researcher")).json()
    assert meta[0]["7FE00010"]["BulkDataURI"].endswith(f"/instances/{ds.SOPInstanceUID}")
