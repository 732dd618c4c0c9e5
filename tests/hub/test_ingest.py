"""Ingest: stored once, replays idempotent, bad input refused with problem details and nothing half-written."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from tests.hub.conftest import Hub, deidentified_dicom


def _count_blobs(hub: Hub) -> int:
    return hub.state.blobs.count()


def _pack_bytes(hub: Hub) -> int:
    return sum(p.stat().st_size for p in hub.state.blobs.packs.folder.glob("*.pack"))


def _instances(hub: Hub) -> int:
    r = hub.client.get("/api/v1/instances", headers=hub.auth("researcher"))
    assert r.status_code == 200
    return int(r.json()["total"])


def test_dicom_is_stored_indexed_and_retrievable(hub: Hub, upload) -> None:
    data = deidentified_dicom()
    sha = hashlib.sha256(data).hexdigest()
    r = upload(data, X_Content_SHA256=sha, X_Medcloud_Filename="a.dcm")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["status"] == "stored" and body["sha256"] == sha and body["kind"] == "dicom"
    assert body["site"] == "site-a" and body["project"] == "lung"
    assert hub.state.blobs.read_bytes(sha) == data
    sop = body["sop_instance_uid"]
    r = hub.client.get(f"/api/v1/instances/{sop}/file", headers=hub.auth("researcher"))
    assert r.status_code == 200 and r.content == data
    assert r.headers["content-type"] == "application/dicom"
    assert pydicom.dcmread(io.BytesIO(r.content)).SOPInstanceUID == sop


def test_replay_is_idempotent_and_conflict_is_refused(hub: Hub, upload) -> None:
    data = deidentified_dicom()
    first = upload(data)
    again = upload(data)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert _instances(hub) == 1 and _count_blobs(hub) == 1
    # Same SOP Instance UID, different bytes: a conflict, and the stored file is untouched.
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SeriesDescription = "changed"
    buf = io.BytesIO()
    ds.save_as(buf)
    r = upload(buf.getvalue())
    assert r.status_code == 409
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/conflict")
    assert hub.state.blobs.read_bytes(first.json()["sha256"]) == data
    assert _instances(hub) == 1


@pytest.mark.parametrize(
    ("mutate", "status", "slug"),
    [
        (lambda d: d[: len(d) // 2], 400, "invalid-input"),  # truncated inside pixel data
        (lambda d: d[:200], 400, "invalid-input"),  # truncated inside the header
        (lambda d: d[:3000], 400, "invalid-input"),  # cut inside an element header: pydicom stops quietly
        (lambda d: b"not an image at all, just text" * 10, 415, "unsupported-format"),
        (lambda d: b"\x00" * 128 + b"DICM" + b"\xff" * 64, 400, "invalid-input"),  # garbage after magic
        (lambda d: b"", 400, "invalid-input"),
    ],
)
def test_bad_files_are_refused_and_nothing_is_left(hub: Hub, upload, mutate, status: int, slug: str) -> None:
    good = deidentified_dicom()
    assert upload(good).status_code == 201
    before, packed = _count_blobs(hub), _pack_bytes(hub)
    r = upload(mutate(deidentified_dicom()))
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["type"].endswith(slug) and problem["status"] == status and problem["detail"]
    assert _count_blobs(hub) == before and _pack_bytes(hub) == packed
    assert list(hub.state.blobs.incoming.iterdir()) == []
    assert _instances(hub) == 1


def test_checksum_mismatch_means_truncated_upload(hub: Hub, upload) -> None:
    data = deidentified_dicom()
    r = upload(data, X_Content_SHA256=hashlib.sha256(data + b"x").hexdigest())
    assert r.status_code == 400 and "X-Content-SHA256" in r.json()["detail"]
    assert _count_blobs(hub) == 0
    assert upload(data, X_Content_SHA256="xyz").status_code == 400


def test_oversized_upload_is_refused(hub: Hub, upload) -> None:
    big = deidentified_dicom() + b"\x00" * 5_000_001
    r = upload(big)
    assert r.status_code == 413 and r.json()["type"].endswith("too-large")
    assert _count_blobs(hub) == 0 and list(hub.state.blobs.incoming.iterdir()) == []


def test_identifying_dicom_is_refused(hub: Hub, upload) -> None:
    ds = pydicom.dcmread(io.BytesIO(deidentified_dicom()))
    del ds.PatientIdentityRemoved
    buf = io.BytesIO()
    ds.save_as(buf)
    r = upload(buf.getvalue())
    assert r.status_code == 400 and "not de-identified" in r.json()["detail"]


def test_site_is_taken_from_the_token(hub: Hub, upload) -> None:
    r = upload(deidentified_dicom(), X_Medcloud_Site="site-b")
    assert r.status_code == 403
    # site-b holds two projects: it must name one, and only one it holds.
    assert upload(deidentified_dicom(), who="site_b").status_code == 400
    assert upload(deidentified_dicom(), who="site_b", X_Medcloud_Project="heart").status_code == 403
    r = upload(deidentified_dicom(), who="site_b", X_Medcloud_Project="brain")
    assert r.status_code == 201 and r.json()["project"] == "brain" and r.json()["site"] == "site-b"


def test_same_study_from_another_site_conflicts(hub: Hub, upload) -> None:
    study = "2.25.1234567"
    assert upload(deidentified_dicom(study_uid=study)).status_code == 201
    r = upload(deidentified_dicom(study_uid=study), who="site_b", X_Medcloud_Project="lung")
    assert r.status_code == 409


def _png(text_chunk: bool = False) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 50, 50)).save(buf, format="PNG")
    return buf.getvalue()


def test_images_are_stored_once_and_truncation_is_caught(hub: Hub, upload, tmp_path: Path) -> None:
    png = _png()
    r = upload(png, X_Medcloud_Filename="../../etc/smear.png")
    assert r.status_code == 201, r.text
    img_id = r.json()["image_id"]
    assert upload(png).json()["status"] == "duplicate"
    meta = hub.client.get(f"/api/v1/images/{img_id}", headers=hub.auth("researcher")).json()
    assert (meta["width"], meta["height"], meta["media_type"]) == (32, 24, "image/png")
    assert meta["filename"] == "smear.png"  # path parts never kept
    got = hub.client.get(f"/api/v1/images/{img_id}/file", headers=hub.auth("researcher"))
    assert got.content == png
    jpg = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 10, 200)).save(jpg, format="JPEG")
    assert upload(jpg.getvalue()[:-40]).status_code == 400
    assert upload(png[:-20]).status_code == 400
    r = upload(jpg.getvalue())
    assert r.status_code == 201 and r.json()["media_type"] == "image/jpeg"


def test_tiff_truncation_is_caught(hub: Hub, upload) -> None:
    import numpy as np
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((64, 64, 3), dtype=np.uint8) + 7)
    data = buf.getvalue()
    assert upload(data[: len(data) - 4000]).status_code == 400
    r = upload(data)
    assert r.status_code == 201 and r.json()["media_type"] == "image/tiff"


def test_concurrent_single_uploads_share_one_commit(hub: Hub, monkeypatch) -> None:
    """Leader/follower group commit: uploads that arrive while a commit runs go in the next one together."""
    import threading
    import time

    store = hub.state.blobs
    real = store.stage_many
    calls: list[int] = []

    def slow_stage(uploads, *, durable=True):
        calls.append(len(uploads))
        if len(calls) == 1:
            time.sleep(0.3)  # the first leader is slow; the others queue meanwhile
        return real(uploads, durable=durable)

    monkeypatch.setattr(store, "stage_many", slow_stage)
    files = [deidentified_dicom() for _ in range(6)]
    results: dict[int, object] = {}

    def one(i: int) -> None:
        up = store.spool(10**8)
        up.write(files[i])
        try:
            results[i] = hub.state.ingestor.ingest(up, site="site-a", project="lung", subject="t", client="c")
        except Exception as exc:  # reported by the assertion below
            results[i] = exc

    first = threading.Thread(target=one, args=(0,))
    first.start()
    time.sleep(0.1)
    others = [threading.Thread(target=one, args=(i,)) for i in range(1, 6)]
    for t in others:
        t.start()
    for t in [first, *others]:
        t.join()
    assert all(getattr(r, "status", None) == "stored" for r in results.values()), results
    assert calls == [1, 5], calls
    assert _instances(hub) == 6 and hub.state.catalog.audit.verify().ok
    assert all(store.read_bytes(hashlib.sha256(f).hexdigest()) == f for f in files)
