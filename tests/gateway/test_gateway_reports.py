"""`medcloud gateway reports`: a Shift_JIS RIS export and images, de-identified and linked at a real hub."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import httpx
import pydicom
import pytest
from hub_process import HubProcess, env, medcloud
from pydicom.data import get_testdata_file

from medcloud.deid import Deidentifier, DeidOptions, SiteKey
from medcloud.deid.reports import DeidReport
from medcloud.errors import InvalidInput
from medcloud.gateway.reports import HubUnavailable, send_reports

REPORT = "山田太郎様 右上葉に結節を認める。気胸なし。令和6年3月1日と比較。連絡先 03-1234-5678"


def _original_image(folder: Path) -> Path:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.PatientID = "0012345678"
    ds.PatientName = "YAMADA^TARO"
    ds.AccessionNumber = "A240401001"
    ds.StudyInstanceUID = "1.2.392.200036.9116.2.6.1.48.1214834115.1711929600.1"
    ds.StudyDate = "20240401"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.slow
def test_gateway_reports_links_a_shift_jis_export_to_the_images_at_a_real_hub(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "hub").start()
    try:
        site_token = tmp_path / "site.token"
        site_token.write_text(hub.token("site", site="site-a"))
        researcher = hub.token("researcher")
        key = tmp_path / "site.key"
        SiteKey.generate(key)
        image = _original_image(tmp_path / "images")
        # The image goes the gateway's way: de-identified with the site key, then uploaded.
        deid = Deidentifier(SiteKey.load(key), DeidOptions(retain_longitudinal_modified_dates=True))
        out = deid.deidentify_file(image)
        r = httpx.post(f"{hub.url}/api/v1/ingest", content=out.data,
                       headers={"Authorization": f"Bearer {site_token.read_text()}"}, timeout=30)  # fmt: skip
        assert r.status_code == 201, r.text
        study_uid = pydicom.dcmread(io.BytesIO(out.data)).StudyInstanceUID

        export = tmp_path / "ris.csv"
        row = f"A240401001,0012345678,山田 太郎,20240401,{REPORT}"
        export.write_bytes(f"受付番号,患者ID,患者氏名,検査日,所見\r\n{row}\r\n".encode("cp932"))
        args = ["gateway", "reports", str(export), "--hub", hub.url, "--token-file", str(site_token),
                "--key-file", str(key), "--images", str(tmp_path / "images")]  # fmt: skip
        done = subprocess.run(medcloud(*args), env=env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "1 stored" in done.stdout
        again = subprocess.run(medcloud(*args), env=env(), capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "1 already there" in again.stdout, again.stdout + again.stderr

        auth = {"Authorization": f"Bearer {researcher}"}
        got = httpx.get(f"{hub.url}/api/v1/studies/{study_uid}/reports", headers=auth, timeout=30).json()
        (item,) = got["items"]
        for needle in ("山田", "太郎", "03-1234-5678", "令和6年", "0012345678", "A240401001"):
            assert needle not in item["text"]
        assert {"code": "pneumothorax", "status": "absent"} in item["findings"]
        study = httpx.get(f"{hub.url}/api/v1/studies/{study_uid}", headers=auth, timeout=30).json()
        assert item["date"] == study["study_date"]  # the same keyed shift as the image's StudyDate
        found = httpx.get(f"{hub.url}/api/v1/studies", params={"finding": "nodule:present"}, headers=auth, timeout=30)
        assert [s["study_uid"] for s in found.json()["items"]] == [study_uid]
    finally:
        hub.stop()


def test_gateway_reports_without_a_link_skips_and_exits_2(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    SiteKey.generate(key)
    export = tmp_path / "ris.csv"
    export.write_text("accession,patient_id,report\nA1,P1,No nodule.\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        medcloud("gateway", "reports", str(export), "--key-file", str(key), "--out", str(out)),
        env=env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "skipped ris.csv:2" in done.stderr and "accession index" in done.stderr
    assert out.read_text() == ""
    bad = subprocess.run(medcloud("gateway", "reports", str(export), "--key-file", str(key)), env=env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert bad.returncode != 0 and "nothing to do" in bad.stderr and "Traceback" not in bad.stderr


def _reports(n: int) -> list[DeidReport]:
    return [DeidReport(f"2.25.{i + 1}", "MC" + "A" * 16, "No nodule.", None, source=f"r:{i}") for i in range(n)]


def test_send_retries_unavailable_hub_then_succeeds() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("refused")
        if len(calls) == 2:
            return httpx.Response(503, headers={"Retry-After": "0"})
        n = len(json.loads(request.content))
        return httpx.Response(201, json={"items": [{"index": i, "status": "stored"} for i in range(n)]})

    waits: list[float] = []
    client = httpx.Client(base_url="http://hub.invalid", transport=httpx.MockTransport(handler))
    summary = send_reports(client, _reports(3), sleep=waits.append, backoff_base=0.01)
    assert summary.stored == 3 and len(calls) == 3 and waits[1] == 0.0


def test_send_gives_up_after_attempts_and_does_not_retry_refusals() -> None:
    client = httpx.Client(base_url="http://hub.invalid", transport=httpx.MockTransport(lambda r: httpx.Response(502)))
    with pytest.raises(HubUnavailable):
        send_reports(client, _reports(1), sleep=lambda s: None, attempts=3)
    calls: list[int] = []

    def refuse(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"detail": "report 0: study_uid is not a remapped UID"})

    client = httpx.Client(base_url="http://hub.invalid", transport=httpx.MockTransport(refuse))
    with pytest.raises(InvalidInput, match="not a remapped UID"):
        send_reports(client, _reports(1), sleep=lambda s: None)
    assert len(calls) == 1
