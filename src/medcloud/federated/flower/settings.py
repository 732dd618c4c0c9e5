"""One settings object for both Flower apps, read from closures (simulation) or Flower configs."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from medcloud.errors import InvalidInput
from medcloud.federated.he.registry import backend_spec, modes_where

PROTOCOLS = ("fedavg", "deepprotect")
TASKS = ("breast-cancer", "synthetic", "mlp", "images")


@dataclass
class FLSettings:
    mode: str = "ckks"  # a registered HE scheme (`medcloud fl modes`): plain, ckks, aes, threshold, ...
    protocol: str = "fedavg"  # fedavg | deepprotect
    rounds: int = 3
    task: str = "breast-cancer"  # breast-cancer | synthetic | mlp (cost benches: 1M-param torch MLP) | images
    num_sites: int = 4
    n_params: int = 31  # synthetic task only
    mlp_samples: int = 320  # mlp task: local samples per site (one epoch per round)
    # images task (`medcloud.federated.images`: SYNTHETIC site-shifted images, a small CNN): each site
    # generates its own images from (images_seed, its site index); Adam, fresh state each round.
    images_train: int = 160
    images_test: int = 80
    images_seed: int = 0
    images_epochs: int = 2
    images_lr: float = 3e-3
    # images task: the ServerApp writes model.onnx + card.json into out_dir and, with register_dir (a hub
    # data dir), registers them as model_name/model_version (default version flower-MODE-rROUNDS).
    register_dir: str = ""
    model_name: str = "fl-shapes"
    model_version: str = ""
    local_epochs: int = 5
    lr: float = 0.5
    # Sites encrypt w * n/U; every site must use the same U. Pin it in each site's node config so the
    # aggregator cannot choose it (see FedAvgSite.weight_unit). 0: the mode's own (aes 1,024, others 1).
    weight_unit: float = 0.0

    def resolved_weight_unit(self) -> float:
        return self.weight_unit or backend_spec(self.mode).weight_unit

    dp_clip: float = 0.0  # 0: no DP
    dp_noise: float = 0.0
    dp_delta: float = 1e-5
    fraction_train: float = 1.0
    evaluate: bool = True
    keys_root: str = ""  # simulation: <root>/<site> and <root>/public
    public_dir: str = ""
    out_dir: str = ""
    audit_file: str = ""
    hub: str = ""
    token: str = ""
    run_name: str = "fl"
    # Seconds the server waits for a phase's replies (train, partial decryptions, releases). A site
    # that has not answered by then counts as dropped out: a t-of-N threshold round then recovers its
    # partial decryption from the survivors (`EncryptedFedAvg`); other modes average who answered.
    round_timeout: float = 3600.0

    def __post_init__(self) -> None:
        spec = backend_spec(self.mode)  # ConfigError naming the registered modes
        if self.protocol not in PROTOCOLS:
            raise InvalidInput(f"unknown protocol {self.protocol!r}")
        if self.protocol == "deepprotect" and not spec.supports_deepprotect:
            able = modes_where(lambda s: s.supports_deepprotect)
            raise InvalidInput(f"DeepProtect needs a key the sites share: use --mode {' or '.join(able)}")
        if self.task not in TASKS:
            raise InvalidInput(f"unknown task {self.task!r}; one of {', '.join(TASKS)}")
        if self.task == "images" and self.protocol != "fedavg":
            raise InvalidInput("the images task runs FedAvg (--protocol fedavg)")
        if self.task == "images" and min(self.images_train, self.images_test, self.images_epochs) < 1:
            raise InvalidInput("the images task needs images_train, images_test and images_epochs >= 1")

    def resolved_model_version(self) -> str:
        """The registry version of an images model: as given, or flower-MODE-rROUNDS."""
        return self.model_version or f"flower-{self.mode}-r{self.rounds}"

    @classmethod
    def from_config(cls, *configs: Any) -> FLSettings:
        """Merge dict-like configs (later wins); keys may use dashes (`num-sites`)."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, Any] = {}
        for cfg in configs:
            for key, value in dict(cfg or {}).items():
                name = str(key).replace("-", "_")
                if name in known:
                    values[name] = value
        typed: dict[str, Any] = {}
        for name, value in values.items():
            kind = type(getattr(cls, name))  # the default (every field has one) tells the type
            typed[name] = value if kind is str else kind(value)
        return cls(**typed)

    def to_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def public_path(self) -> Path:
        if self.public_dir:
            return Path(self.public_dir)
        if self.keys_root:
            return Path(self.keys_root) / "public"
        raise InvalidInput("no public key folder given (--public)")
