"""The long-running gateway picks up files that appear later, by file-system events or by polling."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from gateway_fakes import TOKEN, FakeDeid, FakeHub
from typer.testing import CliRunner

from medcloud.gateway.cli import app
from medcloud.gateway.runner import Gateway, GatewayConfig


@pytest.mark.parametrize("use_watchdog", [True, False], ids=["events", "polling"])
def test_files_arriving_later_are_sent(
    tmp_path: Path, fake_hub: FakeHub, fake_deid: FakeDeid, use_watchdog: bool
) -> None:
    watch = tmp_path / "incoming"
    watch.mkdir()
    (watch / "early.dcm").write_bytes(b"there before start")
    cfg = GatewayConfig(
        hub_url=fake_hub.url,
        token=TOKEN,
        state_dir=tmp_path / "state",
        watch=watch,
        settle_seconds=0.2,
        use_watchdog=use_watchdog,
        poll_seconds=0.2,
        backoff_cap=0.3,
        status_every=60,
    )
    gateway = Gateway(cfg, fake_deid)
    runner = threading.Thread(target=gateway.run, daemon=True)
    runner.start()
    try:
        time.sleep(0.3)
        sub = watch / "study1"
        sub.mkdir()
        with (sub / "late.dcm").open("wb") as fh:  # written in two steps, like a slow copy
            fh.write(b"arrived ")
            fh.flush()
            time.sleep(0.1)
            fh.write(b"later")
        deadline = time.monotonic() + 10
        while len(fake_hub.stored) < 2:
            assert time.monotonic() < deadline, f"stored {len(fake_hub.stored)}"
            time.sleep(0.05)
    finally:
        gateway.request_stop()
        runner.join(10)
        gateway.close()
    assert sorted(fake_hub.stored.values()) == [b"DEID:arrived later", b"DEID:there before start"]
    assert fake_deid.calls.count("late.dcm") == 1, "a file is read once, after it is complete"


def test_cli_status_json_and_retry_dead(tmp_path: Path, fake_hub: FakeHub, fake_deid: FakeDeid) -> None:
    import json

    watch = tmp_path / "incoming"
    watch.mkdir()
    (watch / "a.dcm").write_bytes(b"image")
    (watch / "b.txt").write_bytes(b"TXT not an image")
    fake_hub.batch_enabled = False
    cfg = GatewayConfig(
        hub_url=fake_hub.url,
        token="revoked",
        state_dir=tmp_path / "state",
        watch=watch,
        once=True,
        settle_seconds=0,
        backoff_cap=0.3,
    )
    gateway = Gateway(cfg, fake_deid)
    summary = gateway.run()
    gateway.close()
    assert summary.needs_attention and summary.dead == 1 and summary.rejected == 1

    cli = CliRunner()
    out = cli.invoke(app, ["status", "--state", str(tmp_path / "state"), "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.output)
    assert report["counts"]["dead"] == 1 and report["counts"]["rejected"] == 1
    assert "HTTP 401" in report["dead"][0]["last_error"]
    assert report["running_pid"] is None

    out = cli.invoke(app, ["retry-dead", "--state", str(tmp_path / "state")])
    assert out.exit_code == 0 and "1 dead letter(s) queued again" in out.output
    cfg.token = TOKEN
    gateway = Gateway(cfg, fake_deid)
    gateway.run()
    gateway.close()
    assert list(fake_hub.stored.values()) == [b"DEID:image"]

    out = cli.invoke(app, ["status", "--state", str(tmp_path / "nowhere")])
    assert out.exit_code != 0
