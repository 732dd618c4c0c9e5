"""Threshold mode through the OpenFHE sidecar (`he.bridge`): OpenFHE runs in a CPython 3.10 child,
this interpreter (3.11, with Flower) sees opaque bytes. Skipped where no 3.10 with openfhe is found."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

PARTIES = ["a", "b", "c"]
PARTIES_SIM = ["site1", "site2", "site3"]


def _sidecar_or_skip() -> None:
    from medcloud.federated.he.bridge import sidecar_available

    why = sidecar_available()
    if why:
        pytest.skip(f"no OpenFHE sidecar interpreter: {why}")


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def _wait_dead(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _dead(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 3-of-3 threshold key made through the sidecar, the sites' and the aggregator's backends."""
    _sidecar_or_skip()
    from medcloud.federated.he.bridge import ThresholdBridge, openfhe_importable, threshold_keygen
    from medcloud.federated.keys import KeyPaths, aggregator_backend, confirm_each_other, site_backend

    root = tmp_path_factory.mktemp("bridge")
    paths = {s: KeyPaths(s, root / s, root / "public") for s in PARTIES}
    confirm_each_other(list(paths.values()))  # identities and fingerprints first (one operator here)
    for s in PARTIES:
        threshold_keygen(paths[s], PARTIES)
    sites = [site_backend("threshold", paths[s]) for s in PARTIES]
    agg = aggregator_backend("threshold", root / "public")
    if not openfhe_importable():  # 3.11: keys.py hands out the bridge, not an in-process backend
        assert all(isinstance(b, ThresholdBridge) for b in [*sites, agg])
    yield {"paths": paths, "public": root / "public", "sites": sites, "agg": agg}
    for b in [*sites, agg]:
        getattr(b, "close", lambda: None)()


def test_bridge_encrypt_sum_partial_fuse_matches_plaintext(keys: dict[str, Any]) -> None:
    from medcloud.federated.he import PlaintextBackend
    from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg

    sites, agg = keys["sites"], keys["agg"]
    assert agg.slots == 4096 and all(s.holds_share for s in sites) and not agg.holds_share
    rng = np.random.default_rng(3)
    n = agg.slots + 10  # two chunks
    vecs = [rng.normal(size=n) for _ in sites]
    uploads = [s.serialize(s.encrypt(v)) for s, v in zip(sites, vecs, strict=True)]
    assert all(isinstance(u, bytes) and u.startswith(b"MCHE1") for u in uploads)
    summed = agg.sum_serialized(uploads)
    shares = [s.partial_decrypt(s.deserialize(summed)) for s in sites]
    assert np.max(np.abs(agg.fuse(shares) - sum(vecs))) < 1e-5
    # The Ciphertext API works too (add/sum are sums of frames in the child).
    total = agg.add(agg.deserialize(uploads[0]), agg.sum([agg.deserialize(u) for u in uploads[1:]]))
    assert total.length == n
    shares = [s.partial_decrypt(total) for s in sites]
    assert np.max(np.abs(agg.fuse(shares) - sum(vecs))) < 1e-5
    # And the transport-free protocol runs on bridges exactly as on in-process backends.
    targets = [rng.normal(size=40) for _ in PARTIES]

    def toward(target: np.ndarray) -> Any:
        return lambda w: w + 0.5 * (target - w)  # a contraction toward the site's optimum

    def fedavg_sites(backends: list[Any]) -> list[FedAvgSite]:
        return [
            FedAvgSite(name, be, toward(t), k)
            for name, be, t, k in zip(PARTIES, backends, targets, [10, 30, 60], strict=True)
        ]

    w0 = np.zeros(40)
    plain, _ = run_fedavg(FedAvgAggregator(PlaintextBackend()), fedavg_sites([PlaintextBackend()] * 3), w0, 3)
    enc, stats = run_fedavg(FedAvgAggregator(agg), fedavg_sites(sites), w0, 3)
    assert np.max(np.abs(decode_plain(enc.payload) - decode_plain(plain.payload))) < 1e-5
    assert all(len(st.share_bytes) == 3 for st in stats)


