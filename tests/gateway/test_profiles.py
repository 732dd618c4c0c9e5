"""Deployment profiles (`gateway run --profile`): each refuses what its network forbids, and the one-way
profile really opens no socket: its de-identified output leaves only through the spool, which
`gateway relay` sends on to a real hub."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hub_process import make_inputs
from tests.live_hub import hub_in_thread
from typer.testing import CliRunner

from medcloud.config import load_settings
from medcloud.deid import SiteKey
from medcloud.errors import ConfigError
from medcloud.gateway.cli import app as gateway_app
from medcloud.gateway.profiles import NetworkChoices, apply_profile
from medcloud.hub.app import create_app
from medcloud.hub.state import HubState
from medcloud.security.tokens import issue_token

SRC = Path(__file__).resolve().parents[2] / "src"
CERT = dict(client_cert=Path("site.crt"), client_key=Path("site.key"))


@pytest.mark.parametrize(
    ("profile", "choices", "message"),
    [
        ("one-way", NetworkChoices("", dicom_port=11112, relay_dir=Path("s")), "listens on nothing"),
        ("one-way", NetworkChoices(""), "--relay-dir"),
        ("one-way", NetworkChoices("", relay_dir=Path("s"), proxy="http://p:3128"), "makes no connection"),
        ("vdi", NetworkChoices("https://hub", **CERT), "--proxy"),  # type: ignore[arg-type]
        ("vdi", NetworkChoices("https://hub", proxy="http://p:3128"), "mutual TLS"),
        ("vdi", NetworkChoices("http://hub", proxy="http://p:3128", **CERT), "https"),  # type: ignore[arg-type]
        ("vdi", NetworkChoices("https://hub", proxy="http://p", dicom_port=1, dicom_host="0.0.0.0", **CERT), "every"),  # type: ignore[arg-type]
        ("sase", NetworkChoices("https://hub"), "mutual TLS"),
        ("sase", NetworkChoices("https://hub", dicom_port=1, dicom_host="::", **CERT), "every interface"),  # type: ignore[arg-type]
        ("sase", NetworkChoices("https://hub", relay_dir=Path("s"), **CERT), "one-way"),  # type: ignore[arg-type]
        ("lan", NetworkChoices("https://hub"), "unknown profile"),
        (None, NetworkChoices("https://hub", relay_dir=Path("s")), "one-way"),
    ],
)
def test_profile_refuses_what_its_network_forbids(
    profile: str | None, choices: NetworkChoices, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        apply_profile(profile, choices)


def test_profiles_accept_their_own_network(tmp_path: Path) -> None:
    ok = NetworkChoices("https://hub", proxy="http://proxy:3128", dicom_port=11112, dicom_host="10.0.0.5", **CERT)  # type: ignore[arg-type]
    assert apply_profile("vdi", ok) == ok
    assert apply_profile("sase", NetworkChoices("https://hub", **CERT)).proxy is None  # type: ignore[arg-type]
    assert apply_profile("one-way", NetworkChoices("", relay_dir=tmp_path / "spool")).relay_dir == tmp_path / "spool"
    assert (tmp_path / "spool").is_dir()


def _inet_sockets(pid: int) -> list[tuple[str, str]]:
    """(protocol, state) of every TCP/UDP socket the process holds (state 0A is LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            cols = line.split()
            if cols[9] in inodes:
                found.append((proto, cols[3]))
    return found


def _gateway(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "medcloud.cli", "gateway", "run", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.mark.slow  # subprocesses: a few seconds on an idle machine
def test_one_way_opens_no_socket_and_the_relay_delivers(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    SiteKey.generate(key)
    watch = tmp_path / "incoming"
    make_inputs(watch, 3)
    spool = tmp_path / "spool"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLOUD_")}
    env["PYTHONPATH"] = str(SRC)
    common = ["--watch", str(watch), "--key-file", str(key), "--settle", "0", "--no-watchdog", "--poll", "0.2"]
    one_way = _gateway(
        [*common, "--profile", "one-way", "--relay-dir", str(spool), "--state", str(tmp_path / "s1")], env
    )
    try:
        deadline = time.monotonic() + 90
        while len(list(spool.glob("*.json"))) < 3:
            assert one_way.poll() is None, "one-way gateway exited"
            assert time.monotonic() < deadline, "one-way gateway spooled nothing"
            time.sleep(0.1)
        assert _inet_sockets(one_way.pid) == []  # not a listener, not a connection: nothing
    finally:
        _stop(one_way)
    # Control: the same look sees a listener and a connection where there are some.
    with socket.create_server(("127.0.0.1", 0)) as srv, socket.create_connection(srv.getsockname()):
        states = {st for _, st in _inet_sockets(os.getpid())}
        assert {"0A", "01"} <= states
    assert len(list(spool.glob("*.bin"))) == 3

    # The outer side: `gateway relay` sends the spool to a real hub; a tampered item is refused.
    extra = spool / ("0" * 64 + ".bin")
    extra.write_bytes(b"not what the name says")
    (spool / ("0" * 64 + ".json")).write_text('{"sha256": "' + "0" * 64 + '"}')
    settings = load_settings(data_dir=tmp_path / "hub")
    state = HubState.open(settings)
    try:
        token = issue_token(state.catalog, role="site", site="site-a", projects=["p"]).token
        with hub_in_thread(create_app(settings, state=state)) as url:
            result = CliRunner().invoke(
                gateway_app,
                [
                    "relay",
                    "--spool",
                    str(spool),
                    "--hub",
                    url,
                    "--token",
                    token,
                    "--state",
                    str(tmp_path / "relay"),
                    "--once",
                    "--poll",
                    "0.1",
                ],
            )
        assert result.exit_code == 2, result.output  # 2: the tampered item was refused
        assert '"delivered": 3' in result.output
        refs = list(state.catalog.query.blob_refs())
        assert len(refs) == 3 and all(state.blobs.exists(sha) for sha, _ in refs)
    finally:
        state.close()
    assert list(spool.glob("*.bin")) == [extra] and (spool / ("0" * 64 + ".json.bad")).exists()
