"""The ServerApp and ClientApp. Module-level `server_app`/`client_app` read their settings from
Flower's run and node configs (deployment: `flower-superlink` + `flower-supernode`); the
`build_*` functions close over settings for in-process simulation."""

from __future__ import annotations

import functools
import io
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from medcloud.errors import InvalidInput
from medcloud.federated import mlp, tabular, threshold_chain
from medcloud.federated.audit import RoundRecorder
from medcloud.federated.dp import DPConfig, epsilon
from medcloud.federated.flower.settings import FLSettings
from medcloud.federated.flower.strategy import (
    HE_STYPE,
    DeepProtectStrategy,
    EncryptedFedAvg,
    PlainFedAvg,
    he_array,
    scalar,
    site_name,
)
from medcloud.federated.he.base import HEBackend
from medcloud.federated.he.registry import backend_spec
from medcloud.federated.keyfiles import write_key
from medcloud.federated.keys import KeyPaths, aggregator_backend, recovered_backend, site_backend, threshold_of
from medcloud.federated.protocol import DeepProtectSite, FedAvgSite, encode_plain
from medcloud.fsio import write_atomic

# --- site side ----------------------------------------------------------------------------------

_BACKENDS: dict[tuple[str, str, str], HEBackend] = {}


def _site_identity(settings: FLSettings, context: Context) -> tuple[str, int, KeyPaths]:
    node = dict(context.node_config)
    index = int(node.get("site-index", node.get("partition-id", 0)))
    name = str(node.get("site", f"site{index + 1}"))
    root = Path(settings.keys_root) if settings.keys_root else None
    site_dir = Path(str(node["site-dir"])) if "site-dir" in node else (root / name if root else Path(name))
    public = Path(str(node["public-dir"])) if "public-dir" in node else settings.public_path()
    return name, index, KeyPaths(name, site_dir, public)


def _backend(settings: FLSettings, paths: KeyPaths) -> HEBackend:
    key = (settings.mode, paths.site, str(paths.site_dir))
    if key not in _BACKENDS:
        _BACKENDS[key] = site_backend(settings.mode, paths)
    return _BACKENDS[key]


_MLP: dict[tuple[int, int], Any] = {}
_IMAGES: dict[tuple[int, int, int, int], Any] = {}


def _image_site(settings: FLSettings, index: int) -> Any:
    """This site's SYNTHETIC images (`medcloud.federated.images.make_site`), made once per process."""
    from medcloud.federated import images

    key = (index, settings.images_train, settings.images_test, settings.images_seed)
    if key not in _IMAGES:
        _IMAGES[key] = images.make_site(index, settings.images_train, settings.images_test, settings.images_seed)
    return _IMAGES[key]


class _LocalTask:
    """What a site trains on: its breast-cancer partition, its SYNTHETIC site-shifted images and the
    small CNN (`medcloud.federated.images`), a 1M-parameter torch MLP on synthetic samples (cost
    benches, `medcloud.federated.mlp`), or a synthetic update (protocol cost only)."""

    def __init__(self, settings: FLSettings, index: int, name: str) -> None:
        self.settings = settings
        self.index = index
        self.data: tabular.SiteData | None = None
        self.mlp: Any = None
        self.images: Any = None
        if settings.task == "images":
            self.images = _image_site(settings, index)
            self.n_examples = int(self.images.n_train)
        elif settings.task == "mlp":
            key = (index, settings.mlp_samples)
            if key not in _MLP:  # one model and data set per site process, as on a real site
                _MLP[key] = mlp.SiteTask(index, samples=settings.mlp_samples)
            self.mlp = _MLP[key]
            self.n_examples = int(self.mlp.n_examples)
        elif settings.task == "breast-cancer":
            self.data = tabular.load_sites(settings.num_sites)[index]
            self.n_examples = self.data.n_train
        else:
            self.n_examples = 100 + 10 * index
        self.rng = np.random.default_rng(1000 + index)

    def train(self, w: np.ndarray) -> np.ndarray:
        if self.images is not None:
            from medcloud.federated import images

            s = self.settings
            return images.local_train(w, self.images, epochs=s.images_epochs, lr=s.images_lr)
        if self.mlp is not None:
            return np.asarray(self.mlp.train(w), dtype=np.float64)
        if self.data is not None:
            return tabular.local_train(w, self.data, self.settings.local_epochs, self.settings.lr)
        return np.asarray(w + 1e-3 * self.rng.standard_normal(w.size), dtype=np.float64)

    def grad(self, w: np.ndarray) -> np.ndarray:
        if self.images is not None:
            raise InvalidInput("the images task runs FedAvg, not DeepProtect")
        if self.mlp is not None:  # one local epoch expressed as a step: (w - train(w)) / lr
            return np.asarray((w - self.mlp.train(w)) / self.settings.lr, dtype=np.float64)
        if self.data is not None:
            return tabular.gradient(w, self.data.x_train, self.data.y_train)
        return np.asarray(1e-3 * self.rng.standard_normal(w.size), dtype=np.float64)

    def evaluate(self, w: np.ndarray) -> tuple[float, int]:
        if self.images is not None:
            from medcloud.federated import images

            return images.evaluate(w, self.images.x_test, self.images.y_test), int(self.images.y_test.size)
        if self.mlp is not None:
            return float(self.mlp.accuracy(w)), int(self.mlp.n_examples)
        if self.data is None:
            return float("nan"), 0
        return tabular.accuracy(w, self.data.x_test, self.data.y_test), int(self.data.y_test.size)


