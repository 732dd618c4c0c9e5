"""C-STORE receiver: instances pushed over DIMSE go through the same de-identification and outbox."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gateway_fakes import TOKEN, FakeHub, free_port
from hub_process import make_inputs

from medcloud.deid import Deidentifier, DeidOptions, SiteKey
from medcloud.gateway.runner import Gateway, GatewayConfig


def test_cstore_instances_are_deidentified_queued_and_forwarded_once(tmp_path: Path, fake_hub: FakeHub) -> None:
    pynetdicom = pytest.importorskip("pynetdicom")
    import pydicom

    files = make_inputs(tmp_path / "src", 12, uid_root="2.25.16180339887498948482045868")
    key = SiteKey.generate(tmp_path / "site.key")
    cfg = GatewayConfig(
        hub_url=fake_hub.url,
        token=TOKEN,
        state_dir=tmp_path / "state",
        dicom_port=free_port(),
        ae_title="MEDCLOUD",
        calling_aets=["CT01"],
        backoff_cap=0.3,
        status_every=60,
    )
    gateway = Gateway(cfg, Deidentifier(key, DeidOptions()))
    runner = threading.Thread(target=gateway.run, daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while gateway.scp is None or gateway.scp._server is None:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.02)
        datasets = [pydicom.dcmread(f) for f in files]
        ae = pynetdicom.AE(ae_title="CT01")
        for ds in datasets:
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        statuses: list[int] = []
        for _round in range(2):  # the second round is a resend: answered Success, not stored twice
            assoc = ae.associate("127.0.0.1", cfg.dicom_port or 0, ae_title="MEDCLOUD")
            assert assoc.is_established
            statuses += [int(assoc.send_c_store(ds).Status) for ds in datasets]
            assoc.release()
        assert statuses == [0] * 24

        stranger = pynetdicom.AE(ae_title="UNKNOWN")
        stranger.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
        refused = stranger.associate("127.0.0.1", cfg.dicom_port or 0, ae_title="MEDCLOUD")
        assert not refused.is_established, "only the configured calling AE titles may send"

        deadline = time.monotonic() + 15
        while gateway.outbox.counts().delivered < 12:
            assert time.monotonic() < deadline, gateway.outbox.counts()
            time.sleep(0.05)
        assert gateway.scp.nodelay_sockets >= 2, "TCP_NODELAY set on each association"
    finally:
        gateway.request_stop()
        runner.join(15)
        gateway.close()
    assert len(fake_hub.stored) == 12
    originals = {str(ds.SOPInstanceUID) for ds in datasets}
    for body in fake_hub.stored.values():
        stored = pydicom.dcmread(__import__("io").BytesIO(body))
        assert str(stored.SOPInstanceUID) not in originals, "UIDs were remapped before forwarding"
        assert stored.PatientIdentityRemoved == "YES"
