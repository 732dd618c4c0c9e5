"""Group commit, killed for real: one-file uploads and one-instance STOW-RS requests from four clients
share durable commits; `medcloud hub serve` is killed with SIGKILL while they flow, and every
acknowledged instance must be there, bytes intact, after a restart.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import httpx
import pytest
from hub_process import HubProcess, wait_until
from tests.dicomweb.conftest import stow_body
from tests.hub.conftest import deidentified_dicom

pytestmark = pytest.mark.slow
CLIENTS = 4
PER_CLIENT = 40


def _client(hub: HubProcess, token: str, files: list[bytes], stow: bool, acked: dict[str, str],
            lock: threading.Lock) -> None:  # fmt: skip
    """Send `files` one per request until the hub dies; record what was acknowledged (SOP UID -> sha256)."""
    import io

    import pydicom

    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(timeout=30, headers=headers) as client:
        for data in files:
            sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
            try:
                if stow:
                    r = client.post(f"{hub.url}/dicom-web/studies", content=stow_body([data]),
                                    headers={"Content-Type": 'multipart/related; type="application/dicom"; '
                                             "boundary=dw-boundary"})  # fmt: skip
                    ok = r.status_code == 200 and len(r.json()["00081199"]["Value"]) == 1
                else:
                    r = client.post(f"{hub.url}/api/v1/ingest", content=data,
                                    headers={"Content-Type": "application/dicom"})  # fmt: skip
                    ok = r.status_code in (200, 201)
            except httpx.HTTPError:
                return  # the hub is gone: what was not acknowledged may or may not be stored
            if ok:
                with lock:
                    acked[sop] = hashlib.sha256(data).hexdigest()


def test_acknowledged_single_uploads_survive_kill9(tmp_path: Path) -> None:
    hub = HubProcess(tmp_path / "data")
    try:
        hub.start()
        site = hub.token("site", site="S1")
        reader = hub.token("researcher")
        files = [
            [deidentified_dicom(study_uid=f"2.25.77{c}", series_uid=f"2.25.77{c}.1") for _ in range(PER_CLIENT)]
            for c in range(CLIENTS)
        ]
        acked: dict[str, str] = {}
        lock = threading.Lock()
        threads = [threading.Thread(target=_client, args=(hub, site, files[c], c % 2 == 0, acked, lock))
                   for c in range(CLIENTS)]  # fmt: skip
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= CLIENTS * PER_CLIENT // 4, 120, "a quarter of the uploads acknowledged")
        hub.kill9()
        for t in threads:
            t.join(60)
        with lock:
            acknowledged = dict(acked)
        assert len(acknowledged) < CLIENTS * PER_CLIENT, "the kill came too late to land mid-stream"
        hub.start()
        stored = {row["sop_uid"]: row["sha256"] for row in hub.instances(reader, "S1")}
        missing = sorted(set(acknowledged) - set(stored))
        assert not missing, f"{len(missing)} acknowledged instances lost by kill -9, e.g. {missing[:3]}"
        for sop, sha in acknowledged.items():
            assert stored[sop] == sha
        # Bytes too, not only rows: every acknowledged instance reads back whole.
        for sop in list(acknowledged)[:20]:
            assert hashlib.sha256(hub.instance_bytes(reader, sop)).hexdigest() == acknowledged[sop]
        # And the stores still work: the rest of the uploads go in after the restart.
        rest = [d for fs in files for d in fs][:8]
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {site}"}) as c:
            for data in rest:
                r = c.post(f"{hub.url}/api/v1/ingest", content=data, headers={"Content-Type": "application/dicom"})
                assert r.status_code in (200, 201), r.text
    finally:
        hub.stop()
