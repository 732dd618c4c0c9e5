"""STOW-RS: multipart/related application/dicom through the ingest pipeline, PS3.18 response dataset."""

from __future__ import annotations

import io
from typing import Any

import pydicom
import pytest

from medcloud.dicomweb.stow import CANNOT_UNDERSTAND, PROCESSING_FAILURE, SOP_CLASS_MISMATCH
from tests.dicomweb.conftest import LUNG_CT, Seeded, dicom_file, stow_body
from tests.hub.conftest import Hub

CT = "2.25.3001"


def _post(h: Hub, body: bytes, path: str = "/dicom-web/studies", who: str = "site_a",
          ctype: str = 'multipart/related; type="application/dicom"; boundary=dw-boundary') -> Any:  # fmt: skip
    return h.client.post(path, content=body, headers={**h.auth(who), "Content-Type": ctype})


def _sop(data: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID)


def _count(h: Hub, study: str) -> int:
    r = h.client.get(f"/dicom-web/studies/{study}/instances", headers=h.auth("researcher"))
    return len(r.json()) if r.status_code == 200 else 0


def test_store_many_instances_answers_referenced_sop_sequence(hub: Hub) -> None:
    files = [dicom_file(study_uid=CT, series_uid=CT + ".1") for _ in range(3)]
    r = _post(hub, stow_body(files))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/dicom+json")
    body = r.json()
    assert "00081198" not in body  # FailedSOPSequence only when something failed
    assert body["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{CT}")
    refs = body["00081199"]["Value"]
    assert [ref["00081155"]["Value"][0] for ref in refs] == [_sop(f) for f in files]
    for ref, f in zip(refs, files, strict=True):
        assert ref["00081150"] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}
        assert ref["00081190"]["Value"][0].endswith(f"/studies/{CT}/series/{CT}.1/instances/{_sop(f)}")
    assert _count(hub, CT) == 3
    # The same request again is idempotent: all referenced, nothing failed.
    again = _post(hub, stow_body(files))
    assert again.status_code == 200 and len(again.json()["00081199"]["Value"]) == 3


def test_quoted_boundary_and_transfer_syntax_parameter(hub: Hub) -> None:
    body = stow_body([dicom_file(study_uid=CT)], boundary="a:b=c")
    ctype = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; boundary="a:b=c"'
    r = _post(hub, body, ctype=ctype)
    assert r.status_code == 200, r.text


def test_store_into_a_study_refuses_instances_of_other_studies(hub: Hub) -> None:
    ours, theirs = dicom_file(study_uid=CT), dicom_file(study_uid="2.25.3002")
    r = _post(hub, stow_body([theirs]), path=f"/dicom-web/studies/{CT}")
    assert r.status_code == 409, r.text
    failed = r.json()["00081198"]["Value"]
    assert failed[0]["00081155"]["Value"] == [_sop(theirs)]
    assert failed[0]["00081197"] == {"vr": "US", "Value": [PROCESSING_FAILURE]}
    assert r.json()["00081199"] == {"vr": "SQ"}
    r = _post(hub, stow_body([ours, theirs]), path=f"/dicom-web/studies/{CT}")
    assert r.status_code == 202, r.text
    assert [x["00081155"]["Value"][0] for x in r.json()["00081199"]["Value"]] == [_sop(ours)]
    assert _count(hub, CT) == 1 and _count(hub, "2.25.3002") == 0  # nothing of the other study stored
    events = hub.client.get("/api/v1/audit?limit=100&action=dicomweb.store", headers=hub.auth("auditor")).json()
    assert [e["outcome"] for e in events["items"]] == ["refused:409:study-mismatch"] * 2
    assert events["items"][0]["resource"] == f"instance/{_sop(theirs)}"


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    return buf.getvalue()


