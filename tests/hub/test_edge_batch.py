"""Batch uploads at the edge (issue 10, items 11 and 12): a batch must close, and each part is judged alone."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from tests.hub.conftest import Hub, deidentified_dicom
from tests.hub.test_batch import multipart, post_batch


def _chunked(body: bytes, size: int = 4096) -> Iterator[bytes]:
    """The body as a generator: httpx sends it chunked, with no Content-Length."""
    for i in range(0, len(body), size):
        yield body[i : i + size]


def _instances(hub: Hub) -> int:
    return int(hub.client.get("/api/v1/instances", headers=hub.auth("researcher")).json()["total"])


@pytest.mark.parametrize("cut", ["before-close", "inside-last-part"])
def test_chunked_batch_without_closing_boundary_is_refused(hub: Hub, cut: str) -> None:
    """11: a chunked batch with no closing multipart boundary was accepted (the streaming parser never checked)."""
    files = [deidentified_dicom() for _ in range(3)]
    body, ctype = multipart([(f, {}) for f in files])
    boundary = ctype.rsplit("=", 1)[1].encode()
    closing = b"--" + boundary + b"--\r\n"
    assert body.endswith(closing)
    cut_body = body[: -len(closing)] if cut == "before-close" else body[: len(body) - len(files[-1]) // 2]
    r = hub.client.post(
        "/api/v1/ingest/batch", content=_chunked(cut_body), headers={**hub.auth("site_a"), "Content-Type": ctype}
    )
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "closing boundary" in r.json()["detail"]
    assert _instances(hub) == 0 and hub.state.blobs.count() == 0
    assert list(hub.state.blobs.incoming.iterdir()) == []
    # The same files, with the batch closed, are stored: the refusal was about the cut alone.
    r = hub.client.post(
        "/api/v1/ingest/batch", content=_chunked(body), headers={**hub.auth("site_a"), "Content-Type": ctype}
    )
    assert r.status_code == 200 and r.json()["stored"] == 3


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_a_part_with_a_malformed_checksum_fails_alone(hub: Hub, streamed: bool) -> None:
    """12: one part with a malformed X-Content-SHA256 failed the whole batch; the docs say each part is judged alone."""
    if streamed:
        hub.state.settings.batch_memory_bytes = 100
    good = [deidentified_dicom() for _ in range(2)]
    parts = [
        (good[0], {"X-Content-SHA256": hashlib.sha256(good[0]).hexdigest()}),
        (deidentified_dicom(), {"X-Content-SHA256": "not-a-digest", "X-Medcloud-Filename": "odd.dcm"}),
        (good[1], {}),
    ]
    body, ctype = multipart(parts)
    r = post_batch(hub, body, ctype)
    assert r.status_code == 200, r.text
    out = r.json()
    assert (out["stored"], out["duplicate"], out["failed"]) == (2, 0, 1)
    bad = out["items"][1]
    assert bad["status"] == "failed" and bad["filename"] == "odd.dcm"
    assert bad["problem"]["status"] == 400 and "X-Content-SHA256" in bad["problem"]["detail"]
    assert _instances(hub) == 2 and list(hub.state.blobs.incoming.iterdir()) == []
    refused = [
        e
        for e in hub.client.get("/api/v1/audit?action=ingest&limit=100", headers=hub.auth("auditor")).json()["items"]
        if e["outcome"].startswith("refused:")
    ]
    assert [e["resource"] for e in refused] == ["upload/odd.dcm"]


def test_a_part_refused_while_received_is_audited(hub: Hub) -> None:
    """5: an oversized part failed alone but left no audit event."""
    big = deidentified_dicom() + b"\0" * 5_000_001
    body, ctype = multipart([(big, {"X-Medcloud-Filename": "big.dcm"}), (deidentified_dicom(), {})])
    out = post_batch(hub, body, ctype).json()
    assert out["items"][0]["problem"]["status"] == 413 and out["items"][1]["status"] == "stored"
    events = hub.client.get("/api/v1/audit?action=ingest&limit=100", headers=hub.auth("auditor")).json()["items"]
    assert [e["outcome"] for e in events if e["resource"] == "upload/big.dcm"] == ["refused:413:too-large"]
