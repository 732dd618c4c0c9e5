"""Federated-learning bars, side by side in one run; prints JSON.

  .venv/bin/python bench/fl_bench.py            # accuracy (plain vs CKKS; tabular + images), DP, cost
  .venv/bin/python bench/fl_bench.py --cost     # cost only (plain vs CKKS, in one process)
  .venv310/bin/python bench/fl_bench.py --cost  # threshold mode in process (OpenFHE, CPython 3.10)
  (under 3.11, threshold runs through the OpenFHE sidecar, `medcloud.federated.he.bridge`)
  .venv/bin/python bench/fl_bench.py --flower   # plaintext Flower FedAvg vs CKKS and AES, through Flower
  .venv/bin/python bench/fl_bench.py --flower --repeat 3 --modes aes  # interleaved, medians

The local step (`--task mlp`, the default where torch is installed) is a real torch MLP with
1,010,850 parameters trained one epoch (320 synthetic samples, batch 32, one thread) per site per
round; `--task synthetic` adds noise instead (protocol cost alone). Both modes run the same step.

`--flower` runs the Flower apps in Flower's simulation engine (Ray), one run per mode, side by
side, every site sharing this machine's cores: per-round wall time (the aggregator's
configure_train -> aggregate_train: sending the model, every site's handler - open the global
model, train, encrypt - upload and aggregation) and bytes per site.

`--cost` runs the protocol code the Flower apps run, in one process with no network, sites one
after another: each site's seconds, the aggregator's, the round's critical path were every site
on its own machine (`round_seconds_sites_in_parallel`), each HE step timed on its own
(`he_seconds_one_site`) and the bytes each site would send and receive. The plaintext baseline
for bytes is Flower's FedAvg payload, float32 (4 bytes per parameter).
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

from medcloud.federated.he import PlaintextBackend, backend_spec, modes_where
from medcloud.federated.protocol import FedAvgAggregator, FedAvgSite, decode_plain, run_fedavg


def accuracy_section(rounds: int) -> dict[str, Any]:
    from medcloud.federated import dp, tabular
    from medcloud.federated.he import aes
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
    aes_secret, aes_public = aes.generate_key()
    aes_site, aes_agg = aes.AesCtrBackend(aes_secret), aes.AesCtrBackend(aes_public)
    t = time.perf_counter()
    enc_aes, _ = run_fedavg(FedAvgAggregator(aes_agg), fl_sites(aes_site), w0, rounds)
    t_aes = time.perf_counter() - t
    w_aes = aes_site.decrypt(aes_site.deserialize(enc_aes.payload)) / enc_aes.total_weight
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
        "max_abs_weight_diff_aes_vs_plain": float(np.max(np.abs(w_aes - w_plain))),
        "test_acc_plain": tabular.accuracy(w_plain, x, y),
        "test_acc_ckks": tabular.accuracy(w_enc, x, y),
        "test_acc_aes": tabular.accuracy(w_aes, x, y),
        "seconds_plain": round(t_plain, 3),
        "seconds_ckks": round(t_enc, 3),
        "seconds_aes": round(t_aes, 3),
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


def image_accuracy_section(rounds: int) -> dict[str, Any]:
    """The torch CNN on SYNTHETIC site-shifted images (`medcloud.federated.images`): CKKS FedAvg vs
    plaintext FedAvg, and each single-site model on the other sites' images vs the federated one."""
    from medcloud.federated import images

    result = images.train_federated("ckks", n_sites=4, rounds=rounds, epochs=2)
    return {
        "data": images.SYNTHETIC_NOTICE,
        "sites": result.card["sites"],
        "training": {k: v for k, v in result.card["training"].items() if k != "command"},
        "metrics": result.card["metrics"],
    }


def _trainer(task: str, index: int, n_params: int) -> tuple[Any, int]:
    """(train function, n_examples) for one site: the torch MLP, or a synthetic perturbation."""
    if task == "mlp":
        from medcloud.federated import mlp

        site = mlp.SiteTask(index)
        return site.train, site.n_examples
    rng = np.random.default_rng(index)
    return (lambda w: w + 1e-3 * rng.standard_normal(w.size)), 100 + 10 * index


def _initial(task: str, n_params: int) -> np.ndarray:
    if task == "mlp":
        from medcloud.federated import mlp

        return np.asarray(mlp.initial_weights(), dtype=np.float64)
    return np.zeros(n_params)


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