def _dp(settings: FLSettings) -> DPConfig | None:
    if settings.dp_clip > 0 and settings.dp_noise > 0:
        return DPConfig(settings.dp_clip, settings.dp_noise, settings.dp_delta)
    return None


def _global_weights(arr: Array, backend: HEBackend, total_weight: float) -> np.ndarray:
    """The global model's weights at a site: as sent, or decrypted (a model the aggregator holds
    encrypted: FedAvg with a shared key, DeepProtect in any mode, the plain one included)."""
    if arr.stype != HE_STYPE:
        return np.asarray(arr.numpy(), dtype=np.float64).ravel()
    return backend.decrypt(backend.deserialize(bytes(arr.data))) / total_weight


def _reply(
    msg: Message, arrays: ArrayRecord, metrics: dict[str, Any], site: dict[str, Any], t0: float | None = None
) -> Message:
    if t0 is not None:
        # Seconds this site spent on the message (decrypt, train, encrypt): the round's site share.
        site["seconds"] = round(time.perf_counter() - t0, 4)
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord(metrics), "site": ConfigRecord(site)})
    return Message(content=content, reply_to=msg)


SITE_LOG = logging.getLogger("medcloud.federated.site")
Handler = Callable[[Message, Context], Message]


class SiteFailed(RuntimeError):
    """What crosses the Flower boundary when a site fails: no detail, only an incident id."""


def no_oracle(handler: Handler) -> Handler:
    """Flower forwards a ClientApp's exception text to the ServerApp. A message that named a value
    (a decrypted sum out of range, say) would let an aggregator that chooses inputs test values it
    cannot decrypt, so the details go to the site's own log under an incident id, and the server
    gets that id only."""

    @functools.wraps(handler)
    def guarded(msg: Message, context: Context) -> Message:
        try:
            return handler(msg, context)
        except Exception:
            incident = secrets.token_hex(4)
            SITE_LOG.exception("site failed on a %s message (incident %s)", msg.metadata.message_type, incident)
            raise SiteFailed(
                f"the site could not process this message (incident {incident}; see the site's log)"
            ) from None

    return guarded