def test_aggregator_bridge_holds_no_secret(keys: dict[str, Any]) -> None:
    from medcloud.federated.he import NoSecretKey

    sites, agg = keys["sites"], keys["agg"]
    if hasattr(agg, "sidecar"):
        assert len(agg.sidecar._init[1]) == 2  # context and joint public key: no share went to its child
        assert agg.ping()["holds_share"] is False
    ct = agg.deserialize(sites[0].serialize(sites[0].encrypt(np.arange(5.0))))
    with pytest.raises(NoSecretKey, match="holds no key share"):
        agg.partial_decrypt(ct)  # raised in the child, re-raised here as the same class
    with pytest.raises(NoSecretKey):
        agg.decrypt(ct)
    with pytest.raises(NoSecretKey):
        sites[0].decrypt(ct)  # one share alone cannot decrypt either


def test_corrupt_bytes_and_refusals_come_back_as_heerror(keys: dict[str, Any]) -> None:
    from medcloud.federated.he import HEError
    from medcloud.federated.he.base import frame

    sites, agg = keys["sites"], keys["agg"]
    pid = getattr(getattr(agg, "sidecar", None), "pid", None)
    garbage = frame("threshold", 10, [os.urandom(200)])  # a valid frame around bytes OpenFHE cannot read
    with pytest.raises(HEError, match="corrupt OpenFHE ciphertext"):
        sites[0].partial_decrypt(sites[0].deserialize(garbage))
    good = sites[0].serialize(sites[0].encrypt(np.ones(10)))
    with pytest.raises(HEError, match="truncated"):
        agg.sum_serialized([good, good[:-5]])
    with pytest.raises(HEError, match="different ciphertexts"):
        agg.fuse([good])  # a ciphertext is not a decryption share
    with pytest.raises(HEError, match="all parties"):
        agg.fuse([s.partial_decrypt(s.deserialize(good)) for s in sites[:2]])
    with pytest.raises(HEError, match="depth"):
        agg.mul_scalar(agg.deserialize(good), 2.0)  # the default key has depth 0
    with pytest.raises(HEError, match="bad magic"):
        agg.deserialize(b"not a ciphertext")
    if pid is not None:
        from medcloud.federated.he.bridge import Sidecar

        assert agg.sidecar.pid == pid  # errors are answers: the child is still the same one
        with pytest.raises(ValueError, match=r"unknown bridge request 'no-such-op' \(in the OpenFHE sidecar\)"):
            agg.sidecar.request({"op": "no-such-op"})
        side = Sidecar()
        try:
            with pytest.raises(HEError, match="was not given its keys"):
                side.request({"op": "sum"}, [good, good])
        finally:
            side.close()


def test_bridge_is_thread_safe(keys: dict[str, Any]) -> None:
    sites, agg = keys["sites"], keys["agg"]
    rng = np.random.default_rng(9)
    vecs = [rng.normal(size=50) for _ in range(8)]
    with ThreadPoolExecutor(4) as pool:
        blobs = list(pool.map(lambda v: sites[1].serialize(sites[1].encrypt(v)), vecs))
    summed = agg.sum_serialized(blobs)
    with ThreadPoolExecutor(3) as pool:
        shares = list(pool.map(lambda s: s.partial_decrypt(s.deserialize(summed)), sites))
    assert np.max(np.abs(agg.fuse(shares) - sum(vecs))) < 1e-5