def components(mode: str, site_be: Any, agg: Any, w: np.ndarray, n_sites: int, sites: list[Any]) -> dict[str, Any]:
    """Each HE step of one round on its own, one site's share (seconds, this machine, one thread)."""
    ct, enc_s = _timed(site_be.encrypt, w * 300.0)
    blob, ser_s = _timed(site_be.serialize, ct)
    uploads = [blob] + [s.backend.serialize(s.backend.encrypt(w * (300.0 + i))) for i, s in enumerate(sites[1:n_sites])]
    summed, agg_s = _timed(agg.aggregate, uploads)
    out: dict[str, Any] = {
        "encrypt": round(enc_s, 3),
        "serialize": round(ser_s, 3),
        "aggregator_sum_of_uploads": round(agg_s, 3),
    }
    spec = backend_spec(mode)
    if spec.shared_key:
        opened, des_s = _timed(site_be.deserialize, summed)
        _, dec_s = _timed(site_be.decrypt, opened)
        out |= {"deserialize_global": round(des_s, 3), "decrypt_global": round(dec_s, 3)}
    if spec.threshold:
        shares = []
        part_s = 0.0
        for s in sites[:n_sites]:
            share, dt = _timed(s.partial_decrypt, summed)
            shares.append(share)
            part_s = max(part_s, dt)
        _, fuse_s = _timed(agg.finish, summed, 1.0, 1, shares)
        out |= {"partial_decrypt_one_site": round(part_s, 3), "aggregator_fuse": round(fuse_s, 3)}
    out["he_total_one_site"] = round(
        sum(v for k, v in out.items() if isinstance(v, float) and not k.startswith("aggregator")), 3
    )
    if mode == "ckks":
        out["before_tenseal_per_chunk"] = tenseal_per_chunk(site_be, w * 300.0)
    return out


def tenseal_per_chunk(site_be: Any, w: np.ndarray) -> dict[str, Any]:
    """The previous wire format, same run: one TenSEAL CKKSVector per 4,096 values (public-key
    encryption, two 64-bit-word polynomials per chunk), for the before/after comparison."""
    import tenseal as ts

    ctx = ts.context_from(site_be._ctx.serialize(save_secret_key=True))
    slots = 4096  # TenSEAL's CKKSVector: real values in the N/2 slots of N = 8192
    chunks = [w[i : i + slots] for i in range(0, w.size, slots)]
    vecs, enc_s = _timed(lambda: [ts.ckks_vector(ctx, c.tolist()) for c in chunks])
    blobs, ser_s = _timed(lambda: [v.serialize() for v in vecs])
    back, des_s = _timed(lambda: [ts.ckks_vector_from(ctx, b) for b in blobs])
    _, dec_s = _timed(lambda: [v.decrypt() for v in back])
    return {
        "encrypt": round(enc_s, 3),
        "serialize": round(ser_s, 3),
        "deserialize": round(des_s, 3),
        "decrypt": round(dec_s, 3),
        "bytes_vs_float32": round(sum(len(b) for b in blobs) / (4 * w.size), 3),
    }


def cost_one(mode: str, task: str, n_params: int, n_sites: int, rounds: int) -> dict[str, Any]:
    from medcloud.federated.keys import KeyPaths, aggregator_backend, site_backend
    from medcloud.federated.simulate import ceremony, site_names

    names = site_names(n_sites)
    w0 = _initial(task, n_params)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        ceremony(mode, root, names)
        keygen_s = time.perf_counter() - t
        agg = FedAvgAggregator(aggregator_backend(mode, root / "public"))
        sites = []
        for i, n in enumerate(names):
            train, n_examples = _trainer(task, i, n_params)
            be = site_backend(mode, KeyPaths(n, root / n, root / "public"))
            sites.append(FedAvgSite(n, be, train, n_examples, weight_unit=backend_spec(mode).weight_unit))
        train_s = [_timed(s.train, w0)[1] for s in sites]  # warm-up (torch's first step), then timed
        train_s = [_timed(s.train, w0)[1] for s in sites]
        _, stats = run_fedavg(agg, sites, w0, rounds)
        encrypted = backend_spec(mode).encrypted
        parts = components(mode, sites[0].backend, agg, w0, n_sites, sites) if encrypted else {}
    steady = stats[1:] or stats  # round 1 opens a plaintext initial model
    last = stats[-1]
    out = {
        "mode": mode,
        "keygen_seconds_all_sites": round(keygen_s, 3),
        # In this process the sites run one after another: the sum of every site's work.
        "round_seconds_sequential": [round(s.seconds, 3) for s in stats],
        "local_train_seconds_mean": round(float(np.mean(train_s)), 3),
        "site_seconds_mean": round(float(np.mean([v for s in steady for v in s.site_seconds.values()])), 3),
        "aggregator_seconds_mean": round(float(np.mean([s.aggregator_seconds for s in steady])), 3),
        # One machine per site: the slowest site (open the global model, train, encrypt, upload),
        # then the aggregation (and, in threshold mode, the slowest partial decryption and fusion).
        "round_seconds_sites_in_parallel": round(float(np.mean([s.parallel_seconds for s in steady])), 3),
        "bytes_up_per_site": int(np.mean(list(last.bytes_up.values()))),
        "bytes_down_per_site": int(np.mean(list(last.bytes_down.values()))),
        "decryption_share_bytes_per_site": int(np.mean(list(last.share_bytes.values()))) if last.share_bytes else 0,
    }
    if parts:
        out["he_seconds_one_site"] = parts
    if not encrypted:
        out["note"] = "the in-process plain protocol frames float64; the byte baseline is Flower's float32"
    return out


