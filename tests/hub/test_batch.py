"""Batch ingest (multipart/related): each part judged alone, one durability barrier, every part audited."""

from __future__ import annotations

import hashlib
import uuid

from tests.hub.conftest import Hub, deidentified_dicom


def multipart(parts: list[tuple[bytes, dict[str, str]]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks = []
    for data, headers in parts:
        head = "".join(f"{k}: {v}\r\n" for k, v in {"Content-Type": "application/dicom", **headers}.items())
        chunks.append(f"--{boundary}\r\n{head}\r\n".encode() + data + b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def post_batch(hub: Hub, body: bytes, ctype: str, who: str = "site_a"):
    return hub.client.post("/api/v1/ingest/batch", content=body, headers={**hub.auth(who), "Content-Type": ctype})


def test_batch_stores_good_parts_and_reports_bad_ones(hub: Hub) -> None:
    good = [deidentified_dicom() for _ in range(5)]
    truncated = deidentified_dicom()[:3000]
    mismatch = deidentified_dicom()
    parts = [(g, {"X-Content-SHA256": hashlib.sha256(g).hexdigest(), "X-Medcloud-Filename": f"g{i}.dcm"})
             for i, g in enumerate(good)]  # fmt: skip
    parts += [
        (truncated, {"X-Medcloud-Filename": "cut.dcm"}),
        (mismatch, {"X-Content-SHA256": "0" * 64}),
        (b"plain text", {"Content-Type": "text/plain"}),
        (good[0], {}),  # replay inside the same batch
    ]
    body, ctype = multipart(parts)
    r = post_batch(hub, body, ctype)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["stored"], out["duplicate"], out["failed"]) == (5, 1, 3)
    items = out["items"]
    assert [i["index"] for i in items] == list(range(9))
    assert all(i["status"] == "stored" for i in items[:5])
    assert items[5]["problem"]["status"] == 400 and "truncated" in items[5]["problem"]["detail"]
    assert "X-Content-SHA256" in items[6]["problem"]["detail"]
    assert items[7]["problem"]["status"] == 415
    assert items[8]["status"] == "duplicate"
    for g, item in zip(good, items, strict=False):
        assert hub.state.blobs.read_bytes(item["sha256"]) == g
    assert list(hub.state.blobs.incoming.iterdir()) == []
    # Replaying the whole batch stores nothing new.
    again = post_batch(hub, body, ctype).json()
    assert (again["stored"], again["duplicate"], again["failed"]) == (0, 6, 3)
    total = hub.client.get("/api/v1/instances", headers=hub.auth("researcher")).json()["total"]
    assert total == 5
    events = hub.client.get("/api/v1/audit?action=ingest&limit=1000", headers=hub.auth("auditor")).json()["items"]
    assert len(events) == 18  # every part of both batches, refusals included
    assert sum(e["outcome"].startswith("refused:") for e in events) == 6
    assert hub.state.catalog.audit.verify().ok


def test_oversized_part_fails_alone(hub: Hub) -> None:
    good = deidentified_dicom()
    big = deidentified_dicom() + b"\0" * 5_000_001
    body, ctype = multipart([(big, {}), (good, {})])
    out = post_batch(hub, body, ctype).json()
    assert out["items"][0]["problem"]["status"] == 413 and out["items"][1]["status"] == "stored"


def test_batch_refusals(hub: Hub) -> None:
    body, ctype = multipart([(deidentified_dicom(), {})])
    assert post_batch(hub, body, ctype, who="researcher").status_code == 403
    assert hub.client.post("/api/v1/ingest/batch", content=body, headers={"Content-Type": ctype}).status_code == 401
    r = post_batch(hub, body, "application/dicom")
    assert r.status_code == 415
    r = post_batch(hub, b"--x\r\ngarbage", "multipart/related; boundary=x")
    assert r.status_code == 400
    empty, ectype = multipart([])
    assert post_batch(hub, empty, ectype).status_code == 400
    assert list(hub.state.blobs.incoming.iterdir()) == []


def test_streamed_and_in_memory_parsing_agree(hub: Hub) -> None:
    """Bodies over `batch_memory_bytes` are parsed as they stream; smaller ones in memory. Same answers."""
    good = [deidentified_dicom() for _ in range(3)]
    parts = [(g, {"X-Content-SHA256": hashlib.sha256(g).hexdigest(), "X-Medcloud-Filename": f"s{i}.dcm"})
             for i, g in enumerate(good)]  # fmt: skip
    parts += [(b"plain text", {"Content-Type": "text/plain"}), (good[0], {})]
    body, ctype = multipart(parts)
    fast = post_batch(hub, body, ctype).json()
    hub.state.settings.batch_memory_bytes = 100  # force the streaming parser
    replay = post_batch(hub, body, ctype).json()
    assert [i["status"] for i in fast["items"]] == ["stored"] * 3 + ["failed", "duplicate"]
    assert [i["status"] for i in replay["items"]] == ["duplicate"] * 3 + ["failed", "duplicate"]
    assert [i.get("sha256") for i in fast["items"]] == [i.get("sha256") for i in replay["items"]]
    assert [i.get("filename") for i in fast["items"]] == [i.get("filename") for i in replay["items"]]
    late = deidentified_dicom()
    body2, ctype2 = multipart([(late, {"X-Medcloud-Filename": "late.dcm"})])
    streamed = post_batch(hub, body2, ctype2).json()
    assert streamed["stored"] == 1 and hub.state.blobs.read_bytes(streamed["items"][0]["sha256"]) == late


def test_malformed_bodies_are_refused_in_memory(hub: Hub) -> None:
    body, ctype = multipart([(deidentified_dicom(), {})])
    boundary = ctype.rsplit("=", 1)[1]
    cases = [
        body[: len(body) // 2],  # cut: no closing boundary (Content-Length matches what is sent)
        body.replace(b"\r\n\r\n", b"\r\n", 1),  # headers never end
        body.replace(f"--{boundary}\r\n".encode(), f"--{boundary}junk\r\n".encode(), 1),
        b"no boundary here at all",
    ]
    for bad in cases:
        r = post_batch(hub, bad, ctype)
        assert r.status_code == 400, (bad[:80], r.text)
        assert r.json()["detail"].startswith("malformed multipart body")
    assert hub.client.get("/api/v1/instances", headers=hub.auth("researcher")).json()["total"] == 0
    assert list(hub.state.blobs.incoming.iterdir()) == []
