"""t-of-N threshold FedAvg rounds in which a site drops out; the `fl keygen` CLI for t-of-N.

Run under the CPython 3.10 venv (`make test-py310`): OpenFHE's wheel imports only there.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = [
    pytest.mark.py310,
    pytest.mark.skipif(
        sys.version_info[:2] != (3, 10),
        reason="OpenFHE's PyPI wheel imports only on CPython 3.10: run `make test-py310`",
    ),
]

PARTIES = ["a", "b", "c"]
COUNTS = {"a": 10, "b": 30, "c": 60}
SIZE = 40


def _targets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {s: rng.normal(size=SIZE) for s in PARTIES}


def _train(target: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda w: w + 0.5 * (target - w)  # a contraction toward the site's optimum


def _ceremony(root: Path, threshold: int | None) -> dict[str, Any]:
    from medcloud.federated.keys import KeyPaths, threshold_ceremony

    paths = {s: KeyPaths(s, root / s, root / "public") for s in PARTIES}
    threshold_ceremony([paths[s] for s in PARTIES], threshold)  # identities, trust, the signed chain
    return {"paths": paths, "public": root / "public"}


@pytest.fixture(scope="module")
def keys_2of3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("openfhe")
    return _ceremony(tmp_path_factory.mktemp("drop2of3"), 2)


def _run(keys: dict[str, Any], rounds: int, dropouts: Mapping[int, Mapping[str, Any]]) -> tuple[list[np.ndarray], Any]:
    """Threshold FedAvg with every site's key folders; returns each round's model and the stats."""
    from medcloud.federated.keys import aggregator_backend, site_backend
    from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg

    targets = _targets()
    sites = [
        FedAvgSite(s, site_backend("threshold", keys["paths"][s]), _train(targets[s]), COUNTS[s], keys=keys["paths"][s])
        for s in PARTIES
    ]
    agg = aggregator_backend("threshold", keys["public"])
    assert not agg.can_decrypt and not agg.holds_share  # type: ignore[attr-defined]  # public material only
    models: list[np.ndarray] = []
    _, stats = run_fedavg(
        FedAvgAggregator(agg),
        sites,
        np.zeros(SIZE),
        rounds,
        on_round=lambda st, m: models.append(decode_plain(m.payload)),
        dropouts=dropouts,
    )
    return models, stats


def _reference(rounds: int, uploaders: Callable[[int], list[str]]) -> list[np.ndarray]:
    """Plaintext FedAvg by hand: each round the weighted mean of the uploads that were made."""
    targets = _targets()
    w, out = np.zeros(SIZE), []
    for r in range(1, rounds + 1):
        ups = uploaders(r)
        w = sum(COUNTS[s] * _train(targets[s])(w) for s in ups) / sum(COUNTS[s] for s in ups)
        out.append(w)
    return out


def _public_snapshot(public: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in public.iterdir()}


def test_site_drops_in_round_2_round_finishes_with_survivors(keys_2of3: dict[str, Any]) -> None:
    # a is the lead of the key chain (its partial is OpenFHE's "lead" decryption): the harder case.
    models, stats = _run(keys_2of3, 3, {2: {"a": "before-upload"}})
    expected = _reference(3, lambda r: ["b", "c"] if r == 2 else PARTIES)
    for got, want in zip(models, expected, strict=True):
        assert np.max(np.abs(got - want)) < 1e-5
    everyone = _reference(3, lambda r: PARTIES)
    assert np.max(np.abs(models[1] - everyone[1])) > 1e-2  # a's update really is left out of round 2
    assert [st.dropped for st in stats] == [{}, {"a": "before-upload"}, {}]
    assert [st.recovered for st in stats] == [{}, {"a": "b"}, {}]  # b rebuilt a's key share
    assert stats[1].participants == ["b", "c"] and sorted(stats[1].bytes_up) == ["b", "c"]
    assert sorted(stats[1].share_bytes) == PARTIES  # three partial decryptions fused, one made by b for a
    # t = 2: one helper (c) released its sealed share of a's key to b, through the public folder.
    release = keys_2of3["paths"]["c"].threshold_release("a", "c", "b")
    assert stats[1].release_bytes == {"c": release.stat().st_size} and 66_000 < release.stat().st_size < 67_000
    assert stats[0].release_bytes == stats[2].release_bytes == {}
    # Nothing unsealed reached the public folder: neither the released share nor the rebuilt key share.
    from medcloud.federated.keys import _own_share_of

    recovered = keys_2of3["paths"]["b"].threshold_recovered("a").read_bytes()
    secret = _own_share_of(keys_2of3["paths"]["c"], PARTIES, "a")
    for f in Path(keys_2of3["public"]).iterdir():
        data = f.read_bytes()
        assert all(x not in data and x[-4096:] not in data for x in (recovered, secret))


@pytest.mark.parametrize(("site", "when"), [("c", "before-upload"), ("c", "after-upload"), ("b", "after-upload")])
def test_drop_before_vs_after_upload(keys_2of3: dict[str, Any], site: str, when: str) -> None:
    models, stats = _run(keys_2of3, 2, {1: {site: when}})
    survivors = [s for s in PARTIES if s != site]
    counted = survivors if when == "before-upload" else PARTIES  # an upload that was made is in the sum
    expected = _reference(2, lambda r: counted if r == 1 else PARTIES)
    other = _reference(2, lambda r: (PARTIES if when == "before-upload" else survivors) if r == 1 else PARTIES)
    assert np.max(np.abs(models[0] - expected[0])) < 1e-5
    assert np.max(np.abs(models[0] - other[0])) > 1e-2
    assert np.max(np.abs(models[1] - expected[1])) < 1e-5  # and the next round goes on from it
    assert stats[0].participants == counted
    assert stats[0].dropped == {site: when} and stats[0].recovered == {site: survivors[0]}
    assert list(stats[0].release_bytes) == [survivors[1]]
    if when == "before-upload":
        assert site not in stats[0].bytes_down and site not in stats[0].bytes_up
    else:
        assert stats[0].bytes_up[site] > 0


def test_fewer_than_t_survivors_refused(keys_2of3: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> None:
    from medcloud.errors import InvalidInput
    from medcloud.federated.he import HEError

    before = _public_snapshot(keys_2of3["public"])
    seen: list[int] = []
    with pytest.raises(HEError, match=r"round 2: only 1 of 3 sites survive \(a, c dropped out\); the 2-of-3 key"):
        from medcloud.federated.keys import aggregator_backend, site_backend
        from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, run_fedavg

        paths = keys_2of3["paths"]
        sites = [
            FedAvgSite(s, site_backend("threshold", paths[s]), _train(np.ones(SIZE)), COUNTS[s], keys=paths[s])
            for s in PARTIES
        ]
        run_fedavg(
            FedAvgAggregator(aggregator_backend("threshold", keys_2of3["public"])),
            sites,
            np.zeros(SIZE),
            3,
            on_round=lambda st, m: seen.append(st.round),
            dropouts={2: {"a": "after-upload", "c": "before-upload"}},
        )
    assert seen == [1]  # round 1 finished; round 2 produced no model
    assert _public_snapshot(keys_2of3["public"]) == before  # and nobody released anything
    # Every site gone after uploading: refused as well.
    with pytest.raises(HEError, match="every site dropped out"):
        _run(keys_2of3, 1, {1: dict.fromkeys(PARTIES, "after-upload")})
    with pytest.raises(InvalidInput, match="cannot drop 'd'"):
        _run(keys_2of3, 1, {1: {"d": "before-upload"}})
    # An N-of-N key cannot stand in for anyone: a dropout is refused, with the reason.
    pytest.importorskip("openfhe")
    nn = _ceremony(tmp_path_factory.mktemp("drop3of3"), None)
    with pytest.raises(HEError, match="key is 3-of-3: decryption needs every site"):
        _run(nn, 1, {1: {"b": "after-upload"}})
    models, _ = _run(nn, 1, {})  # without a dropout the same key works
    assert np.max(np.abs(models[0] - _reference(1, lambda r: PARTIES)[0])) < 1e-5


# --- the real `medcloud fl keygen` CLI, t-of-N ----------------------------------------------------


def _medcloud(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The `medcloud` console entry point (`medcloud.cli:main`) of this interpreter's environment."""
    script = Path(sys.executable).with_name("medcloud")
    cmd = [str(script)] if script.is_file() else [sys.executable, "-c", "from medcloud.cli import main; main()"]
    import medcloud

    # The package under test, whatever the caller's (possibly relative) PYTHONPATH: the child runs in `cwd`.
    src = str(Path(medcloud.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONWARNINGS": "ignore",
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=60, env=env)


def test_cli_keygen_2of3_with_dropout(tmp_path: Path) -> None:
    pytest.importorskip("openfhe")
    pytest.importorskip("typer")
    from medcloud.federated.keys import KeyPaths, aggregator_backend, recovered_backend, site_backend

    pub = tmp_path / "pub"

    def keygen(site: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return _medcloud(
            "fl", "keygen", "--mode", "threshold", "--site", site, "--site-dir", str(tmp_path / site),
            "--public", str(pub), *extra, cwd=tmp_path,
        )  # fmt: skip

    fingerprints = {}
    for s in "abc":  # first run: identities published, fingerprints printed, nothing built yet
        out = keygen(s, "--parties", "a,b,c", "--threshold", "2")
        assert out.returncode == 0 and "confirm the fingerprints of" in out.stdout, out.stderr
        fingerprints[s] = re.search(r"fingerprint ([0-9A-F-]{39})", out.stdout).group(1)  # type: ignore[union-attr]
    assert not (pub / "threshold.context").exists()
    for s in "abc":  # each operator confirms the others' codes, read out on a second channel
        for o in "abc":
            if o != s:
                out = _medcloud(
                    "fl", "trust", "--site", s, "--site-dir", str(tmp_path / s), "--public", str(pub),
                    "--party", o, "--fingerprint", fingerprints[o], cwd=tmp_path,
                )  # fmt: skip
                assert out.returncode == 0 and f"{o} trusted at {s}" in out.stdout, out.stderr
    out = keygen("a", "--parties", "a,b,c", "--threshold", "2")
    assert out.returncode == 0, out.stderr
    assert "threshold crypto context published" in out.stdout
    assert "waiting for the whole signed chain (up to c) to seal the key shares" in out.stdout
    for s in ("b", "c"):  # t comes from what a published (and signed)
        out = keygen(s, "--parties", "a,b,c")
        assert out.returncode == 0, out.stderr
    assert "key share split 2-of-3; shares sealed for a, b" in out.stdout
    out = keygen("a", "--parties", "a,b,c")  # second pass: a and b seal now that c's identity is there
    assert "key share split 2-of-3; shares sealed for b, c" in out.stdout
    out = keygen("b", "--parties", "a,b,c")
    assert "key share split 2-of-3; shares sealed for a, c" in out.stdout
    out = keygen("c", "--parties", "a,b,c")
    assert out.returncode == 0 and "key shares already sealed" in out.stdout
    assert sorted(p.name for p in pub.glob("threshold.keyshare-*.sealed")) == [
        f"threshold.keyshare-{o}-for-{h}.sealed" for o in "abc" for h in "abc" if h != o
    ]
    assert (pub / "threshold.joint.pk").is_file() and (pub / "threshold.t.json").is_file()
    for s in "abc":
        assert (tmp_path / s / "threshold.share").stat().st_mode & 0o077 == 0

    # Negative cases: a clear one-line error and a nonzero exit, nothing written.
    out = keygen("c", "--dropped", "a")
    assert out.returncode == 6 and "--dropped needs --recoverer" in out.stderr
    assert "Traceback" not in out.stderr
    out = keygen("c", "--dropped", "a", "--recoverer", "a")
    assert out.returncode != 0 and "cannot recover 'a' at 'a'" in out.stderr and "Traceback" not in out.stderr
    out = keygen("b", "--dropped", "a", "--recoverer", "b")  # c has not released yet: 1 share of 2
    assert out.returncode != 0 and "recovery needs 2 of 3" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "b" / "threshold.recovered-a.share").exists()
    assert not list(pub.glob("threshold.release-*"))

    # a dropped out: c releases its share of a's key to b, b rebuilds a's key share.
    out = keygen("c", "--dropped", "a", "--recoverer", "b")
    assert out.returncode == 0 and "share of a's key sealed for b" in out.stdout, out.stderr
    assert sorted(p.name for p in pub.glob("threshold.release-*")) == [
        "threshold.release-a-from-c-to-b.sealed",
        "threshold.release-a-from-c-to-b.sealed.sig",
    ]
    out = keygen("b", "--dropped", "a", "--recoverer", "b")
    assert out.returncode == 0 and "a's key share recovered from 2 shares (2-of-3)" in out.stdout, out.stderr
    assert (tmp_path / "b" / "threshold.recovered-a.share").stat().st_mode & 0o077 == 0

    # The files work: b and c decrypt, b also for a, and the fusion is the sum.
    agg = aggregator_backend("threshold", pub)
    b, c = (site_backend("threshold", KeyPaths(s, tmp_path / s, pub)) for s in "bc")
    rng = np.random.default_rng(3)
    vecs = [rng.normal(size=10) for _ in range(2)]
    summed = agg.deserialize(agg.sum_serialized([b.serialize(b.encrypt(vecs[0])), c.serialize(c.encrypt(vecs[1]))]))
    stand_in = recovered_backend(KeyPaths("b", tmp_path / "b", pub), "a")
    parts = [x.partial_decrypt(summed) for x in (b, c, stand_in)]  # type: ignore[attr-defined]
    assert np.max(np.abs(agg.fuse(parts) - (vecs[0] + vecs[1]))) < 1e-5  # type: ignore[attr-defined]