def _identified() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom_file(study_uid=CT)))
    ds.PatientIdentityRemoved = "NO"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _no_pixels() -> bytes:
    ds = pydicom.dcmread(io.BytesIO(dicom_file(study_uid=CT)))
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_identified, PROCESSING_FAILURE),  # not de-identified: the same refusal as /api/v1/ingest
        (_no_pixels, SOP_CLASS_MISMATCH),  # a CT image object without pixel data
        (lambda: b"not dicom at all", CANNOT_UNDERSTAND),
        (lambda: _png(), CANNOT_UNDERSTAND),  # ingest stores images; STOW-RS must not
        (lambda: dicom_file(study_uid=CT)[:-300], CANNOT_UNDERSTAND),  # truncated inside the pixel data
    ],
)
def test_failed_instances_get_failure_reasons_and_the_rest_is_stored(hub: Hub, bad: Any, reason: int) -> None:
    good, data = dicom_file(study_uid=CT), bad()
    r = _post(hub, stow_body([good, data]))
    assert r.status_code == 202, r.text
    body = r.json()
    assert [x["00081155"]["Value"][0] for x in body["00081199"]["Value"]] == [_sop(good)]
    [failed] = body["00081198"]["Value"]
    assert failed["00081197"] == {"vr": "US", "Value": [reason]}
    assert _count(hub, CT) == 1
    r = _post(hub, stow_body([data]))
    assert r.status_code == 409 and "00081199" in r.json()
    # Every refused part is audited, whether the pipeline or STOW-RS itself refused it.
    ingest = hub.client.get("/api/v1/audit?limit=100&action=ingest", headers=hub.auth("auditor")).json()["items"]
    stow = hub.client.get("/api/v1/audit?limit=100&action=dicomweb.store", headers=hub.auth("auditor")).json()
    refused = [e for e in ingest + stow["items"] if e["outcome"].startswith("refused:")]
    assert len(refused) == 2


def test_a_uid_taken_by_another_project_is_a_failure_not_a_500(hub: Hub, seeded: Seeded) -> None:
    data = dicom_file(study_uid=LUNG_CT)  # a lung study; site_c stores only into brain
    r = _post(hub, stow_body([data]), who="site_c")
    assert r.status_code == 409
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [PROCESSING_FAILURE]


@pytest.mark.parametrize(
    ("ctype", "body", "status"),
    [
        ("application/dicom", b"x", 415),
        ('multipart/related; type="application/dicom+json"; boundary=dw-boundary', stow_body([b"x"]), 415),
        ('multipart/related; type="application/dicom"', stow_body([b"x"]), 415),  # no boundary
        ('multipart/related; type="application/dicom"; boundary=dw-boundary', b"--dw-boundary--\r\n", 400),
        ('multipart/related; type="application/dicom"; boundary=dw-boundary', b"no boundary here", 400),
        ('multipart/related; type="application/dicom"; boundary=dw-boundary', stow_body([b"x"])[:-20], 400),
        ('multipart/related; type="application/dicom; boundary=dw-boundary', stow_body([b"x"]), 400),
    ],
)
def test_malformed_requests(hub: Hub, ctype: str, body: bytes, status: int) -> None:
    r = _post(hub, body, ctype=ctype)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"


def test_only_site_tokens_store_and_only_into_their_projects(hub: Hub) -> None:
    body = stow_body([dicom_file(study_uid=CT)])
    assert _post(hub, body, who="researcher").status_code == 403
    assert hub.client.post("/dicom-web/studies", content=body).status_code == 401
    r = hub.client.post("/dicom-web/studies", content=body, headers={
        **hub.auth("site_a"), "Content-Type": 'multipart/related; type="application/dicom"; boundary=dw-boundary',
        "X-Medcloud-Project": "brain"})  # fmt: skip
    assert r.status_code == 403
    assert _post(hub, body, who="site_b").status_code == 400  # two projects: name one
    assert _count(hub, CT) == 0


