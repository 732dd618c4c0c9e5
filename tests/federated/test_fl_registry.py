"""The HE scheme registry: what it lists, what it refuses, and a scheme registered here (in a test,
not in the package) that the protocol, the key ceremony, the settings and the CLI use unchanged."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from medcloud.errors import ConfigError
from medcloud.federated.flower.settings import FLSettings
from medcloud.federated.he import (
    BackendSpec,
    HEBackend,
    HEError,
    KeygenStep,
    PlaintextBackend,
    backend_names,
    backend_spec,
    register,
    unregister,
)
from medcloud.federated.he.base import FloatVector
from medcloud.federated.keyfiles import KeyPaths, read_key, write_key
from medcloud.federated.keys import aggregator_backend, keygen_modes, shared_key_modes, site_backend
from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg
from medcloud.federated.simulate import ceremony

SRC = Path(__file__).resolve().parents[2] / "src" / "medcloud" / "federated"
BUILT_IN = ["plain", "ckks", "aes", "threshold"]


# --- two toy schemes, defined here only (no security: they exercise the seams, nothing else) ------


class MaskBackend(HEBackend):
    """Adds a per-key mask to each value: E_k(x) = x + m_k. Sums carry the sum of the masks.

    `shared` (one key for every site, `decryption="sites"`): the site keeps a count of the
    masks in the sum (one per upload) in the ciphertext, and subtracts that many masks.
    `joint` (one key per site): a site's partial decryption of a sum is sum/N - m_k; the fusion
    of all N partial decryptions is the plaintext sum."""

    def __init__(self, name: str, key: float | None, parties: int = 1) -> None:
        self.name = name
        self._key = key
        self._parties = parties

    @property
    def slots(self) -> int:
        return 1 << 20

    @property
    def can_decrypt(self) -> bool:
        return self._key is not None and self.name == "toyshared"

    def _encrypt_chunk(self, values: FloatVector) -> Any:
        assert self._key is not None
        return np.concatenate([values + self._key, [1.0]])  # last slot: how many masks are in it

    def _decrypt_chunk(self, chunk: Any, length: int) -> FloatVector:
        assert self._key is not None
        return np.asarray(chunk[:length] - chunk[-1] * self._key, dtype=np.float64)

    def _add_chunk(self, a: Any, b: Any) -> Any:
        return a + b

    def _mul_chunk(self, a: Any, scalar: float) -> Any:
        return a * scalar

    def _chunk_to_bytes(self, chunk: Any) -> bytes:
        return np.asarray(chunk, dtype="<f8").tobytes()

    def _chunk_from_bytes(self, data: bytes) -> Any:
        return np.frombuffer(data, dtype="<f8").copy()

    def partial_decrypt(self, ct: Any) -> bytes:
        if self.name != "toyjoint" or self._key is None:
            return super().partial_decrypt(ct)
        (chunk,) = ct.chunks
        part = chunk[: ct.length] / self._parties - self._key
        return np.asarray(part, dtype="<f8").tobytes()

    def fuse(self, shares: list[bytes]) -> FloatVector:
        if self.name != "toyjoint":
            return super().fuse(shares)
        return np.sum([np.frombuffer(s, dtype="<f8") for s in shares], axis=0)


def _toy_site(name: str, parties: int = 1) -> Any:
    def for_site(paths: KeyPaths) -> HEBackend:
        return MaskBackend(name, float(read_key(paths.site_dir / f"{name}.key", f"{name} key")), parties)

    return for_site


def _toy_ceremony(name: str, shared: bool) -> Any:
    def run(paths: Sequence[KeyPaths]) -> None:
        for i, p in enumerate(paths):
            write_key(p.site_dir / f"{name}.key", b"7.25" if shared else str(1.5 + i).encode(), secret=True)

    return run


@pytest.fixture
def toy_schemes() -> Iterator[dict[str, BackendSpec]]:
    shared = BackendSpec(
        "toyshared",
        "a toy shared-key scheme (tests only)",
        "sites",
        _toy_site("toyshared"),
        lambda public_dir: MaskBackend("toyshared", None),
        keygen=lambda paths, step: [f"{paths.site}: lead={step.lead}"],
        ceremony=_toy_ceremony("toyshared", shared=True),
    )
    joint = BackendSpec(
        "toyjoint",
        "a toy one-key-per-site scheme (tests only)",
        "joint",
        _toy_site("toyjoint", parties=3),
        lambda public_dir: MaskBackend("toyjoint", None, parties=3),
        ceremony=_toy_ceremony("toyjoint", shared=False),
        supports_deepprotect=False,
    )
    register(shared)
    register(joint)
    try:
        yield {"toyshared": shared, "toyjoint": joint}
    finally:
        unregister("toyshared")
        unregister("toyjoint")


# --- listing ----------------------------------------------------------------------------------


def test_built_in_schemes_are_listed_in_order_with_their_capabilities() -> None:
    assert backend_names()[:4] == BUILT_IN
    plain, aes, threshold = backend_spec("plain"), backend_spec("aes"), backend_spec("threshold")
    assert (plain.encrypted, plain.shared_key, plain.threshold, plain.keygen) == (False, False, False, None)
    assert (aes.encrypted, aes.shared_key, aes.threshold, aes.supports_deepprotect) == (True, True, False, True)
    assert (threshold.encrypted, threshold.shared_key, threshold.threshold) == (True, False, True)
    assert not threshold.supports_deepprotect and threshold.for_recovered is not None
    assert threshold.in_memory is None  # a key share per site: no one-process pair
    assert all(backend_spec(n).name == n for n in BUILT_IN if n != "ckks" or _has("tenseal"))
    assert "aes" in shared_key_modes() and "threshold" in keygen_modes() and "plain" not in keygen_modes()


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def test_listing_modes_loads_no_he_library() -> None:
    code = (
        "import sys\n"
        "from medcloud.federated.he.registry import backend_names\n"
        "assert backend_names()[:4] == ['plain', 'ckks', 'aes', 'threshold'], backend_names()\n"
        "loaded = [m for m in ('tenseal', 'openfhe', 'flwr', 'medcloud.federated.he.bridge') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_a_scheme_is_registered_once_per_name(toy_schemes: dict[str, BackendSpec]) -> None:
    clash = BackendSpec("toyshared", "another", "sites", _toy_site("toyshared"), lambda p: MaskBackend("x", None))
    with pytest.raises(ConfigError, match="already registered"):
        register(clash)
    register(toy_schemes["toyshared"])  # the same spec again: a no-op
    assert backend_names()[-2:] == ["toyshared", "toyjoint"]


def test_a_spec_that_contradicts_itself_is_refused() -> None:
    with pytest.raises(ConfigError, match="DeepProtect"):
        BackendSpec("bad", "joint, yet DeepProtect", "joint", _toy_site("bad"), lambda p: PlaintextBackend())
    with pytest.raises(ConfigError, match="decryption"):
        BackendSpec("bad", "?", "nobody", _toy_site("bad"), lambda p: PlaintextBackend())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="identifier"):
        BackendSpec("../etc", "names key files", "sites", _toy_site("x"), lambda p: PlaintextBackend())


# --- unknown names ------------------------------------------------------------------------------


def test_unknown_mode_is_a_config_error_listing_the_registered_ones(tmp_path: Path) -> None:
    for ask in (
        lambda: backend_spec("rot13"),
        lambda: FLSettings(mode="rot13"),
        lambda: site_backend("rot13", KeyPaths("a", tmp_path / "a", tmp_path / "p")),
        lambda: aggregator_backend("rot13", tmp_path / "p"),
        lambda: ceremony("rot13", tmp_path, ["a"]),
    ):
        with pytest.raises(
            ConfigError, match="unknown mode 'rot13': the registered modes are plain, ckks, aes, threshold"
        ):
            ask()


def test_keygen_cli_refuses_an_unknown_mode_and_one_without_keys(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medcloud.federated.cli import app

    base = ["keygen", "--site", "a", "--site-dir", str(tmp_path / "a"), "--public", str(tmp_path / "p")]
    runner = CliRunner()
    unknown = runner.invoke(app, [*base, "--mode", "rot13"])
    assert unknown.exit_code != 0 and isinstance(unknown.exception, ConfigError)
    assert "plain, ckks, aes, threshold" in str(unknown.exception)
    plain = runner.invoke(app, [*base, "--mode", "plain"])
    assert isinstance(plain.exception, ConfigError) and "no keys to generate" in str(plain.exception)
    assert not (tmp_path / "a").exists()


def test_deepprotect_is_refused_for_a_scheme_without_it(toy_schemes: dict[str, BackendSpec]) -> None:
    from medcloud.errors import InvalidInput

    with pytest.raises(InvalidInput, match="DeepProtect needs a key the sites share: use --mode plain or"):
        FLSettings(mode="toyjoint", protocol="deepprotect")
    assert FLSettings(mode="toyshared", protocol="deepprotect").mode == "toyshared"


# --- a scheme registered in a test runs through code that never heard of it ---------------------


def _run(mode: str, root: Path, sites: list[str]) -> tuple[NDArray[np.float64], list[Any]]:
    ceremony(mode, root, sites)  # the scheme's own ceremony, through simulate's entry point
    rng = np.random.default_rng(3)
    weights = {s: rng.normal(size=7) for s in sites}
    fl = [
        FedAvgSite(s, site_backend(mode, KeyPaths(s, root / s, root / "public")), lambda w, s=s: weights[s], 10 + i)
        for i, s in enumerate(sites)
    ]
    model, stats = run_fedavg(FedAvgAggregator(aggregator_backend(mode, root / "public")), fl, np.zeros(7), 2)
    if model.encrypted:
        be = fl[0].backend
        final = be.decrypt(be.deserialize(model.payload)) / model.total_weight
    else:
        final = decode_plain(model.payload)
    expected = sum((10 + i) * weights[s] for i, s in enumerate(sites)) / sum(10 + i for i in range(len(sites)))
    np.testing.assert_allclose(final, expected, atol=1e-9)
    return final, stats


def test_a_registered_shared_key_scheme_runs_fedavg_unchanged(
    toy_schemes: dict[str, BackendSpec], tmp_path: Path
) -> None:
    _, stats = _run("toyshared", tmp_path, ["a", "b", "c"])
    assert all(not s.share_bytes for s in stats)  # the sites open the sum: no partial decryptions
    site = site_backend("toyshared", KeyPaths("a", tmp_path / "a", tmp_path / "public"))
    agg = aggregator_backend("toyshared", tmp_path / "public")
    with pytest.raises(HEError):  # the aggregator of a shared-key scheme holds no key
        agg.decrypt(agg.deserialize(site.serialize(site.encrypt(np.ones(3)))))


def test_a_registered_joint_scheme_gets_partial_decryptions_and_fusion(
    toy_schemes: dict[str, BackendSpec], tmp_path: Path
) -> None:
    _, stats = _run("toyjoint", tmp_path, ["a", "b", "c"])
    assert all(sorted(s.share_bytes) == ["a", "b", "c"] for s in stats)  # every key share, every round


def test_keygen_cli_and_modes_listing_reach_a_registered_scheme(
    toy_schemes: dict[str, BackendSpec], tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from medcloud.federated.cli import app

    runner = CliRunner()
    base = ["keygen", "--site", "a", "--site-dir", str(tmp_path / "a"), "--public", str(tmp_path / "p")]
    result = runner.invoke(app, [*base, "--mode", "toyshared", "--lead"])
    assert result.exit_code == 0 and result.output.strip() == "a: lead=True", result.output
    assert KeygenStep(lead=True).lead
    listing = runner.invoke(app, ["modes"])
    assert listing.exit_code == 0, listing.output
    names = [line.split(":")[0] for line in listing.output.splitlines() if not line.startswith(" ")]
    assert names[:4] == BUILT_IN and names[-2:] == ["toyshared", "toyjoint"]
    assert "a toy one-key-per-site scheme (tests only)" in listing.output


# --- the seams stay clean -------------------------------------------------------------------------


def _compares_a_mode_name(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                elts = side.elts if isinstance(side, ast.Tuple | ast.List | ast.Set) else [side]
                for e in elts:
                    if isinstance(e, ast.Constant) and e.value in BUILT_IN:
                        found.append(f"{path.name}:{node.lineno} compares {e.value!r}")
    return found


def test_no_module_outside_the_schemes_compares_mode_names() -> None:
    modules = [p for p in SRC.rglob("*.py") if "he" not in p.relative_to(SRC).parts[:-1]]
    assert len(modules) > 10
    assert [hit for p in modules for hit in _compares_a_mode_name(p)] == []


def test_keys_does_not_import_the_threshold_bridge() -> None:
    """The keys <-> bridge loop: bridge imports keys, keys never imports bridge (lazily included)."""
    imported = set()
    for node in ast.walk(ast.parse((SRC / "keys.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
            imported.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            imported.update(a.name for a in node.names)
    assert not {m for m in imported if "bridge" in m or m.endswith((".ckks", ".aes", ".plain"))}, imported
