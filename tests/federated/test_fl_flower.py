"""End to end on Flower's simulation engine (Ray): slow-ish, a few sites and rounds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")
pytest.importorskip("tenseal")


@pytest.mark.slow
def test_flower_simulation_ckks_fedavg(tmp_path: Path) -> None:
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


@pytest.mark.slow
def test_flower_simulation_deepprotect_matches_plaintext_gradient_steps(tmp_path: Path) -> None:
    """DeepProtect on Flower: the server holds E(w) and adds each site's E(-η·g); after two rounds
    the model a site decrypts equals the same gradient steps taken in plaintext."""
    from medcloud.federated import tabular
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.he import NoSecretKey
    from medcloud.federated.keys import KeyPaths, aggregator_backend, site_backend
    from medcloud.federated.simulate import simulate

    settings = FLSettings(mode="ckks", protocol="deepprotect", rounds=2, num_sites=2, lr=0.5, evaluate=True)
    card = simulate(settings, tmp_path)
    assert card["protocol"] == "deepprotect" and card["sites"] == ["site1", "site2"]
    assert card["model_readable_by_aggregator"] is False
    events = [json.loads(x)["detail"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    # One model version per applied site update: two sites, two rounds.
    assert [e["model_version"] for e in events] == ["deepprotect-v2", "deepprotect-v4"]
    assert all(sorted(e["bytes_up"]) == ["site1", "site2"] and min(e["bytes_up"].values()) > 0 for e in events)
    blob = (tmp_path / "model" / "model.ciphertext").read_bytes()
    with pytest.raises(NoSecretKey):
        agg = aggregator_backend("ckks", tmp_path / "keys" / "public")
        agg.decrypt(agg.deserialize(blob))
    site = site_backend("ckks", KeyPaths("site1", tmp_path / "keys" / "site1", tmp_path / "keys" / "public"))
    w_enc = site.decrypt(site.deserialize(blob))
    # Plaintext reference: each round every site steps from the same downloaded version.
    data = tabular.load_sites(2)
    w = np.zeros(tabular.n_params())
    for _ in range(2):
        w = w - settings.lr * sum(tabular.gradient(w, s.x_train, s.y_train) for s in data)
    assert np.max(np.abs(w)) > 0.05
    assert np.max(np.abs(w_enc - w)) < 1e-5
    assert card["client_metrics"]["2"]["accuracy"] > 0.8


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["fedavg", "deepprotect"])
def test_flower_simulation_aes(tmp_path: Path, protocol: str) -> None:
    """The additive AES backend on Flower: FedAvg, and DeepProtect (whose server starts from a public
    initial model in ciphertext form, and, with the refresh threshold lowered to 2 terms, asks one
    site per round for a fresh encryption); the aggregator keeps a model it cannot read."""
    from medcloud.federated import tabular
    from medcloud.federated.flower.settings import FLSettings
    from medcloud.federated.he import NoSecretKey
    from medcloud.federated.keys import KeyPaths, aggregator_backend, site_backend
    from medcloud.federated.simulate import ceremony, simulate

    keys = tmp_path / "keys"
    ceremony("aes", keys, ["site1", "site2"])
    for f in [keys / "public" / "aes.public", keys / "site1" / "aes.secret", keys / "site2" / "aes.secret"]:
        f.write_text(json.dumps({**json.loads(f.read_text()), "refresh_terms": 2}))
    rounds = 3
    card = simulate(FLSettings(mode="aes", protocol=protocol, rounds=rounds, num_sites=2, lr=0.5), tmp_path)
    assert card["mode"] == "aes" and card["model_readable_by_aggregator"] is False
    events = [json.loads(x)["detail"] for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert len(events) == rounds and all(e["mode"] == "aes" for e in events)
    blob = (tmp_path / "model" / "model.ciphertext").read_bytes()
    agg = aggregator_backend("aes", keys / "public")
    with pytest.raises(NoSecretKey):
        agg.decrypt(agg.deserialize(blob))
    site = site_backend("aes", KeyPaths("site1", keys / "site1", keys / "public"))
    w = site.decrypt(site.deserialize(blob)) / card["total_weight"]
    data = tabular.load_sites(2)
    x, y = tabular.pooled_test(data)
    assert tabular.accuracy(w, x, y) > 0.85
    if protocol == "deepprotect":
        # Rounds 2 and 3 start from a model with >= 2 terms: one site refreshes, its upload is
        # bigger, and the running model keeps few terms.
        sizes = [sorted(e["bytes_up"].values()) for e in events]
        assert sizes[0][0] == sizes[0][1] and all(s[1] > 1.5 * s[0] for s in sizes[1:])
        assert len(agg.deserialize(blob).chunks[0].terms) <= 2
        # The same gradient steps in plaintext: each round both sites step from the same version.
        w_ref = np.zeros(tabular.n_params())
        for _ in range(rounds):
            w_ref = w_ref - 0.5 * sum(tabular.gradient(w_ref, s.x_train, s.y_train) for s in data)
        assert np.max(np.abs(w - w_ref)) < 1e-5


def test_deepprotect_plain_global_model_opens_at_the_site() -> None:
    """Regression: in plain mode the ClientApp read a DeepProtect global model (framed ciphertext
    bytes, as in every mode) as raw float64 values, and failed on the frame's header."""
    from medcloud.federated.flower.apps import _global_weights
    from medcloud.federated.flower.strategy import he_array
    from medcloud.federated.he import PlaintextBackend

    backend = PlaintextBackend()
    w = np.linspace(-1.0, 1.0, 31)
    arr = he_array(backend.serialize(backend.encrypt_public(w)), w.size)
    np.testing.assert_array_equal(_global_weights(arr, backend, 1.0), w)
    np.testing.assert_array_equal(_global_weights(arr, backend, 4.0), w / 4.0)  # a weighted sum, as sent