def available_modes(wanted: str) -> list[str]:
    """plain first (the baseline), then the encrypted modes this Python can run (threshold: in
    process, or through the 3.10 sidecar), as asked."""
    modes = ["plain", *modes_where(lambda spec: spec.encrypted and not spec.unavailable())]
    asked = [m.strip() for m in wanted.split(",") if m.strip()] if wanted else modes
    return ["plain"] + [m for m in modes[1:] if m in asked]


def cost_section(task: str, n_params: int, n_sites: int, rounds: int, wanted: str = "") -> dict[str, Any]:
    import os

    modes = available_modes(wanted)
    if task == "mlp" and not importlib.util.find_spec("torch"):
        task = "synthetic"  # the CPython 3.10 venv (OpenFHE) has no torch
    if task == "mlp":
        from medcloud.federated import mlp

        n_params = mlp.n_params()
    out: dict[str, Any] = {
        "task": TASKS[task],
        "n_params": n_params,
        "sites": n_sites,
        "rounds": rounds,
        "python": sys.version.split()[0],
        "cpu_cores": os.cpu_count(),
        "round_contains": ROUND_CONTAINS,
    }
    flower_plain_bytes = 4 * n_params  # Flower FedAvg float32 ArrayRecord payload
    out["flower_plain_fedavg_bytes_each_way"] = flower_plain_bytes
    results = {m: cost_one(m, task, n_params, n_sites, rounds) for m in modes}
    base = results["plain"]
    for m, r in results.items():
        r["bytes_up_vs_float32"] = round(r["bytes_up_per_site"] / flower_plain_bytes, 3)
        r["bytes_down_vs_float32"] = round(r["bytes_down_per_site"] / flower_plain_bytes, 3)
        if r["decryption_share_bytes_per_site"]:
            r["share_bytes_vs_float32"] = round(r["decryption_share_bytes_per_site"] / flower_plain_bytes, 3)
        if m != "plain":
            par, plain_par = r["round_seconds_sites_in_parallel"], base["round_seconds_sites_in_parallel"]
            r["time_ratio_sites_in_parallel"] = round(par / plain_par, 2)
            r["he_overhead_seconds_per_round"] = round(par - plain_par, 3)
            r["he_overhead_seconds_per_site"] = round(r["site_seconds_mean"] - base["site_seconds_mean"], 3)
            if task == "mlp":
                # Local samples per round at which this overhead would be half a plain round (1.5x).
                per_sample = base["local_train_seconds_mean"] / 320
                r["samples_per_site_for_1_5x"] = int(2 * r["he_overhead_seconds_per_round"] / per_sample)
    out["modes"] = results
    return out


TASKS = {
    "mlp": "torch MLP 784-1024-200-10 (1,010,850 params), 1 local epoch, 320 synthetic samples/site, batch 32",
    "synthetic": "no training: w + 1e-3 N(0,1) (protocol cost only)",
}
ROUND_CONTAINS = (
    "site: open the global model (plain: float32 copy; ckks, aes: deserialize + decrypt the encrypted sum), "
    "one local epoch, weight by n_k, encrypt + serialize the upload; aggregator: sum the uploads "
    "(threshold: + every site's partial decryption and the fusion). No network: bytes are counted."
)


