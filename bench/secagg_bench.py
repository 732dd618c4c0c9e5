"""Flower's own SecAgg+ (pairwise masks, no shared key) next to plaintext FedAvg; prints JSON.

  .venv/bin/python bench/secagg_bench.py                 # 3 rounds, 5 sites, the 1M-param MLP
  .venv/bin/python bench/secagg_bench.py --repeat 3      # interleaved plain, secagg+, plain, ...

Same task as `fl_bench.py --flower`: the torch MLP (1,010,850 parameters, `medcloud.federated.mlp`),
one local epoch per site per round, 5 sites in Flower's simulation engine (Ray) sharing this
machine's cores. Both modes run through the same legacy Flower path (`DefaultWorkflow`, the
classic `FedAvg` strategy, a `NumPyClient`), so the only difference is the fit workflow:
`default_fit_workflow` (plain) or `SecAggPlusWorkflow` with `secaggplus_mod` on the sites.

Round seconds are the fit workflow's wall time (every message round trip of the round, local
training and aggregation included). Bytes are the serialized message contents (Flower's
RecordDict protobuf) that cross the grid, per site and per round, counted at the ServerApp.
Parity: the final SecAgg+ model against the final plaintext one (SecAgg+ quantizes, so they
differ by the quantization error carried through the rounds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np

from medcloud.federated import mlp

NUM_SHARES = 3
RECONSTRUCTION_THRESHOLD = 2
CLIPPING_RANGE = 4.0  # |w| of the MLP stays far below this (checked: max_abs_weight in the output)
QUANTIZATION_RANGE = 2**22  # Flower's default; step = 2 * clip / range ~ 1.9e-6 per site
MODULUS_RANGE = 2**32
MAX_WEIGHT = 1000.0  # num_examples (320 per site) / max_weight must stay <= 1


class _CountingGrid:
    """Wraps the Grid the workflow uses: counts the serialized content of each message per site."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid
        self.down: dict[int, int] = defaultdict(int)
        self.up: dict[int, int] = defaultdict(int)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    @staticmethod
    def _size(msg: Any) -> int:
        from flwr.common.serde import recorddict_to_proto

        return int(recorddict_to_proto(msg.content).ByteSize()) if msg.has_content() else 0

    def send_and_receive(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        messages = list(messages)
        for m in messages:
            self.down[int(m.metadata.dst_node_id)] += self._size(m)
        replies = list(self._grid.send_and_receive(messages, *args, **kwargs))
        for r in replies:
            self.up[int(r.metadata.src_node_id)] += self._size(r)
        return replies


def run_one(mode: str, n_sites: int, rounds: int, drop: int | None = None) -> dict[str, Any]:
    """One simulation; `drop`: that site's fit fails every round (it sent its keys, never its update)."""
    from flwr.client import ClientApp, NumPyClient
    from flwr.client.mod import secaggplus_mod
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
    from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
    from flwr.simulation import run_simulation

    class Site(NumPyClient):  # type: ignore[misc]
        def __init__(self, index: int) -> None:
            self.task = mlp.SiteTask(index)

        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            if self.task.index == drop:
                raise RuntimeError("site dropped (bench: simulated dropout)")
            w = self.task.train(np.asarray(parameters[0], dtype=np.float64))
            return [w.astype(np.float32)], int(self.task.n_examples), {}

    def client_fn(context: Context) -> Any:
        return Site(int(context.node_config["partition-id"])).to_client()

    client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod] if mode == "secagg+" else [])

    init = np.asarray(mlp.initial_weights(), dtype=np.float32)
    out: dict[str, Any] = {"mode": mode, "round_seconds": [], "results_per_round": []}

    class CountingFedAvg(FedAvg):  # type: ignore[misc]
        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            out["results_per_round"].append(len(results))
            return super().aggregate_fit(server_round, results, failures)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = CountingFedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=n_sites,
            min_available_clients=n_sites,
            initial_parameters=ndarrays_to_parameters([init]),
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=rounds), strategy=strategy)
        counting = _CountingGrid(grid)
        if mode == "secagg+":
            inner: Any = SecAggPlusWorkflow(
                num_shares=NUM_SHARES,
                reconstruction_threshold=RECONSTRUCTION_THRESHOLD,
                max_weight=MAX_WEIGHT,
                clipping_range=CLIPPING_RANGE,
                quantization_range=QUANTIZATION_RANGE,
                modulus_range=MODULUS_RANGE,
            )
        else:
            from flwr.server.workflow.default_workflows import default_fit_workflow

            inner = default_fit_workflow

        def timed_fit(_grid: Any, ctx: Any) -> None:
            t = time.perf_counter()
            inner(counting, ctx)
            out["round_seconds"].append(round(time.perf_counter() - t, 3))

        DefaultWorkflow(fit_workflow=timed_fit)(grid, legacy)
        arr = legacy.state.array_records[MAIN_PARAMS_RECORD]
        out["final"] = np.concatenate([a.numpy().ravel() for a in arr.values()]).astype(np.float64)
        out["down"], out["up"] = dict(counting.down), dict(counting.up)

    t = time.perf_counter()
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=n_sites,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": 2}},
    )
    out["run_seconds_incl_ray"] = round(time.perf_counter() - t, 2)
    if "final" not in out:
        raise RuntimeError(f"{mode}: the ServerApp did not finish (see Flower's log above)")
    steady = out["round_seconds"][1:] or out["round_seconds"]  # round 1 also warms up Ray's workers
    out["round_seconds_mean"] = round(float(np.mean(steady)), 3)
    out["bytes_down_per_site_per_round"] = int(np.mean(list(out.pop("down").values())) / rounds)
    out["bytes_up_per_site_per_round"] = int(np.mean(list(out.pop("up").values())) / rounds)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sites", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repetitions (medians)")
    ap.add_argument("--drop", type=int, default=4, help="site index that fails in the dropout runs (-1: none)")
    args = ap.parse_args()
    modes = ["plain", "secagg+"]
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    for _ in range(args.repeat):
        for m in modes:
            runs[m].append(run_one(m, args.sites, args.rounds))
    dropout: dict[str, Any] = {}
    if args.drop >= 0:  # one site fails in fit every round: plain FedAvg on the rest vs SecAgg+ recovering
        dp, ds = (
            run_one("plain", args.sites, args.rounds, args.drop),
            run_one("secagg+", args.sites, args.rounds, args.drop),
        )
        dropout = {
            "dropped_site_index": args.drop,
            "what": "the site takes part in SecAgg+ setup and key sharing, then fails before uploading, every round",
            "plain_results_per_round": dp["results_per_round"],
            "secagg_results_per_round": ds["results_per_round"],
            "secagg_rounds_completed": len(ds["round_seconds"]),
            "secagg_round_seconds": ds["round_seconds"],
            "max_abs_diff_vs_plain_fedavg_of_survivors": float(np.max(np.abs(ds["final"] - dp["final"]))),
        }
    ratios = [
        round(s["round_seconds_mean"] / p["round_seconds_mean"], 2)
        for p, s in zip(runs["plain"], runs["secagg+"], strict=True)
    ]
    plain_final, sec_final = runs["plain"][-1]["final"], runs["secagg+"][-1]["final"]
    n_params = mlp.n_params()
    results: dict[str, Any] = {}
    for m, rs in runs.items():
        last = rs[-1]
        results[m] = {
            "round_seconds_each_repeat": [r["round_seconds"] for r in rs],
            "round_seconds_mean_each_repeat": [r["round_seconds_mean"] for r in rs],
            "round_seconds_median": round(float(np.median([r["round_seconds_mean"] for r in rs])), 3),
            "run_seconds_incl_ray_each_repeat": [r["run_seconds_incl_ray"] for r in rs],
            "bytes_down_per_site_per_round": last["bytes_down_per_site_per_round"],
            "bytes_up_per_site_per_round": last["bytes_up_per_site_per_round"],
            "bytes_up_vs_float32": round(last["bytes_up_per_site_per_round"] / (4 * n_params), 3),
            "bytes_down_vs_float32": round(last["bytes_down_per_site_per_round"] / (4 * n_params), 3),
        }
    report = {
        "engine": f"Flower simulation (Ray), all {args.sites} sites sharing this machine's {os.cpu_count()} cores",
        "task": "torch MLP 784-1024-200-10 (1,010,850 params), 1 local epoch, 320 synthetic samples/site, batch 32",
        "flower_path": "DefaultWorkflow + classic FedAvg + NumPyClient; fit workflow: default vs SecAggPlusWorkflow",
        "n_params": n_params,
        "sites": args.sites,
        "rounds": args.rounds,
        "repeats": args.repeat,
        "python": sys.version.split()[0],
        "round_seconds": "fit workflow wall time; mean over rounds 2.. (round 1 warms Ray), median over repeats",
        "bytes": "serialized RecordDict content per site per round, all messages of the round, at the ServerApp",
        "secagg_config": {
            "num_shares": NUM_SHARES,
            "reconstruction_threshold": RECONSTRUCTION_THRESHOLD,
            "clipping_range": CLIPPING_RANGE,
            "quantization_range": QUANTIZATION_RANGE,
            "modulus_range": MODULUS_RANGE,
            "max_weight": MAX_WEIGHT,
        },
        "modes": results,
        "time_ratio_each_repeat": ratios,
        "time_ratio_median": round(float(np.median(ratios)), 2),
        "bytes_up_ratio_vs_plain": round(
            results["secagg+"]["bytes_up_per_site_per_round"] / results["plain"]["bytes_up_per_site_per_round"], 3
        ),
        "bytes_down_ratio_vs_plain": round(
            results["secagg+"]["bytes_down_per_site_per_round"] / results["plain"]["bytes_down_per_site_per_round"], 3
        ),
        "parity": {
            "max_abs_diff_final_model": float(np.max(np.abs(sec_final - plain_final))),
            "mean_abs_diff_final_model": float(np.mean(np.abs(sec_final - plain_final))),
            "max_abs_weight": float(np.max(np.abs(plain_final))),
            "quantization_step_per_site": 2 * CLIPPING_RANGE / QUANTIZATION_RANGE,
        },
        "dropout_run": dropout,
        "dropout_tolerance": (
            f"each site splits its mask secrets into {NUM_SHARES} shares (num_shares: one kept, one to each of "
            f"its {NUM_SHARES - 1} neighbours); the server needs {RECONSTRUCTION_THRESHOLD} of them "
            f"(reconstruction_threshold), so up to {NUM_SHARES - RECONSTRUCTION_THRESHOLD} share-holder(s) of "
            "any site may be missing per round; a site that drops after key sharing has its pairwise masks "
            "rebuilt from its neighbours' shares and the round aggregates the survivors (see dropout_run). "
            "No key ceremony: keys are fresh each round."
        ),
        "server_learns": (
            "the weighted sum of the surviving sites' quantized updates (hence the new global model, in clear) "
            "and which sites took part; each upload is hidden by pairwise masks plus a private mask. "
            "Security is against an honest-but-curious server colluding with fewer than "
            "reconstruction_threshold sites; the global model itself is plaintext at the server and every site."
        ),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
