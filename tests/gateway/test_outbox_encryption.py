"""A gateway whose outbox is encrypted at rest still delivers the de-identified bytes themselves, batched,
one by one and streamed (security.envelope; tests/security has the at-rest checks)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from gateway_fakes import TOKEN, FakeDeid, FakeHub

from medcloud.gateway import forwarder
from medcloud.gateway.runner import Gateway, GatewayConfig
from medcloud.security.envelope import new_key_text


@pytest.mark.parametrize("batch", [True, False], ids=["batched", "single"])
def test_an_encrypted_outbox_delivers_the_plain_bytes(
    tmp_path: Path, fake_hub: FakeHub, fake_deid: FakeDeid, monkeypatch: pytest.MonkeyPatch, batch: bool
) -> None:
    monkeypatch.setattr(forwarder, "_STREAM_ABOVE", 100_000)  # the 200 KB file takes the streaming path
    key = tmp_path / "kek.hex"
    key.write_text(new_key_text())
    watch = tmp_path / "incoming"
    watch.mkdir()
    sources = {"small.dcm": b"image one", "large.dcm": os.urandom(200_000)}
    for name, data in sources.items():
        (watch / name).write_bytes(data)
    fake_hub.batch_enabled = batch
    cfg = GatewayConfig(
        hub_url=fake_hub.url, token=TOKEN, state_dir=tmp_path / "state", watch=watch, once=True,
        settle_seconds=0, backoff_cap=0.3, encryption_key_file=key,
    )  # fmt: skip
    gateway = Gateway(cfg, fake_deid)
    summary = gateway.run()
    gateway.close()
    assert summary.delivered == 2 and not summary.needs_attention
    assert sorted(fake_hub.stored.values()) == sorted(b"DEID:" + d for d in sources.values())
    db = sqlite3.connect(tmp_path / "state" / "keys.sqlite3")
    assert db.execute("SELECT count(*) FROM data_keys").fetchone()[0] == 1  # one data key per run
    db.close()
