"""`medcloud fl simulate`: the key ceremony for N sites plus a Flower simulation on one machine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medcloud.federated.flower.settings import FLSettings
from medcloud.federated.he.registry import backend_spec
from medcloud.federated.keyfiles import KeyPaths

__all__ = ["ceremony", "simulate", "site_names"]


def site_names(n: int) -> list[str]:
    return [f"site{i + 1}" for i in range(n)]


def ceremony(mode: str, root: Path, sites: list[str]) -> None:
    """Every site's keygen steps in the right order (the scheme's `ceremony`), each site in its
    own folder under `root`; nothing for a scheme without keys."""
    run = backend_spec(mode).ceremony
    if run is not None:
        run([KeyPaths(s, root / s, root / "public") for s in sites])


def simulate(settings: FLSettings, workdir: Path) -> dict[str, Any]:
    """Run the whole federation in Flower's simulation engine (Ray); return the model card."""
    # Flower (and Ray behind it) load only when a simulation runs.
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