def build_client_app(defaults: FLSettings | None = None) -> ClientApp:
    app = ClientApp()

    def settings_of(context: Context, msg: Message) -> FLSettings:
        base = defaults.to_config() if defaults else {}
        return FLSettings.from_config(base, context.run_config, context.node_config)

    @app.train()
    @no_oracle
    def train(msg: Message, context: Context) -> Message:
        t0 = time.perf_counter()
        s = settings_of(context, msg)
        name, index, paths = _site_identity(s, context)
        backend = _backend(s, paths)
        task = _LocalTask(s, index, name)
        cfg = msg.content.config_records["config"]
        arr = msg.content.array_records["arrays"]["global"]
        total = scalar(cfg.get("total-weight", 1.0))
        if s.protocol == "deepprotect":
            site = DeepProtectSite(name, backend, task.grad, s.lr, _dp(s), task.rng)
            up = site.update(bytes(arr.data), refresh=bool(cfg.get("refresh", False)))
            arrays = {"update": he_array(up.update, int(arr.shape[0]))}
            if up.refresh is not None:
                arrays["refresh"] = he_array(up.refresh, int(arr.shape[0]))
            return _reply(
                msg,
                ArrayRecord(arrays),
                {"num-examples": float(task.n_examples)},
                {"name": name, "model-version": int(scalar(cfg.get("model-version", 0)))},
                t0,
            )
        fsite = FedAvgSite(
            name, backend, task.train, task.n_examples, _dp(s), task.rng, weight_unit=s.resolved_weight_unit()
        )
        w = fsite.local_update(_global_weights(arr, backend, total))
        if not backend_spec(s.mode).encrypted:
            # Plaintext baseline: exactly what Flower's FedAvg expects.
            out = ArrayRecord({"global": Array(w.astype(arr.dtype if arr.dtype != "ciphertext" else "float64"))})
            return _reply(msg, out, {"num-examples": float(task.n_examples)}, {"name": name}, t0)
        blob = fsite.upload(w)
        return _reply(
            msg,
            ArrayRecord({"update": he_array(blob, w.size)}),
            {"num-examples": float(task.n_examples), "weight": fsite.weight, "weight-unit": fsite.weight_unit},
            {"name": name},
            t0,
        )

    @app.train("decrypt")
    @no_oracle
    def decrypt(msg: Message, context: Context) -> Message:
        t0 = time.perf_counter()
        s = settings_of(context, msg)
        name, _, paths = _site_identity(s, context)
        backend = _backend(s, paths)
        arr = msg.content.array_records["arrays"]["sum"]
        share = backend.partial_decrypt(backend.deserialize(bytes(arr.data)))
        return _reply(msg, ArrayRecord({"share": he_array(share, int(arr.shape[0]))}), {}, {"name": name}, t0)

    @app.train("release")
    @no_oracle
    def release(msg: Message, context: Context) -> Message:
        """t-of-N: re-seal this site's share of a dropped site's key to the recovering site (sealed to
        its confirmed identity, signed by this site); the server only carries the blob."""
        t0 = time.perf_counter()
        s = settings_of(context, msg)
        name, _, paths = _site_identity(s, context)
        cfg = msg.content.config_records["config"]
        missing, to = str(cfg["missing"]), str(cfg["to"])
        from medcloud.federated.he import bridge  # OpenFHE in process or in its sidecar

        bridge.threshold_release(paths, missing, to)
        blob = paths.threshold_release(missing, paths.site, to)
        sig = blob.with_name(blob.name + ".sig")
        sealed, signature = blob.read_bytes(), sig.read_bytes()
        arrays = {"release": he_array(sealed, len(sealed)), "sig": he_array(signature, len(signature))}
        return _reply(msg, ArrayRecord(arrays), {}, {"name": name}, t0)

    @app.train("recover")
    @no_oracle
    def recover(msg: Message, context: Context) -> Message:
        """t-of-N: stand in for a dropped site: rebuild its key share from this site's own share and
        the released ones (each checked against its author's signature), make its partial decryption."""
        t0 = time.perf_counter()
        s = settings_of(context, msg)
        name, _, paths = _site_identity(s, context)
        cfg = msg.content.config_records["config"]
        missing = str(cfg["missing"])
        arrays = msg.content.array_records["arrays"]
        for key in arrays:
            if key.startswith("release-"):
                holder = key[len("release-") :]
                target = paths.threshold_release(missing, holder, paths.site)
                write_key(target, bytes(arrays[key].data))
                write_key(target.with_name(target.name + ".sig"), bytes(arrays[f"sig-{holder}"].data))
        from medcloud.federated.he import bridge  # OpenFHE in process or in its sidecar

        bridge.threshold_recover(paths, missing)
        stand_in = recovered_backend(paths, missing, s.mode)
        try:
            arr = arrays["sum"]
            share = stand_in.partial_decrypt(stand_in.deserialize(bytes(arr.data)))
        finally:
            getattr(stand_in, "close", lambda: None)()
        return _reply(msg, ArrayRecord({"share": he_array(share, int(arr.shape[0]))}), {}, {"name": name}, t0)

    @app.evaluate()
    @no_oracle
    def evaluate(msg: Message, context: Context) -> Message:
        s = settings_of(context, msg)
        name, index, paths = _site_identity(s, context)
        backend = _backend(s, paths)
        cfg = msg.content.config_records["config"]
        w = _global_weights(
            msg.content.array_records["arrays"]["global"], backend, scalar(cfg.get("total-weight", 1.0))
        )
        task = _LocalTask(s, index, name)
        acc, n = task.evaluate(w)
        site: dict[str, Any] = {"name": name}
        if task.images is not None:  # what the model card says about this site's SYNTHETIC data
            site["describe"] = json.dumps(task.images.describe())
        return _reply(msg, ArrayRecord(), {"accuracy": acc, "num-examples": float(max(n, 1))}, site)

    return app


# --- server side --------------------------------------------------------------------------------


def _initial_weights(settings: FLSettings) -> np.ndarray:
    if settings.task == "images":
        from medcloud.federated import images

        return images.initial_weights()  # seeded: the same on every machine
    if settings.task == "breast-cancer":
        return np.zeros(tabular.n_params(), dtype=np.float64)
    if settings.task == "mlp":
        return mlp.initial_weights()
    # The synthetic cost task stands for a torch model: float32, as Flower's FedAvg would send it.
    return np.zeros(settings.n_params, dtype=np.float32)


