"""Real processes on 127.0.0.1 with TLS: `medcloud fl server` (SuperLink), `medcloud fl site`
(SuperNodes) and `medcloud fl submit` (`flwr run`). CKKS FedAvg, two rounds, with SuperNode
authentication opted out (`--no-supernode-auth`); and SuperNode authentication (the default with
TLS): `fl site-key`, `fl enroll`, enrolled sites run a plaintext FedAvg, intruders are refused.
A throwaway CA signs the SuperLink's certificate. Every process started here, and every process
they start, is killed at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("tenseal")
pytest.importorskip("sklearn")

MEDCLOUD = Path(sys.executable).with_name("medcloud")
N_SITES = 2
ROUNDS = 2


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        ports = [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
    assert 8000 not in ports  # the hub's default port stays free
    return ports


def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, state) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


def _family(roots: set[int]) -> set[int]:
    """`roots`, their descendants, and everything in their sessions (Flower detaches its SuperExec
    into a new session, and an orphaned SuperExec keeps the session of the SuperNode that started it)."""
    table = _proc_table()
    family = set(roots)
    changed = True
    while changed:
        sessions = set(family)
        grown = {pid for pid, (ppid, sid, _) in table.items() if ppid in family or sid in sessions}
        changed = not grown <= family
        family |= grown
    return {pid for pid in family if pid in table and table[pid][2] != "Z"}


class Processes:
    """Started in their own process groups; `stop` kills the groups and every descendant by pid."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        roots = {p.pid for _, p in self.procs}
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _family(roots):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 5
            for _, p in self.procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=max(0.1, deadline - time.monotonic()))
            while _family(roots) - roots and time.monotonic() < deadline:
                time.sleep(0.1)
        self.leftover = sorted(_family(roots))


