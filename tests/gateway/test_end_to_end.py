"""Exactly once, for real: `medcloud hub serve` and `medcloud gateway run` subprocesses, killed with SIGKILL.

At-least-once delivery from the gateway's outbox plus an idempotent hub must leave every image at the hub
exactly once, whichever process dies and whenever.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_process import GatewayProcess, HubProcess, env, make_inputs, medcloud, wait_until

from medcloud.deid import Deidentifier, DeidOptions, SiteKey

N_FILES = 40
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubProcess]:
    h = HubProcess(tmp_path_factory.mktemp("hub") / "data").start()
    yield h
    h.stop()


@pytest.fixture(scope="module")
def researcher(hub: HubProcess) -> str:
    return hub.token("researcher")


@pytest.fixture(scope="module")
def site_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "site.key"
    SiteKey.generate(path)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_inputs(tmp_path_factory.mktemp("inputs") / "incoming", N_FILES)


def expected_shas(files: list[Path], key: Path) -> set[str]:
    """What the hub must end up holding: the keyed de-identification is deterministic."""
    deid = Deidentifier(SiteKey.load(key), DeidOptions())
    outs = [deid.deidentify_file(f) for f in files]
    assert all(o.quarantine_reason is None for o in outs)
    return {hashlib.sha256(o.data).hexdigest() for o in outs}


def gateway_args(hub_url: str, token_file: Path, watch: Path, key: Path, *extra: str) -> list[str]:
    return [
        "--hub",
        hub_url,
        "--token-file",
        str(token_file),
        "--watch",
        str(watch),
        "--key-file",
        str(key),
        # Small batches: many requests, so that a kill lands between (or inside) them.
        "--once",
        "--settle",
        "0",
        "--workers",
        "2",
        "--batch-size",
        "3",
        "--retry-cap",
        "0.5",
        *extra,
    ]


def write_token(path: Path, token: str) -> Path:
    path.write_text(token + "\n")
    path.chmod(0o600)
    return path


def assert_exactly_once(hub: HubProcess, researcher: str, site: str, expected: set[str], check_bytes: bool) -> None:
    items = hub.instances(researcher, site)
    shas = [i["sha256"] for i in items]
    uids = [i["sop_uid"] for i in items]
    assert len(items) == len(expected), f"{len(items)} instances at the hub for {len(expected)} files sent"
    assert len(set(uids)) == len(uids), "an instance arrived twice"
    assert set(shas) == expected, "the hub holds other bytes than the gateway de-identified"
    if check_bytes:
        for item in items:
            assert hashlib.sha256(hub.instance_bytes(researcher, item["sop_uid"])).hexdigest() == item["sha256"]


def gateway_status(state: Path) -> dict[str, int]:
    out = subprocess.run(
        medcloud("gateway", "status", "--state", str(state), "--json"), env=env(), capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode()
    counts: dict[str, int] = json.loads(out.stdout)["counts"]
    return counts


def test_gateway_killed_twice_mid_stream_delivers_each_image_exactly_once(
    hub: HubProcess, researcher: str, site_key: Path, inputs: list[Path], tmp_path: Path
) -> None:
    site = "KILLGW"
    token = write_token(tmp_path / "token", hub.token("site", site=site))
    state = tmp_path / "state"
    args = gateway_args(hub.url, token, inputs[0].parent, site_key, "--workers", "1")
    killed_at: list[int] = []
    for fraction in (0.2, 0.55):
        gw = GatewayProcess(state, args).start()
        threshold = int(N_FILES * fraction)
        wait_until(lambda g=gw, t=threshold: g.counts().get("delivered", 0) >= t, 40, f"{threshold} deliveries")
        gw.kill9()
        killed_at.append(gw.counts().get("delivered", 0))
    assert all(k < N_FILES for k in killed_at), f"the kills came too late to be mid-stream: {killed_at}"
    gw = GatewayProcess(state, args).start()
    assert gw.wait(60) == 0, gw.log.read_text()[-3000:]
    assert_exactly_once(hub, researcher, site, expected_shas(inputs, site_key), check_bytes=True)
    counts = gateway_status(state)
    assert (counts["delivered"], counts["queued"], counts["dead"], counts["rejected"]) == (N_FILES, 0, 0, 0)


def test_hub_down_at_start_then_killed_mid_stream_gets_each_image_exactly_once(
    site_key: Path, inputs: list[Path], tmp_path: Path
) -> None:
    site = "KILLHUB"
    hub = HubProcess(tmp_path / "hubdata")  # tokens are issued offline; the server is not up yet
    researcher = hub.token("researcher")
    token = write_token(tmp_path / "token", hub.token("site", site=site))
    state = tmp_path / "state"
    gw = GatewayProcess(state, gateway_args(hub.url, token, inputs[0].parent, site_key)).start()
    try:
        # Hub down at start: everything is de-identified into the outbox and waits there.
        wait_until(lambda: gw.counts().get("queued", 0) == N_FILES, 40, "all files queued")
        wait_until(lambda: "hub unavailable" in gw.log.read_text(), 20, "the gateway to notice the hub is down")
        assert gw.counts().get("delivered", 0) == 0 and gw.counts().get("dead", 0) == 0
        hub.start()
        wait_until(lambda: gw.counts().get("delivered", 0) >= N_FILES // 3, 40, "a third delivered")
        hub.kill9()
        at_kill = gw.counts()
        assert at_kill.get("delivered", 0) < N_FILES, f"the kill came too late: {at_kill}"
        hub.start()
        assert gw.wait(60) == 0, gw.log.read_text()[-3000:]
        assert "hub reachable again" in gw.log.read_text()
        assert_exactly_once(hub, researcher, site, expected_shas(inputs, site_key), check_bytes=False)
        assert gateway_status(state)["delivered"] == N_FILES
    finally:
        gw.stop()
        hub.stop()


def test_bad_input_is_reported_with_reasons_and_never_blocks_good_files(
    hub: HubProcess, researcher: str, tmp_path: Path
) -> None:
    import pydicom

    site_key = tmp_path / "site.key"  # each site has its own key (same key, same pseudonymous UIDs)
    SiteKey.generate(site_key)
    site = "BADINPUT"
    watch = tmp_path / "incoming"
    good = make_inputs(watch, 3, uid_root="2.25.27182818284590452353602874")
    real = good[0].read_bytes()
    (watch / "truncated.dcm").write_bytes(real[:700])  # preamble, DICM and a few header elements
    (watch / "referral-letter.txt").write_text("Dear colleague, Mr Yamada Taro ...\n")
    (watch / "huge.dcm").write_bytes(real + b"\0" * 700_000)
    secret = tmp_path / "outside" / "secret.dcm"
    secret.parent.mkdir()
    secret.write_bytes(real)
    (watch / "link.dcm").symlink_to(secret)
    us = pydicom.dcmread(good[1])
    us.Modality = "US"  # ultrasound without BurnedInAnnotation: quarantined, never forwarded
    us.SOPInstanceUID = us.file_meta.MediaStorageSOPInstanceUID = "2.25.27182818284590452353602874.99"
    us.save_as(watch / "us.dcm", enforce_file_format=False)

    token = write_token(tmp_path / "token", hub.token("site", site=site))
    state = tmp_path / "state"
    gw = GatewayProcess(state, gateway_args(hub.url, token, watch, site_key, "--max-file-bytes", "650000"))
    rc = gw.start().wait(60)
    log = gw.log.read_text()
    assert rc == 2, log[-3000:]
    assert "4 rejected file(s)" in log

    status = subprocess.run(
        medcloud("gateway", "status", "--state", str(state), "--json"), env=env(), capture_output=True, timeout=60
    )
    report = json.loads(status.stdout)
    c = report["counts"]
    assert (c["delivered"], c["rejected"], c["quarantined"], c["dead"], c["queued"]) == (3, 4, 1, 0, 0)
    reasons = {Path(r["path"]).name: r["reason"] for r in report["rejected"]}
    assert "malformed" in reasons["truncated.dcm"] or "invalid" in reasons["truncated.dcm"]
    assert "unsupported format" in reasons["referral-letter.txt"]
    assert "too large" in reasons["huge.dcm"]
    assert "path escapes the watched folder" in reasons["link.dcm"]
    assert report["quarantined"][0]["source"].endswith("us.dcm")
    assert len(hub.instances(researcher, site)) == 3

    wide = {**env(), "COLUMNS": "300"}
    human = subprocess.run(
        medcloud("gateway", "status", "--state", str(state)), env=wide, capture_output=True, timeout=60
    )
    assert human.returncode == 0
    text = human.stdout.decode()
    assert "rejected files" in text and "huge.dcm" in text and "file too large" in text