def run_server(grid: Grid, settings: FLSettings) -> dict[str, Any]:
    """Run all rounds on `grid`; save the model (where readable) and a model card; return the card."""
    recorder = RoundRecorder(
        settings.hub or None, settings.token or None, Path(settings.audit_file) if settings.audit_file else None
    )
    if settings.task == "images" and settings.register_dir:
        from medcloud.vision.registry import check_new_version

        # Before any round: a name or version the registry would refuse must not cost a training run.
        check_new_version(Path(settings.register_dir), settings.model_name, settings.resolved_model_version())
    w0 = _initial_weights(settings)
    n_sites = settings.num_sites
    common: dict[str, Any] = {
        "fraction_train": settings.fraction_train,
        "fraction_evaluate": 1.0 if settings.evaluate else 0.0,
        "min_train_nodes": max(1, int(n_sites * settings.fraction_train)),
        "min_evaluate_nodes": n_sites if settings.evaluate else 0,
        "min_available_nodes": n_sites,
    }
    spec = backend_spec(settings.mode)
    parties: list[str] = []
    t = 0
    if spec.threshold and settings.protocol == "fedavg":
        threshold_chain.check_aggregator(settings.public_path())  # the signed chain, complete and consistent
        parties = [str(p) for p in json.loads((settings.public_path() / "threshold.parties.json").read_bytes())]
        t = threshold_of(settings.public_path(), parties)
        if t < len(parties):
            # A t-of-N key survives N - t sites dropping out: a round needs t of them, not all (Flower
            # would otherwise wait for the missing nodes before sampling the next round).
            common["min_available_nodes"] = t
            common["min_train_nodes"] = max(1, min(common["min_train_nodes"], t))
    t0 = time.perf_counter()
    strategy: FedAvg
    if settings.protocol == "deepprotect":
        backend = aggregator_backend(settings.mode, settings.public_path())
        enc = backend.serialize(backend.encrypt_public(w0))
        strategy = DeepProtectStrategy(backend, enc, w0.size, recorder, **common)
        initial = ArrayRecord({"global": he_array(enc, w0.size)})
    elif not backend_spec(settings.mode).encrypted:
        strategy = PlainFedAvg(recorder, **common)
        initial = ArrayRecord({"global": Array(w0)})
    else:
        backend = aggregator_backend(settings.mode, settings.public_path())
        strategy = EncryptedFedAvg(backend, recorder, parties, t, settings.round_timeout, **common)
        initial = ArrayRecord({"global": Array(w0)})
    result = strategy.start(grid, initial, num_rounds=settings.rounds, timeout=settings.round_timeout)
    final = result.arrays["global"]
    readable = final.stype != HE_STYPE
    card: dict[str, Any] = {
        "name": settings.run_name,
        "task": settings.task,
        "protocol": settings.protocol,
        "mode": settings.mode,
        "rounds": settings.rounds,
        "sites": sorted({p for e in recorder.events for p in e.participants}),
        "n_params": int(w0.size),
        "seconds": round(time.perf_counter() - t0, 3),
        "model_readable_by_aggregator": readable,
        # Sites divide the decrypted weighted sum by this to open an encrypted model.
        "total_weight": float(getattr(strategy, "total_weight", 1.0)) if not readable else 1.0,
        "client_metrics": {str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
        "rounds_audit": [e.body() for e in recorder.events],
    }
    if settings.dp_clip > 0 and settings.dp_noise > 0:
        card["dp"] = {
            "clip_norm": settings.dp_clip,
            "noise_multiplier": settings.dp_noise,
            "delta": settings.dp_delta,
            "epsilon_per_site": round(epsilon(settings.dp_noise, settings.rounds, settings.dp_delta), 4),
            "accountant": "RDP of the Gaussian mechanism, sensitivity 2C, no subsampling",
        }
    image_fields: dict[str, Any] | None = None
    if settings.task == "images":
        image_fields = _image_card_fields(grid, settings, final, card["total_weight"], card["sites"], int(w0.size))
        card["per_site_evaluation"] = image_fields["metrics"]
    if settings.out_dir:
        out = Path(settings.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        # Written whole or not at all: a reader (the model registry, a site decrypting) never sees half a model.
        if image_fields is not None and readable:
            card["registry"] = _write_image_model(settings, np.asarray(final.numpy(), np.float64), image_fields, out)
        elif image_fields is not None:
            # Only the sites can open it: `medcloud fl open-model` at a site writes (and registers) model.onnx.
            card["image_card"] = image_fields
        if readable:
            buf = io.BytesIO()
            np.save(buf, final.numpy())
            write_atomic(out / "model.npy", buf.getvalue(), mode=0o644)
        else:
            write_atomic(out / "model.ciphertext", bytes(final.data), mode=0o644)
        write_atomic(out / "model_card.json", json.dumps(card, indent=2, default=str).encode(), mode=0o644)
    return card


def evaluate_sites(
    grid: Grid, final: Array, total_weight: float, server_round: int, timeout: float
) -> tuple[dict[str, tuple[float, int]], dict[str, Any], list[str]]:
    """After the final round: every connected site scores the global model on its own held-out
    data. Returns {site: (accuracy, n)}, what each site says about its data, and who did not answer."""
    content = RecordDict(
        {
            "arrays": ArrayRecord({"global": final}),
            "config": ConfigRecord({"server-round": server_round, "total-weight": float(total_weight)}),
        }
    )
    nodes = sorted(grid.get_node_ids())
    replies = list(
        grid.send_and_receive(
            [Message(content=content, message_type="evaluate", dst_node_id=n) for n in nodes], timeout=timeout
        )
    )
    scores: dict[str, tuple[float, int]] = {}
    described: dict[str, Any] = {}
    answered: set[int] = set()
    for r in replies:
        answered.add(r.metadata.src_node_id)
        if r.has_error():
            continue
        name = site_name(r)
        metrics = r.content.metric_records["metrics"]
        scores[name] = (scalar(metrics["accuracy"]), int(scalar(metrics["num-examples"])))
        site = r.content.config_records["site"]
        if "describe" in site:
            described[name] = json.loads(str(site["describe"]))
    failed = [f"node {r.metadata.src_node_id}" for r in replies if r.has_error()]
    failed += [f"node {n} (no answer)" for n in nodes if n not in answered]
    return scores, described, failed


def _image_card_fields(
    grid: Grid, settings: FLSettings, final: Array, total_weight: float, trained: list[str], n_params: int
) -> dict[str, Any]:
    """The images model card's fields (`images.card_fields`): per-site evaluation of the final model."""
    from medcloud.federated import images

    scores, described, failed = evaluate_sites(grid, final, total_weight, settings.rounds + 1, settings.round_timeout)
    metrics = images.per_site_metrics(scores)
    if failed:
        metrics["not_evaluated"] = failed
    s = settings
    training: dict[str, Any] = {
        "protocol": "fedavg",
        "mode": s.mode,
        "rounds": s.rounds,
        "sites": trained,
        "local_epochs": s.images_epochs,
        "optimizer": f"Adam lr {s.images_lr:g}, batch 32, fresh state each round",
        "n_params": n_params,
        "images_per_site": {"train": s.images_train, "test": s.images_test, "seed": s.images_seed},
        "engine": "Flower ServerApp + ClientApps (medcloud.federated.flower.apps), task images",
        "weight_unit": s.resolved_weight_unit(),
    }
    if s.dp_clip > 0 and s.dp_noise > 0:
        training["dp"] = {
            "clip_norm": s.dp_clip,
            "noise_multiplier": s.dp_noise,
            "delta": s.dp_delta,
            "epsilon_per_site": round(epsilon(s.dp_noise, s.rounds, s.dp_delta), 4),
            "accountant": "RDP of the Gaussian mechanism, sensitivity 2C, no subsampling",
        }
    return images.card_fields(training, dict(sorted(described.items())), metrics)


def _write_image_model(settings: FLSettings, weights: np.ndarray, fields: dict[str, Any], out: Path) -> dict[str, Any]:
    """model.onnx + card.json in `out` (what `medcloud fl train-images` writes); registered with register_dir."""
    from medcloud.federated import images

    version = settings.resolved_model_version()
    images.write_model(images.RunResult(weights, fields), out, settings.model_name, version)
    done: dict[str, Any] = {"name": settings.model_name, "version": version, "model_dir": str(out)}
    if settings.register_dir:
        from medcloud.vision.registry import register

        done["registered"] = str(register(out, Path(settings.register_dir), settings.model_name, version).path)
    return done


def build_server_app(defaults: FLSettings | None = None, results: list[dict[str, Any]] | None = None) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        settings = FLSettings.from_config(defaults.to_config() if defaults else {}, context.run_config)
        card = run_server(grid, settings)
        if results is not None:
            results.append(card)

    return app


server_app = build_server_app()
client_app = build_client_app()
__all__ = ["build_client_app", "build_server_app", "client_app", "encode_plain", "run_server", "server_app"]
