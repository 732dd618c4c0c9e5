"""Federated-learning bars, side by side in one run; prints JSON.

  .venv/bin/python bench/fl_bench.py            # accuracy (plain vs CKKS), DP, cost plain vs CKKS
  .venv310/bin/python bench/fl_bench.py --cost  # cost of threshold mode (OpenFHE, CPython 3.10)
  .venv/bin/python bench/fl_bench.py --flower   # plaintext Flower FedAvg vs CKKS, through Flower

`--flower` runs the Flower apps in Flower's simulation engine (Ray), one run per mode, side by
side: per-round wall time (the aggregator's configure_train -> aggregate_train, i.e. sending the
model, every site's local step, encryption, upload and aggregation) and bytes per site.

Cost is measured in one process with the protocol code the Flower apps run (no network): the
HE work per site and at the aggregator, and the bytes each site would send and receive. The
plaintext baseline is Flower's FedAvg payload, float32 (4 bytes per parameter).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from medcloud.federated.he import PlaintextBackend
from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg


def accuracy_section(rounds: int) -> dict[str, Any]:
    from medcloud.federated import dp, tabular
    from medcloud.federated.he.ckks import CkksBackend, generate_context

    sites = tabular.load_sites(4)
    w0 = np.zeros(tabular.n_params())
    secret, public = generate_context()
    site_be, agg_be = CkksBackend(secret), CkksBackend(public)

    def fl_sites(be: Any, cfg: Any = None) -> list[FedAvgSite]:
        rng = np.random.default_rng(0)
        return [FedAvgSite(s.name, be, partial(tabular.local_train, site=s), s.n_train, cfg, rng) for s in sites]

    t = time.perf_counter()
    plain, _ = run_fedavg(FedAvgAggregator(PlaintextBackend()), fl_sites(PlaintextBackend()), w0, rounds)
    t_plain = time.perf_counter() - t
    t = time.perf_counter()
    enc, _ = run_fedavg(FedAvgAggregator(agg_be), fl_sites(site_be), w0, rounds)
    t_enc = time.perf_counter() - t
    w_plain = decode_plain(plain.payload)
    w_enc = site_be.decrypt(site_be.deserialize(enc.payload)) / enc.total_weight
    x, y = tabular.pooled_test(sites)
    single = {}
    for s in sites:
        w_local = tabular.local_train(w0, s, epochs=5 * rounds)
        xo, yo = tabular.pooled_test(sites, exclude=s.name)
        single[s.name] = {
            "n_train": s.n_train,
            "benign_fraction": round(float(s.y_train.mean()), 3),
            "single_site_acc_on_other_sites": round(tabular.accuracy(w_local, xo, yo), 4),
            "fl_acc_on_same_sites": round(tabular.accuracy(w_plain, xo, yo), 4),
        }
    cfg = dp.DPConfig(clip_norm=1.0, noise_multiplier=1.0)
    dp_model, _ = run_fedavg(FedAvgAggregator(PlaintextBackend()), fl_sites(PlaintextBackend(), cfg), w0, rounds)
    return {
        "data": "sklearn load_breast_cancer, 4 sites, label-skew Dirichlet(0.5), 30% local test",
        "rounds": rounds,
        "max_abs_weight_diff_ckks_vs_plain": float(np.max(np.abs(w_enc - w_plain))),
        "test_acc_plain": tabular.accuracy(w_plain, x, y),
        "test_acc_ckks": tabular.accuracy(w_enc, x, y),
        "seconds_plain": round(t_plain, 3),
        "seconds_ckks": round(t_enc, 3),
        "fl_beats_every_single_site": all(
            v["fl_acc_on_same_sites"] > v["single_site_acc_on_other_sites"] for v in single.values()
        ),
        "per_site": single,
        "dp": {
            "clip_norm": cfg.clip_norm,
            "noise_multiplier": cfg.noise_multiplier,
            "delta": cfg.delta,
            "epsilon_per_site": round(dp.epsilon(cfg.noise_multiplier, rounds, cfg.delta), 3),
            "accountant": "RDP, Gaussian mechanism, sensitivity 2C, no subsampling",
            "test_acc": tabular.accuracy(decode_plain(dp_model.payload), x, y),
        },
    }


def cost_one(mode: str, n_params: int, n_sites: int, rounds: int) -> dict[str, Any]:
    from medcloud.federated.keys import KeyPaths, aggregator_backend, site_backend
    from medcloud.federated.simulate import ceremony, site_names

    names = site_names(n_sites)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        ceremony(mode, root, names)
        keygen_s = time.perf_counter() - t
        agg = FedAvgAggregator(aggregator_backend(mode, root / "public"))
        rng = np.random.default_rng(0)
        sites = [
            FedAvgSite(
                n,
                site_backend(mode, KeyPaths(n, root / n, root / "public")),
                lambda w: w + 1e-3 * rng.standard_normal(w.size),
                100 + 10 * i,
            )
            for i, n in enumerate(names)
        ]
        _, stats = run_fedavg(agg, sites, np.zeros(n_params), rounds)
    last = stats[-1]
    return {
        "mode": mode,
        "keygen_seconds_all_sites": round(keygen_s, 3),
        "round_seconds": [round(s.seconds, 3) for s in stats],
        # All sites share this process; with one machine per site the round takes the slowest
        # site's upload step + aggregation + the slowest partial decryption + fusion.
        "site_seconds_mean": round(float(np.mean(list(last.site_seconds.values()))), 3),
        "aggregator_seconds": round(last.aggregator_seconds, 3),
        "round_seconds_sites_in_parallel": round(last.parallel_seconds, 3),
        "bytes_up_per_site": int(np.mean(list(last.bytes_up.values()))),
        "bytes_down_per_site": int(np.mean(list(last.bytes_down.values()))),
        "decryption_share_bytes_per_site": int(np.mean(list(last.share_bytes.values()))) if last.share_bytes else 0,
    }


def cost_section(n_params: int, n_sites: int, rounds: int) -> dict[str, Any]:
    modes = ["plain"]
    if importlib.util.find_spec("tenseal"):
        modes.append("ckks")
    if importlib.util.find_spec("openfhe"):
        modes.append("threshold")
    out: dict[str, Any] = {"n_params": n_params, "sites": n_sites, "rounds": rounds, "python": sys.version.split()[0]}
    flower_plain_bytes = 4 * n_params  # Flower FedAvg float32 ArrayRecord payload
    out["flower_plain_fedavg_bytes_each_way"] = flower_plain_bytes
    results = {m: cost_one(m, n_params, n_sites, rounds) for m in modes}
    base_t = float(np.mean(results["plain"]["round_seconds"][1:] or results["plain"]["round_seconds"]))
    for r in results.values():
        t = float(np.mean(r["round_seconds"][1:] or r["round_seconds"]))
        r["round_seconds_mean"] = round(t, 3)
        r["round_seconds_minus_plain"] = round(t - base_t, 3)
        r["bytes_up_vs_float32"] = round(r["bytes_up_per_site"] / flower_plain_bytes, 2)
        if r["decryption_share_bytes_per_site"]:
            r["share_bytes_vs_float32"] = round(r["decryption_share_bytes_per_site"] / flower_plain_bytes, 2)
    out["modes"] = results
    return out


def flower_one(mode: str, n_params: int, n_sites: int, rounds: int) -> dict[str, Any]:
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.simulate import simulate

    settings = FLSettings(
        mode=mode, task="synthetic", n_params=n_params, num_sites=n_sites, rounds=rounds, evaluate=False,
        run_name=f"cost-{mode}",
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        card = simulate(settings, Path(tmp))
        total = time.perf_counter() - t
    events = card["rounds_audit"]
    steady = events[1:] or events  # round 1 also warms up Ray's workers
    last = events[-1]
    out = {
        "mode": mode,
        "round_seconds": [e["seconds"] for e in events],
        "round_seconds_mean": round(float(np.mean([e["seconds"] for e in steady])), 3),
        # Inside the round: each site's handler (decrypt, train, encrypt) and the aggregation step;
        # the rest is Flower's transport and the sites queueing for this machine's cores.
        "site_seconds_mean": round(float(np.mean([v for e in steady for v in e["site_seconds"].values()])), 3),
        "aggregate_seconds_mean": round(float(np.mean([e["aggregate_seconds"] for e in steady])), 3),
        "bytes_up_per_site": int(np.mean(list(last["bytes_up"].values()))),
        "bytes_down_per_site": int(np.mean(list(last["bytes_down"].values()))),
        "run_seconds_incl_keygen_and_ray": round(total, 2),
    }
    if last.get("share_bytes"):
        out["decryption_share_bytes_per_site"] = int(np.mean(list(last["share_bytes"].values())))
    return out


def flower_section(n_params: int, n_sites: int, rounds: int) -> dict[str, Any]:
    modes = ["plain", "ckks"] + (["threshold"] if importlib.util.find_spec("openfhe") else [])
    results = {m: flower_one(m, n_params, n_sites, rounds) for m in modes}
    base = results["plain"]
    for m, r in results.items():
        if m == "plain":
            continue
        r["time_ratio_vs_plain"] = round(r["round_seconds_mean"] / base["round_seconds_mean"], 2)
        r["bytes_up_ratio_vs_plain"] = round(r["bytes_up_per_site"] / base["bytes_up_per_site"], 2)
        r["bytes_down_ratio_vs_plain"] = round(r["bytes_down_per_site"] / base["bytes_down_per_site"], 2)
    return {
        "engine": "Flower simulation (Ray)",
        "n_params": n_params,
        "sites": n_sites,
        "rounds": rounds,
        "python": sys.version.split()[0],
        "plain_baseline": "Flower FedAvg, float32 ArrayRecord",
        "targets": {"time_ratio": 1.5, "bytes_ratio": 8.0},
        "modes": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--cost-rounds", type=int, default=2)
    ap.add_argument("--cost", action="store_true", help="cost only (the 3.10 venv has no scikit-learn)")
    ap.add_argument("--flower", action="store_true", help="plaintext Flower FedAvg vs CKKS through Flower only")
    args = ap.parse_args()
    report: dict[str, Any] = {}
    if args.flower:
        report["flower_cost"] = flower_section(args.params, args.sites, max(args.cost_rounds, 3))
        print(json.dumps(report, indent=2))
        return
    if not args.cost and importlib.util.find_spec("sklearn") and importlib.util.find_spec("tenseal"):
        report["accuracy"] = accuracy_section(args.rounds)
    report["cost"] = cost_section(args.params, args.sites, args.cost_rounds)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
