"""Flower strategies whose aggregation is homomorphic: ciphertext bytes travel in `ArrayRecord`s.

`EncryptedFedAvg` overrides `aggregate_train` to add E(n_k·w_k) uploads; for a threshold scheme
(`BackendSpec.threshold`) it asks the same sites for partial decryptions (`train.decrypt` messages) and fuses them.
`DeepProtectStrategy` keeps E(w) on the server and adds each site's E(-η·g) into it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from medcloud.federated.audit import RoundEvent, RoundRecorder
from medcloud.federated.he.base import HEBackend, HEError
from medcloud.federated.protocol import DeepProtectServer, FedAvgAggregator, decode_plain

HE_STYPE = "medcloud.he.v1"


def he_array(blob: bytes, length: int) -> Array:
    """Opaque ciphertext bytes as a Flower Array."""
    return Array(dtype="ciphertext", shape=(length,), stype=HE_STYPE, data=blob)


def scalar(value: Any) -> float:
    """A numeric Flower record value as float (records are typed as unions of lists too)."""
    return float(value)


def record_bytes(record: ArrayRecord) -> int:
    return sum(len(arr.data) for arr in record.values())


def site_seconds(replies: Iterable[Message]) -> dict[str, float]:
    """What each site reported spending on its reply (decrypt, train, encrypt), by site name."""
    out = {}
    for m in replies:
        cfg = m.content.config_records.get("site")
        if cfg is not None and "seconds" in cfg:
            out[site_name(m)] = scalar(cfg["seconds"])
    return out


def site_name(msg: Message) -> str:
    cfg = msg.content.config_records.get("site")
    return str(cfg["name"]) if cfg and "name" in cfg else f"node-{msg.metadata.src_node_id}"


class EncryptedFedAvg(FedAvg):
    """FedAvg whose `aggregate_train` sums ciphertexts it cannot read."""

    def __init__(
        self,
        backend: HEBackend,
        recorder: RoundRecorder,
        parties: list[str] | None = None,
        threshold: int = 0,
        timeout: float = 3600.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aggregator = FedAvgAggregator(backend)
        self.recorder = recorder
        # Threshold schemes: the key's parties (chain order) and t; a site missing from the partial
        # decryptions is recovered by the survivors when t < N.
        self.parties = list(parties or [])
        self.threshold = threshold or len(self.parties)
        self.timeout = timeout
        self.dropped: dict[int, dict[str, str]] = {}  # round -> dropped site -> who stood in
        self.total_weight = 1.0
        self._grid: Grid | None = None
        self._down: dict[int, int] = {}
        self.timings: list[float] = []
        self._t0 = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._grid = grid
        self._t0 = time.perf_counter()
        config["total-weight"] = float(self.total_weight)
        messages = list(super().configure_train(server_round, arrays, config, grid))
        self._down = {m.metadata.dst_node_id: record_bytes(arrays) for m in messages}
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["total-weight"] = float(self.total_weight)
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        t_agg = time.perf_counter()
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        if not valid:
            return None, None
        uploads = [bytes(m.content.array_records["arrays"]["update"].data) for m in valid]
        site_metrics = [m.content.metric_records["metrics"] for m in valid]
        weighted = ["weight" in mr for mr in site_metrics]
        units = {scalar(mr["weight-unit"]) for mr in site_metrics if "weight-unit" in mr}
        if (any(weighted) and not all(weighted)) or len(units) > 1:
            # Sites that scaled by different units cannot be averaged: refuse the round, loudly.
            raise HEError(f"sites uploaded with different weight units {sorted(units)}: set one weight-unit for all")
        weights = [scalar(mr["weight"] if "weight" in mr else mr["num-examples"]) for mr in site_metrics]
        length = int(valid[0].content.array_records["arrays"]["update"].shape[0])
        summed = self.aggregator.aggregate(uploads)
        total = float(sum(weights))
        sites = {m.metadata.src_node_id: site_name(m) for m in valid}
        up = {sites[m.metadata.src_node_id]: len(b) for m, b in zip(valid, uploads, strict=True)}
        down = {sites[n]: self._down.get(n, 0) for n in sites}
        shares: list[bytes] = []
        share_bytes: dict[str, int] = {}
        extra: dict[str, Any] = {}
        if self.aggregator.spec.threshold:
            shares, share_bytes = self._collect_shares(server_round, summed, length, list(sites), down, sites)
            if self.dropped.get(server_round):
                extra["recovered"] = dict(self.dropped[server_round])
        model = self.aggregator.finish(summed, total, server_round, shares)
        if model.encrypted:
            arrays = ArrayRecord({"global": he_array(model.payload, length)})
            self.total_weight = model.total_weight
        else:
            arrays = ArrayRecord({"global": Array(decode_plain(model.payload))})
            self.total_weight = 1.0
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key)
        self.timings.append(time.perf_counter() - self._t0)
        self.recorder.record(
            RoundEvent(
                server_round,
                f"{self.aggregator.mode}-r{server_round}",
                sorted(up),
                up,
                down,
                self.aggregator.mode,
                {
                    "share_bytes": share_bytes,
                    "seconds": round(self.timings[-1], 4),
                    "site_seconds": site_seconds(valid),
                    "aggregate_seconds": round(time.perf_counter() - t_agg, 4),
                    **extra,
                },
            )
        )
        return arrays, metrics

    def _ask(self, messages: list[Message]) -> list[Message]:
        assert self._grid is not None
        return list(self._grid.send_and_receive(messages, timeout=self.timeout))

    def _collect_shares(
        self,
        server_round: int,
        summed: bytes,
        length: int,
        nodes: list[int],
        down: dict[str, int],
        sites: dict[int, str],
    ) -> tuple[list[bytes], dict[str, int]]:
        assert self._grid is not None
        # The fusion needs every key share's partial decryption, not only the uploaders' (with
        # fraction_train < 1 some sites sit a round out but still hold their share of the key).
        everyone = sorted(set(nodes) | set(self._grid.get_node_ids()))
        content = RecordDict(
            {
                "arrays": ArrayRecord({"sum": he_array(summed, length)}),
                "config": ConfigRecord({"server-round": server_round}),
            }
        )
        msgs = [Message(content=content, message_type="train.decrypt", dst_node_id=n) for n in everyone]
        replies = self._ask(msgs)
        errors = [r for r in replies if r.has_error()]
        got: dict[str, tuple[int, bytes]] = {}  # site -> (node, its partial decryption)
        for r in replies:
            if not r.has_error():
                name = sites.get(r.metadata.src_node_id) or site_name(r)
                got[name] = (r.metadata.src_node_id, bytes(r.content.array_records["arrays"]["share"].data))
        missing = [p for p in self.parties if p not in got] if self.parties else []
        if (not self.parties and (errors or len(replies) != len(everyone))) or (
            missing and self.threshold >= len(self.parties)
        ):
            reasons = "; ".join(f"node {r.metadata.src_node_id}: {r.error.reason}" for r in errors)
            raise RuntimeError(
                f"threshold decryption needs every site: {len(got)} of {len(everyone)} "
                f"partial decryptions came back{' (' + reasons + ')' if reasons else ''}"
                + (" (make a t-of-N key, `--threshold`, to survive dropouts)" if missing else "")
            )
        shares, sizes = [], {}
        for name, (_, blob) in got.items():
            shares.append(blob)
            sizes[name] = len(blob)
            down[name] = down.get(name, 0) + len(summed)
        for gone in missing:
            name, blob = self._recover(server_round, summed, length, gone, got, down)
            shares.append(blob)
            sizes[f"{gone} (by {name})"] = len(blob)
        return shares, sizes

    def _recover(
        self,
        server_round: int,
        summed: bytes,
        length: int,
        gone: str,
        got: dict[str, tuple[int, bytes]],
        down: dict[str, int],
    ) -> tuple[str, bytes]:
        """`gone`'s partial decryption, made by the first survivor (party order) from its own share of
        `gone`'s key and the t - 1 shares the next survivors release to it (sealed, signed: the server
        only carries the blobs). Raises when fewer than t survive."""
        survivors = [p for p in self.parties if p in got]
        t = self.threshold
        if len(survivors) < t:
            raise RuntimeError(
                f"round {server_round}: only {len(survivors)} of {len(self.parties)} sites answered ({gone} dropped "
                f"out); the {t}-of-{len(self.parties)} key needs {t} to recover a dropped site's partial decryption"
            )
        recoverer, helpers = survivors[0], survivors[1:t]
        asks = [
            Message(
                content=RecordDict({"config": ConfigRecord({"missing": gone, "to": recoverer})}),
                message_type="train.release",
                dst_node_id=got[h][0],
            )
            for h in helpers
        ]
        replies = self._ask(asks) if asks else []
        released: dict[str, Array] = {}
        for r in replies:
            if r.has_error():
                continue
            holder = site_name(r)
            arrays = r.content.array_records["arrays"]
            released[f"release-{holder}"] = arrays["release"]
            released[f"sig-{holder}"] = arrays["sig"]
        if len(released) // 2 < len(helpers):
            raise RuntimeError(
                f"round {server_round}: {len(released) // 2} of {len(helpers)} survivors released their share of "
                f"{gone}'s key; recovery needs {t} shares"
            )
        content = RecordDict(
            {
                "arrays": ArrayRecord({"sum": he_array(summed, length), **released}),
                "config": ConfigRecord({"missing": gone, "server-round": server_round}),
            }
        )
        out = self._ask([Message(content=content, message_type="train.recover", dst_node_id=got[recoverer][0])])
        if not out or out[0].has_error():
            reason = out[0].error.reason if out else "no reply"
            raise RuntimeError(f"round {server_round}: {recoverer} could not stand in for {gone}: {reason}")
        down[recoverer] = down.get(recoverer, 0) + len(summed)
        self.dropped.setdefault(server_round, {})[gone] = recoverer
        return recoverer, bytes(out[0].content.array_records["arrays"]["share"].data)


class DeepProtectStrategy(FedAvg):
    """The server keeps E(w); sites send E(-η·g) computed on the version they downloaded."""

    def __init__(
        self, backend: HEBackend, encrypted_model: bytes, length: int, recorder: RoundRecorder, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.server = DeepProtectServer(backend, encrypted_model, max_staleness=10**9)
        self.length = length
        self.recorder = recorder

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        version, blob = self.server.download()
        config["model-version"] = version
        messages = list(
            super().configure_train(server_round, ArrayRecord({"global": he_array(blob, self.length)}), config, grid)
        )
        if messages and self.server.refresh_due():
            # One site (the first sampled) also sends a fresh encryption of the stepped model.
            first = messages[0]
            asked = ConfigRecord({**dict(first.content.config_records[self.configrecord_key]), "refresh": True})
            content = RecordDict(
                {self.arrayrecord_key: first.content.array_records[self.arrayrecord_key], self.configrecord_key: asked}
            )
            messages[0] = Message(
                content=content, message_type=first.metadata.message_type, dst_node_id=first.metadata.dst_node_id
            )
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        valid, _ = self._check_and_log_replies(replies, is_train=True, validate=False)
        up: dict[str, int] = {}
        # A reply carrying a refresh goes first: it replaces E(w) only if nothing was added since.
        for m in sorted(valid, key=lambda m: "refresh" not in m.content.array_records["arrays"]):
            arrays = m.content.array_records["arrays"]
            blob = bytes(arrays["update"].data)
            fresh = bytes(arrays["refresh"].data) if "refresh" in arrays else None
            base = int(scalar(m.content.config_records["site"]["model-version"]))
            self.server.upload(site_name(m), blob, base, fresh)
            up[site_name(m)] = len(blob) + (len(fresh) if fresh else 0)
        version, blob = self.server.download()
        self.recorder.record(
            RoundEvent(
                server_round,
                f"deepprotect-v{version}",
                sorted(up),
                up,
                dict.fromkeys(up, len(blob)),
                self.server.backend.name,
            )
        )
        metrics = self.train_metrics_aggr_fn([m.content for m in valid], self.weighted_by_key) if valid else None
        return ArrayRecord({"global": he_array(blob, self.length)}), metrics


class PlainFedAvg(FedAvg):
    """Flower's own FedAvg (the plaintext baseline), plus the per-round audit event."""

    def __init__(self, recorder: RoundRecorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.recorder = recorder
        self._down = 0
        self.timings: list[float] = []
        self._t0 = 0.0

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._down = record_bytes(arrays)
        self._t0 = time.perf_counter()
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        t_agg = time.perf_counter()
        arrays, metrics = super().aggregate_train(server_round, replies)
        t_agg = time.perf_counter() - t_agg
        ok = [m for m in replies if not m.has_error()]
        up = {site_name(m): record_bytes(m.content.array_records["arrays"]) for m in ok}
        self.timings.append(time.perf_counter() - self._t0)
        self.recorder.record(
            RoundEvent(
                server_round,
                f"plain-r{server_round}",
                sorted(up),
                up,
                dict.fromkeys(up, self._down),
                "plain",
                {
                    "seconds": round(self.timings[-1], 4),
                    "site_seconds": site_seconds(ok),
                    "aggregate_seconds": round(t_agg, 4),
                },
            )
        )
        return arrays, metrics