def test_a_large_or_chunked_body_is_received_on_disk_not_in_memory(hub: Hub) -> None:
    # With a 1 KiB budget every request spills: the body to a mapped file, each part to its own spool.
    object.__setattr__(hub.state.settings, "batch_memory_bytes", 1024)
    files = [dicom_file(study_uid=CT, series_uid=CT + ".1") for _ in range(3)]
    r = _post(hub, stow_body(files))
    assert r.status_code == 200, r.text
    assert len(r.json()["00081199"]["Value"]) == 3
    more = [dicom_file(study_uid=CT, series_uid=CT + ".1") for _ in range(2)]
    body = stow_body(more)

    def chunked() -> Any:  # no Content-Length: the hub cannot know the size in advance
        for i in range(0, len(body), 10_000):
            yield body[i : i + 10_000]

    r = hub.client.post(
        "/dicom-web/studies",
        content=chunked(),
        headers={
            **hub.auth("site_a"),
            "Content-Type": 'multipart/related; type="application/dicom"; boundary=dw-boundary',
        },
    )
    assert r.status_code == 200, r.text
    assert _count(hub, CT) == 5
    incoming = hub.state.blobs.incoming
    assert incoming.is_dir() and not list(incoming.glob("*.stow"))  # the spilled body is gone


def test_an_unreadable_part_is_not_stored_into_a_named_study(hub: Hub) -> None:
    r = _post(hub, stow_body([dicom_file(study_uid=CT), b"garbage"]), path=f"/dicom-web/studies/{CT}")
    assert r.status_code == 202, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [CANNOT_UNDERSTAND]


def test_a_file_naming_its_study_twice_is_stored_only_into_the_study_its_reader_finds(hub: Hub) -> None:
    """The study check of /studies/{study} reads the UIDs only up to (0020,000E); the ingest reader takes
    the last StudyInstanceUID of the file, and the pipeline refuses the file when that is another study."""
    from tests.formats.dicom_builders import _el, part10

    def sr(sop: str, *studies: bytes) -> bytes:  # a Basic Text SR (no pixel data), synthetic
        ds = (
            _el(8, 0x16, b"UI", b"1.2.840.10008.5.1.4.1.1.88.11")
            + _el(8, 0x18, b"UI", sop.encode())
            + _el(0x12, 0x62, b"CS", b"YES")
            + _el(0x20, 0x0D, b"UI", studies[0])
            + _el(0x20, 0x0E, b"UI", b"2.25.3")
        )
        later = b"".join(_el(0x20, 0x0D, b"UI", s) for s in studies[1:])  # after (0020,0010), out of order
        return part10(ds + _el(0x20, 0x10, b"SH", b"1") + later, sop=sop)  # fmt: skip

    r = _post(hub, stow_body([sr("2.25.70", b"2.25.2", b"2.25.99")]), path="/dicom-web/studies/2.25.2")
    assert r.status_code == 409, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"] == {"vr": "US", "Value": [PROCESSING_FAILURE]}
    assert _count(hub, "2.25.99") == 0 and _count(hub, "2.25.2") == 0
    # The same file naming its study once is stored: the refusal above is the second name's.
    r = _post(hub, stow_body([sr("2.25.71", b"2.25.2")]), path="/dicom-web/studies/2.25.2")
    assert r.status_code == 200, r.text
    assert _count(hub, "2.25.2") == 1