def test_child_exits_when_the_client_closes_or_dies(keys: dict[str, Any]) -> None:
    _sidecar_or_skip()
    from medcloud.federated.he.bridge import ThresholdBridge, find_python310

    public = keys["public"]
    context, joint = (public / "threshold.context").read_bytes(), (public / "threshold.joint.pk").read_bytes()
    bridge = ThresholdBridge(context, joint)
    first = bridge.sidecar.pid
    assert first is not None and not _dead(first)
    bridge.close()  # closes the child's stdin: it exits at end of input
    assert _wait_dead(first)
    assert bridge.ping()["pid"] != first  # the next call starts a new child, with the keys loaded again
    second = bridge.sidecar.pid
    assert second is not None
    del bridge  # garbage collection stops it too
    assert _wait_dead(second)
    # A parent that dies without cleaning up (os._exit) takes its child with it (stdin reaches EOF).
    code = (
        "import os, sys\n"
        "from medcloud.federated.he.bridge import Sidecar\n"
        f"s = Sidecar({find_python310()!r})\n"
        "s._live()\n"
        "print(s.pid, flush=True)\n"
        "os._exit(0)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert _wait_dead(int(run.stdout.strip()))


def test_no_interpreter_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from medcloud.errors import ConfigError
    from medcloud.federated.he import bridge

    monkeypatch.setenv(bridge.ENV_PY310, str(tmp_path / "no-python"))
    bridge.find_python310.cache_clear()
    try:
        with pytest.raises(ConfigError, match=r"MEDCLOUD_PY310=.*\.venv310.*openfhe"):
            bridge.find_python310()
    finally:
        monkeypatch.delenv(bridge.ENV_PY310)
        bridge.find_python310.cache_clear()


def _plain_fedavg(rounds: int, n_sites: int, participants: list[list[str]]) -> np.ndarray:
    """Plaintext FedAvg of the breast-cancer task with the simulation's defaults (5 epochs, lr 0.5)."""
    from medcloud.federated import tabular

    data = tabular.load_sites(n_sites)
    w = np.zeros(tabular.n_params())
    for r in range(rounds):
        chosen = [d for i, d in enumerate(data) if f"site{i + 1}" in participants[r]]
        w = sum(d.n_train * tabular.local_train(w, d, 5, 0.5) for d in chosen) / sum(d.n_train for d in chosen)
    return np.asarray(w)


@pytest.fixture(scope="module")
def sim_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 3-of-3 threshold key of site1..site3, made by the ceremony `simulate` runs when it finds no
    keys: made once for both simulations below, which only read it."""
    _sidecar_or_skip()
    from medcloud.federated.simulate import ceremony, site_names

    root = tmp_path_factory.mktemp("sim-keys")
    ceremony("threshold", root, site_names(3))
    return root


@pytest.mark.slow
def test_flower_simulation_threshold(tmp_path: Path, sim_keys: Path) -> None:
    """Threshold FedAvg on Flower (3.11, Ray) with OpenFHE in sidecars: the aggregator fuses every
    site's partial decryption; the model equals plaintext FedAvg within 1e-5."""
    pytest.importorskip("flwr")
    _sidecar_or_skip()
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.simulate import simulate

    settings = FLSettings(mode="threshold", rounds=2, num_sites=3, evaluate=True, keys_root=str(sim_keys))
    card = simulate(settings, tmp_path)
    assert card["mode"] == "threshold" and card["sites"] == ["site1", "site2", "site3"]
    assert card["model_readable_by_aggregator"] is True
    assert card["client_metrics"]["2"]["accuracy"] > 0.9
    events = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["detail"]["round"] for e in events] == [1, 2]
    for e in events:
        d = e["detail"]
        assert e["action"] == "fl.round" and d["mode"] == "threshold"
        assert d["participants"] == ["site1", "site2", "site3"]
        # Uploads are 30 bytes per value plus one chunk header; shares half that; sites get the sum.
        assert sorted(d["share_bytes"]) == ["site1", "site2", "site3"] and min(d["share_bytes"].values()) > 0
        assert all(d["bytes_down"][s] >= d["bytes_up"][s] > d["share_bytes"][s] for s in d["participants"])
    w = np.load(tmp_path / "model" / "model.npy")
    assert np.max(np.abs(w - _plain_fedavg(2, 3, [PARTIES_SIM] * 2))) < 1e-5


@pytest.mark.slow
def test_flower_threshold_round_with_a_site_sitting_out(tmp_path: Path, sim_keys: Path) -> None:
    """fraction_train < 1: two of three sites upload, yet the fusion needs all three key shares, so
    every site is asked for its partial decryption (it used to ask the uploaders only: HEError)."""
    pytest.importorskip("flwr")
    _sidecar_or_skip()
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.simulate import simulate

    settings = FLSettings(
        mode="threshold", rounds=1, num_sites=3, evaluate=False, fraction_train=0.67, keys_root=str(sim_keys)
    )
    simulate(settings, tmp_path)
    (event,) = [json.loads(x)["detail"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(event["participants"]) == 2
    assert sorted(event["share_bytes"]) == PARTIES_SIM  # the site that sat out decrypted too
    w = np.load(tmp_path / "model" / "model.npy")
    assert np.max(np.abs(w - _plain_fedavg(1, 3, [event["participants"]]))) < 1e-5