def _wait_for_log(procs: Processes, name: str, needle: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in procs.log(name):
            return
        proc = dict(procs.procs)[name]
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}:\n{procs.log(name)[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"{name} did not log {needle!r} within {timeout}s:\n{procs.log(name)[-3000:]}")


def _plain_fedavg(n_sites: int, rounds: int, local_epochs: int, lr: float) -> np.ndarray:
    from medcloud.federated import tabular
    from medcloud.federated.he import PlaintextBackend
    from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg

    def trainer(site: tabular.SiteData) -> Callable[[np.ndarray], np.ndarray]:
        return lambda w: tabular.local_train(w, site, local_epochs, lr)

    sites = [FedAvgSite(s.name, PlaintextBackend(), trainer(s), s.n_train) for s in tabular.load_sites(n_sites)]
    model, _ = run_fedavg(FedAvgAggregator(PlaintextBackend()), sites, np.zeros(tabular.n_params()), rounds)
    return decode_plain(model.payload)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_superlink_supernodes_tls_ckks_match_plaintext(tmp_path: Path) -> None:
    if not MEDCLOUD.exists():
        pytest.skip("the medcloud console script is not installed next to this Python")
    from medcloud.federated.certs import write_dev_ca
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.keys import KeyPaths, aggregator_backend, site_backend
    from medcloud.federated.simulate import ceremony, site_names

    t_start = time.monotonic()
    certs = write_dev_ca(tmp_path / "certs")
    keys = tmp_path / "keys"
    names = site_names(N_SITES)
    link_port, *ports = _free_ports(N_SITES + 2)
    superlink = f"127.0.0.1:{link_port}"
    env = dict(os.environ)
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")  # never the user's ~/.flwr
    env["PATH"] = os.pathsep.join([str(MEDCLOUD.parent), env.get("PATH", "")])
    env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"  # Flower's default 1 s poll, per message
    (tmp_path / "logs").mkdir()
    procs = Processes(env, tmp_path / "logs")
    srv = tmp_path / "srv"
    try:
        procs.start(
            "superlink",
            [str(MEDCLOUD), "fl", "server", "--public", str(keys / "public"), "--mode", "ckks",
             "--sites", str(N_SITES), "--rounds", str(ROUNDS), "--workdir", str(srv),
             "--certs", str(tmp_path / "certs"), "--port", str(link_port), "--no-supernode-auth"],
        )  # fmt: skip
        # The key ceremony runs while the SuperLink starts; the SuperLink reads keys only once a run starts.
        ceremony("ckks", keys, names)
        for i, name in enumerate(names):
            procs.start(
                name,
                [str(MEDCLOUD), "fl", "site", "--site", name, "--site-index", str(i), "--site-dir", str(keys / name),
                 "--public", str(keys / "public"), "--superlink", superlink, "--ca", str(certs["ca.crt"]),
                 "--port", str(ports[i])],
            )  # fmt: skip
        # A site that speaks plaintext HTTP to the TLS SuperLink never gets in.
        rogue = procs.start(
            "plaintext-site",
            [str(MEDCLOUD.with_name("flower-supernode")), "--insecure", "--superlink", superlink,
             "--max-retries", "1", "--max-wait-time", "5", "--port", str(ports[-1])],
        )  # fmt: skip
        _wait_for_log(procs, "superlink", f"running on https://127.0.0.1:{link_port}", 30)
        for name in names:
            _wait_for_log(procs, name, "SuperNode ID", 30)
        submit = procs.start(
            "submit",
            [str(MEDCLOUD), "fl", "submit", "--workdir", str(srv), "--superlink", superlink,
             "--ca", str(certs["ca.crt"]), "--run-config", "evaluate=false"],
        )  # fmt: skip
        remaining = 85 - (time.monotonic() - t_start)
        try:
            rc = submit.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not finish:\n{procs.log('submit')[-3000:]}\n{procs.log('superlink')[-3000:]}")
        assert rc == 0, procs.log("submit")[-3000:]
        assert rogue.wait(timeout=20) != 0
        assert "could not establish a connection" in procs.log("plaintext-site")
        card_path = srv / "model" / "model_card.json"
        assert card_path.is_file(), procs.log("submit")[-3000:]
    finally:
        procs.stop()
    assert procs.leftover == [], "processes survived the test"

    card = json.loads(card_path.read_text())
    assert card["mode"] == "ckks" and card["rounds"] == ROUNDS
    assert card["sites"] == names and card["model_readable_by_aggregator"] is False
    events = [json.loads(line) for line in (srv / "audit.jsonl").read_text().splitlines()]
    assert [e["detail"]["round"] for e in events] == list(range(1, ROUNDS + 1))
    assert all(sorted(e["detail"]["bytes_up"]) == names and min(e["detail"]["bytes_up"].values()) > 0 for e in events)
    blob = (srv / "model" / "model.ciphertext").read_bytes()
    # The aggregator's own (public) context cannot open what it aggregated; a site's can.
    agg = aggregator_backend("ckks", keys / "public")
    from medcloud.federated.he import NoSecretKey

    with pytest.raises(NoSecretKey):
        agg.decrypt(agg.deserialize(blob))
    site = site_backend("ckks", KeyPaths(names[0], keys / names[0], keys / "public"))
    w_fl = site.decrypt(site.deserialize(blob)) / card["total_weight"]
    s = FLSettings()
    w_plain = _plain_fedavg(N_SITES, ROUNDS, s.local_epochs, s.lr)
    assert w_fl.shape == w_plain.shape
    assert np.max(np.abs(w_fl - w_plain)) < 1e-5
    assert np.max(np.abs(w_plain)) > 0.1  # the comparison is not between two zero vectors


def _flwr_nodes(env: dict[str, str]) -> list[dict[str, str]]:
    """`flwr supernode list --format json` against the connection file `medcloud fl enroll` wrote."""
    out = subprocess.run(
        [str(MEDCLOUD.with_name("flwr")), "supernode", "list", "medcloud", "--format", "json"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    nodes: list[dict[str, str]] = json.loads(out.stdout)["nodes"]
    return nodes


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_supernode_auth_only_enrolled_sites_join(tmp_path: Path) -> None:
    """SuperLink with TLS and SuperNode auth (the default): two sites whose keys the hub enrolled run
    a plaintext FedAvg to the end; a SuperNode with a key never enrolled, and one with no key, are
    refused at activation, never become nodes of the SuperLink and never receive a task."""
    if not MEDCLOUD.exists():
        pytest.skip("the medcloud console script is not installed next to this Python")
    from medcloud.federated.certs import SUPERNODE_PUB, write_dev_ca
    from medcloud.federated.simulate import site_names

    t_start = time.monotonic()
    certs = write_dev_ca(tmp_path / "certs")
    ca = str(certs["ca.crt"])
    keys = tmp_path / "keys"
    names = site_names(N_SITES)
    rogues = ["unenrolled", "keyless"]
    link_port, *ports = _free_ports(N_SITES + len(rogues) + 1)
    superlink = f"127.0.0.1:{link_port}"
    env = dict(os.environ)
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")  # never the user's ~/.flwr
    env["PATH"] = os.pathsep.join([str(MEDCLOUD.parent), env.get("PATH", "")])
    env["FLWR_SUPEREXEC_TASK_POLL_INTERVAL"] = "0.2"
    (tmp_path / "logs").mkdir()
    procs = Processes(env, tmp_path / "logs")
    srv = tmp_path / "srv"
    fl = [str(MEDCLOUD), "fl"]

    def site_args(name: str, i: int) -> list[str]:
        return [*fl, "site", "--site", name, "--site-index", str(i), "--site-dir", str(keys / name), "--public",
                str(keys / "public"), "--superlink", superlink, "--ca", ca, "--port", str(ports[i])]  # fmt: skip

    def finish(name: str, timeout: float = 30) -> int:
        return dict(procs.procs)[name].wait(timeout=timeout)

    try:
        # No --supernode-auth: with TLS it is the default.
        procs.start(
            "superlink",
            [*fl, "server", "--public", str(keys / "public"), "--mode", "plain", "--sites", str(N_SITES),
             "--rounds", "1", "--workdir", str(srv), "--certs", str(tmp_path / "certs"), "--port", str(link_port)],
        )  # fmt: skip
        # Each site makes its key pair in its own secret folder, the unenrolled intruder too.
        for name in [*names, "unenrolled"]:
            procs.start(f"key-{name}", [*fl, "site-key", "--site", name, "--site-dir", str(keys / name)])
        for name in [*names, "unenrolled"]:
            assert finish(f"key-{name}") == 0, procs.log(f"key-{name}")
        _wait_for_log(procs, "superlink", f"running on https://127.0.0.1:{link_port}", 30)
        assert "--enable-supernode-auth" in procs.log("superlink")
        # The hub enrolls the public keys the sites handed over (not the intruder's).
        for name in names:
            procs.start(
                f"enroll-{name}",
                [*fl, "enroll", "--workdir", str(srv), "--superlink", superlink, "--ca", ca,
                 "--public-key", str(keys / name / SUPERNODE_PUB)],
            )  # fmt: skip
        enrolled = {}
        for name in names:
            assert finish(f"enroll-{name}") == 0, procs.log(f"enroll-{name}")
            words = procs.log(f"enroll-{name}").split("SuperNode ", 1)[1].split()
            assert words[1:3] == ["registered", "successfully."], procs.log(f"enroll-{name}")
            enrolled[name] = words[0]
        for i, name in enumerate(names):
            procs.start(name, site_args(name, i))
        procs.start("unenrolled", site_args("unenrolled", N_SITES))  # finds its (never enrolled) key
        procs.start("keyless", [*site_args("keyless", N_SITES + 1), "--no-node-auth"])
        for name in names:
            _wait_for_log(procs, name, "SuperNode ID", 30)
        submit = procs.start(
            "submit", [*fl, "submit", "--workdir", str(srv), "--superlink", superlink, "--ca", ca,
                       "--run-config", "evaluate=false"],
        )  # fmt: skip
        # While the run goes on: the intruders gave up (refused), and the SuperLink lists only the enrolled.
        assert finish("unenrolled") != 0 and finish("keyless") != 0
        nodes = _flwr_nodes(env)
        try:
            rc = submit.wait(timeout=85 - (time.monotonic() - t_start))
        except subprocess.TimeoutExpired:
            pytest.fail(f"the run did not finish:\n{procs.log('submit')[-3000:]}\n{procs.log('superlink')[-3000:]}")
        assert rc == 0, procs.log("submit")[-3000:]
    finally:
        procs.stop()
    assert procs.leftover == [], "processes survived the test"

    # The refusals are the SuperLink's, at activation: an unknown key (Flower's error 2004), and
    # self-registration, which SuperNode auth disables (2001).
    assert "[code: 2004] Failed to activate SuperNode" in procs.log("unenrolled"), procs.log("unenrolled")[-3000:]
    assert "[code: 2001] SuperNode authentication is enabled" in procs.log("keyless"), procs.log("keyless")[-3000:]
    # The SuperLink knows exactly the enrolled nodes, both online, and no other; each site is the node
    # its key was enrolled as.
    assert sorted(n["node-id"] for n in nodes) == sorted(enrolled.values())
    assert all(n["status"] == "online" for n in nodes), nodes
    for name in names:
        assert f"SuperNode ID: {enrolled[name]}" in procs.log(name)
    card = json.loads((srv / "model" / "model_card.json").read_text())
    assert card["mode"] == "plain" and card["rounds"] == 1 and card["sites"] == names
    events = [json.loads(line) for line in (srv / "audit.jsonl").read_text().splitlines()]
    assert [sorted(e["detail"]["bytes_up"]) for e in events] == [names]
    for rogue in rogues:  # no task ever reached them: no ClientApp ran there
        assert "flwr-clientapp" not in procs.log(rogue) and "[RUN" not in procs.log(rogue)


@pytest.mark.slow
@pytest.mark.timeout(180)  # four CLI processes and two SuperLink starts; slow on a loaded 2-core machine
def test_enrolments_survive_a_superlink_restart(tmp_path: Path) -> None:
    """The issue: "SuperLink enrolments are lost on restart". `fl server` keeps the SuperLink's state
    in WORKDIR/superlink.db, so a node enrolled before a restart is still known after it."""
    if not MEDCLOUD.exists():
        pytest.skip("the medcloud console script is not installed next to this Python")
    from medcloud.federated.certs import SUPERNODE_PUB, write_dev_ca

    certs = write_dev_ca(tmp_path / "certs")
    ca = str(certs["ca.crt"])
    (link_port,) = _free_ports(1)
    superlink = f"127.0.0.1:{link_port}"
    env = dict(os.environ)
    env["FLWR_HOME"] = str(tmp_path / "flwr-home")
    env["PATH"] = os.pathsep.join([str(MEDCLOUD.parent), env.get("PATH", "")])
    (tmp_path / "logs").mkdir()
    procs = Processes(env, tmp_path / "logs")
    srv = tmp_path / "srv"
    fl = [str(MEDCLOUD), "fl"]
    server = [*fl, "server", "--public", str(tmp_path / "public"), "--mode", "plain", "--sites", "1",
              "--workdir", str(srv), "--certs", str(tmp_path / "certs"), "--port", str(link_port)]  # fmt: skip
    try:
        first = procs.start("superlink", server)
        assert procs.start("key", [*fl, "site-key", "--site", "A", "--site-dir", str(tmp_path / "A")]).wait(30) == 0
        _wait_for_log(procs, "superlink", f"running on https://127.0.0.1:{link_port}", 30)
        enroll = [*fl, "enroll", "--workdir", str(srv), "--superlink", superlink, "--ca", ca,
                  "--public-key", str(tmp_path / "A" / SUPERNODE_PUB)]  # fmt: skip
        assert procs.start("enroll", enroll).wait(30) == 0, procs.log("enroll")
        node_id = procs.log("enroll").split("SuperNode ", 1)[1].split()[0]
        assert [n["node-id"] for n in _flwr_nodes(env)] == [node_id]
        # Stop the SuperLink (its whole process group) and start it again on the same workdir.
        os.killpg(first.pid, signal.SIGTERM)
        first.wait(timeout=20)
        assert (srv / "superlink.db").is_file()
        procs.start("superlink-again", server)
        _wait_for_log(procs, "superlink-again", f"running on https://127.0.0.1:{link_port}", 30)
        assert [n["node-id"] for n in _flwr_nodes(env)] == [node_id]
    finally:
        procs.stop()
    assert procs.leftover == [], "processes survived the test"