def flower_one(mode: str, task: str, n_params: int, n_sites: int, rounds: int) -> dict[str, Any]:
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.simulate import simulate

    settings = FLSettings(
        mode=mode, task=task, n_params=n_params, num_sites=n_sites, rounds=rounds, evaluate=False,
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


def flower_section(
    task: str, n_params: int, n_sites: int, rounds: int, wanted: str = "", repeat: int = 1
) -> dict[str, Any]:
    """One simulation per mode, `repeat` times interleaved (plain, ckks, aes, ..., plain, ...): each
    repetition's ratio to the plain run next to it, and medians across repetitions."""
    import os

    modes = available_modes(wanted)
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(repeat):
        for m in modes:
            runs[m].append(flower_one(m, task, n_params, n_sites, rounds))
    results: dict[str, dict[str, Any]] = {}
    for m, rs in runs.items():
        r = dict(rs[-1])
        if repeat > 1:
            r["round_seconds_mean_each_repeat"] = [x["round_seconds_mean"] for x in rs]
            r["round_seconds_mean"] = round(float(np.median(r["round_seconds_mean_each_repeat"])), 3)
            r["site_seconds_mean"] = round(float(np.median([x["site_seconds_mean"] for x in rs])), 3)
        results[m] = r
    base = results["plain"]
    for m, r in results.items():
        if m == "plain":
            continue
        if repeat > 1:
            key = "round_seconds_mean"
            pairs = zip(runs[m], runs["plain"], strict=True)
            r["time_ratio_each_repeat"] = [round(a[key] / b[key], 2) for a, b in pairs]
        r["time_ratio_vs_plain"] = round(r["round_seconds_mean"] / base["round_seconds_mean"], 2)
        r["he_overhead_seconds_per_round"] = round(r["round_seconds_mean"] - base["round_seconds_mean"], 3)
        r["he_overhead_seconds_per_site"] = round(r["site_seconds_mean"] - base["site_seconds_mean"], 3)
        r["bytes_up_ratio_vs_plain"] = round(r["bytes_up_per_site"] / base["bytes_up_per_site"], 3)
        r["bytes_down_ratio_vs_plain"] = round(r["bytes_down_per_site"] / base["bytes_down_per_site"], 3)
    if task == "mlp":
        from medcloud.federated import mlp

        n_params = mlp.n_params()
    return {
        "engine": f"Flower simulation (Ray), all {n_sites} sites sharing this machine's {os.cpu_count()} cores",
        "task": TASKS[task],
        "round_contains": ROUND_CONTAINS + " Flower: + message transport between Ray workers.",
        "n_params": n_params,
        "sites": n_sites,
        "rounds": rounds,
        "repeats": repeat,
        "python": sys.version.split()[0],
        "plain_baseline": "Flower FedAvg, float32 ArrayRecord",
        # Issue 14: aes within 1.3x plaintext by the median of interleaved repeats, its bytes within 2x float32.
        "targets": {"time_ratio": 1.3, "aes_bytes_ratio": 2.0, "bytes_ratio": 8.0},
        "modes": results,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--image-rounds", type=int, default=10, help="rounds of the image task (accuracy section)")
    ap.add_argument("--params", type=int, default=1_000_000)
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--cost-rounds", type=int, default=3)
    ap.add_argument("--cost", action="store_true", help="cost only (the 3.10 venv has no scikit-learn)")
    ap.add_argument("--flower", action="store_true", help="plaintext Flower FedAvg vs the HE modes through Flower")
    ap.add_argument("--task", choices=sorted(TASKS), default="mlp", help="local step of the cost runs")
    ap.add_argument("--modes", default="", help="encrypted modes to compare with plain (default: all available)")
    ap.add_argument("--repeat", type=int, default=1, help="--flower: interleaved repetitions (medians)")
    args = ap.parse_args()
    report: dict[str, Any] = {}
    if args.flower:
        report["flower_cost"] = flower_section(
            args.task, args.params, args.sites, max(args.cost_rounds, 3), args.modes, args.repeat
        )
        print(json.dumps(report, indent=2))
        return
    if not args.cost and importlib.util.find_spec("sklearn") and importlib.util.find_spec("tenseal"):
        report["accuracy"] = accuracy_section(args.rounds)
        if importlib.util.find_spec("torch"):
            report["accuracy_images"] = image_accuracy_section(args.image_rounds)
    report["cost"] = cost_section(args.task, args.params, args.sites, args.cost_rounds, args.modes)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
