"""End to end on Flower's simulation engine (Ray): slow-ish, a few sites and rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("tenseal")


@pytest.mark.slow
def test_flower_simulation_ckks_fedavg_and_deepprotect(tmp_path: Path) -> None:
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.keys import KeyPaths, site_backend
    from medcloud.federated.simulate import simulate

    card = simulate(FLSettings(mode="ckks", rounds=2, num_sites=2, evaluate=True), tmp_path / "fedavg")
    assert card["sites"] == ["site1", "site2"]
    assert card["model_readable_by_aggregator"] is False
    assert card["client_metrics"]["2"]["accuracy"] > 0.85
    events = [json.loads(x) for x in (tmp_path / "fedavg" / "audit.jsonl").read_text().splitlines()]
    assert [e["detail"]["round"] for e in events] == [1, 2]
    assert all(e["action"] == "fl.round" and min(e["detail"]["bytes_up"].values()) > 0 for e in events)
    saved = json.loads((tmp_path / "fedavg" / "model" / "model_card.json").read_text())
    assert saved["mode"] == "ckks" and (tmp_path / "fedavg" / "model" / "model.ciphertext").is_file()
    # The saved model is a ciphertext only a site can open.
    site = site_backend(
        "ckks", KeyPaths("site1", tmp_path / "fedavg" / "keys" / "site1", tmp_path / "fedavg" / "keys" / "public")
    )
    raw = site.decrypt(site.deserialize((tmp_path / "fedavg" / "model" / "model.ciphertext").read_bytes()))
    assert raw.shape == (31,) and np.all(np.isfinite(raw))