@pytest.mark.parametrize("spill", [False, True])
@pytest.mark.parametrize("bad", [_identified, _no_pixels])
def test_a_part_the_pipeline_refuses_is_named_in_the_answer_and_the_audit(hub: Hub, bad: Any, spill: bool) -> None:
    """A part sent to /studies is read once, by the ingest reader; one the pipeline refuses is still named
    by its UIDs (in FailedSOPSequence and in its audit event), read from its bytes in memory or spilled."""
    if spill:  # every part spills to its own file, the body too
        object.__setattr__(hub.state.settings, "batch_memory_bytes", 1024)
    good, data = dicom_file(study_uid=CT, series_uid=CT + ".1"), bad()
    r = _post(hub, stow_body([good, data]))
    assert r.status_code == 202, r.text
    [failed] = r.json()["00081198"]["Value"]
    assert failed["00081150"] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}
    assert failed["00081155"] == {"vr": "UI", "Value": [_sop(data)]}
    [ref] = r.json()["00081199"]["Value"]  # the stored one, named by its ingest record
    assert ref["00081150"] == {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]}
    assert ref["00081155"] == {"vr": "UI", "Value": [_sop(good)]}
    assert ref["00081190"]["Value"][0].endswith(f"/studies/{CT}/series/{CT}.1/instances/{_sop(good)}")
    events = hub.client.get("/api/v1/audit?limit=100&action=ingest", headers=hub.auth("auditor")).json()["items"]
    refused = [e for e in events if e["outcome"].startswith("refused:")]
    assert [e["resource"] for e in refused] == [f"upload/{_sop(data)}"]
    stored = [e for e in events if e["outcome"] == "stored"]
    assert [e["resource"] for e in stored] == [f"instance/{_sop(good)}"]


def test_an_unreadable_refused_part_is_named_as_a_stow_part(hub: Hub) -> None:
    cut = dicom_file(study_uid=CT)[:200]  # inside the file meta: no UID can be read
    r = _post(hub, stow_body([cut]))
    assert r.status_code == 409, r.text
    [failed] = r.json()["00081198"]["Value"]
    assert failed["00081155"] == {"vr": "UI"} and failed["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    events = hub.client.get("/api/v1/audit?limit=100&action=ingest", headers=hub.auth("auditor")).json()["items"]
    assert [e["resource"] for e in events if e["outcome"].startswith("refused:")] == ["upload/stow-part"]


def test_stow_is_served_by_the_plain_endpoint_with_the_same_checks_and_audit(hub: Hub) -> None:
    """POST is matched by the plain Starlette endpoint (no FastAPI dependency solving); its refusals are
    those of the `Storer` dependency, answered as problem details and audited; other methods and the API
    description are the documented routes'."""
    from starlette.routing import Match

    from medcloud.hub.routes.dicomweb import _stow_endpoint

    for path in ("/dicom-web/studies", f"/dicom-web/studies/{CT}"):  # routes are tried in this order
        scope = {"type": "http", "method": "POST", "path": path, "root_path": ""}
        first = next(r for r in hub.client.app.router.routes if r.matches(scope)[0] == Match.FULL)
        assert getattr(first, "endpoint", None) is _stow_endpoint
    body = stow_body([dicom_file(study_uid=CT)])
    ctype = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=dw-boundary'}
    assert hub.client.post("/dicom-web/studies", content=body, headers=ctype).status_code == 401
    wrong = {"Authorization": "Bearer " + hub.tokens["site_a"][:-4] + "AAAA", **ctype}  # a wrong secret
    r = hub.client.post(f"/dicom-web/studies/{CT}", content=body, headers=wrong)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    r = _post(hub, body, who="researcher")
    assert r.status_code == 403 and r.headers["content-type"] == "application/problem+json"
    assert r.headers["cache-control"] == "no-store" and "content-security-policy" in r.headers
    events = hub.client.get("/api/v1/audit?limit=100", headers=hub.auth("auditor")).json()["items"]
    refused = [(e["action"], e["outcome"]) for e in events if e["outcome"].startswith("refused:")]
    assert refused == [
        ("POST /dicom-web/studies", "refused:401:unauthenticated"),
        (f"POST /dicom-web/studies/{CT}", "refused:401:unauthenticated"),
        ("POST /dicom-web/studies", "refused:403:forbidden"),
    ]
    assert _count(hub, CT) == 0
    r = hub.client.put("/dicom-web/studies", headers=hub.auth("site_a"))
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"
    doc = hub.client.get("/api/v1/openapi.json", headers=hub.auth("admin")).json()
    assert "post" in doc["paths"]["/dicom-web/studies"] and "post" in doc["paths"]["/dicom-web/studies/{study}"]
