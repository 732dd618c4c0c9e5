"""`medcloud fl simulate`: the key ceremony for N sites plus a Flower simulation on one machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcloud.federated.flower.settings import FLSettings
from medcloud.federated.keys import SHARED_KEY_MODES, KeyPaths, shared_keygen


def site_names(n: int) -> list[str]:
    return [f"site{i + 1}" for i in range(n)]


def ceremony(mode: str, root: Path, sites: list[str]) -> None:
    """Every site's keygen steps in the right order, each site in its own folder under `root`."""
    paths = [KeyPaths(s, root / s, root / "public") for s in sites]
    if mode in SHARED_KEY_MODES:
        for p in paths[1:]:
            shared_keygen(p, False, mode)
        shared_keygen(paths[0], True, mode)
        for p in paths[1:]:
            shared_keygen(p, False, mode)
    elif mode == "threshold":
        # In-process under CPython 3.10; elsewhere each step runs in the OpenFHE sidecar's interpreter.
        from medcloud.federated.he.bridge import threshold_keygen

        for p in paths:
            threshold_keygen(p, sites)


def simulate(settings: FLSettings, workdir: Path) -> dict[str, Any]:
    """Run the whole federation in Flower's simulation engine (Ray); return the model card."""
    from flwr.simulation import run_simulation

    from medcloud.federated.flower.apps import build_client_app, build_server_app

    workdir.mkdir(parents=True, exist_ok=True)
    if not settings.keys_root:
        settings.keys_root = str(workdir / "keys")
    if not settings.out_dir:
        settings.out_dir = str(workdir / "model")
    if not settings.audit_file and not settings.hub:
        settings.audit_file = str(workdir / "audit.jsonl")
    if not (Path(settings.keys_root) / "public").exists():
        ceremony(settings.mode, Path(settings.keys_root), site_names(settings.num_sites))
    results: list[dict[str, Any]] = []
    run_simulation(
        server_app=build_server_app(settings, results),
        client_app=build_client_app(settings),
        num_supernodes=settings.num_sites,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
    )
    if not results:
        raise RuntimeError("the Flower simulation ended without a result (see the log above)")
    return results[0]
