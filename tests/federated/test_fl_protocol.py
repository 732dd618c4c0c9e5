from __future__ import annotations

import threading
from functools import partial
from typing import Any

import numpy as np
import pytest

from medcloud.errors import Conflict
from medcloud.federated import dp, tabular
from medcloud.federated.he import NoSecretKey, PlaintextBackend
from medcloud.federated.protocol import (
    DeepProtectServer,
    DeepProtectSite,
    FedAvgAggregator,
    FedAvgSite,
    decode_plain,
    run_fedavg,
)


def _sites(backend: Any, data: list[tabular.SiteData]) -> list[FedAvgSite]:
    return [FedAvgSite(s.name, backend, partial(tabular.local_train, site=s), s.n_train) for s in data]


def test_encrypted_fedavg_matches_plaintext(breast_cancer_sites: Any, ckks_site: Any, ckks_aggregator: Any) -> None:
    w0 = np.zeros(tabular.n_params())
    rounds = 8
    plain_model, _ = run_fedavg(
        FedAvgAggregator(PlaintextBackend()), _sites(PlaintextBackend(), breast_cancer_sites), w0, rounds
    )
    enc_model, stats = run_fedavg(FedAvgAggregator(ckks_aggregator), _sites(ckks_site, breast_cancer_sites), w0, rounds)
    assert enc_model.encrypted  # the aggregator never produced a readable model
    w_plain = decode_plain(plain_model.payload)
    w_enc = ckks_site.decrypt(ckks_site.deserialize(enc_model.payload)) / enc_model.total_weight
    assert np.max(np.abs(w_enc - w_plain)) < 1e-5
    x, y = tabular.pooled_test(breast_cancer_sites)
    assert tabular.accuracy(w_enc, x, y) == tabular.accuracy(w_plain, x, y)
    assert all(set(s.bytes_up) == {d.name for d in breast_cancer_sites} for s in stats)


def test_federated_beats_every_single_site_on_other_sites(breast_cancer_sites: Any) -> None:
    sites = breast_cancer_sites
    model, _ = run_fedavg(
        FedAvgAggregator(PlaintextBackend()), _sites(PlaintextBackend(), sites), np.zeros(tabular.n_params()), 30
    )
    w_fl = decode_plain(model.payload)
    for s in sites:
        w_local = tabular.local_train(np.zeros(tabular.n_params()), s, epochs=150)
        x, y = tabular.pooled_test(sites, exclude=s.name)
        assert tabular.accuracy(w_fl, x, y) > tabular.accuracy(w_local, x, y), s.name


@pytest.mark.parametrize("mode", ["ckks", "aes"])
def test_deepprotect_async_sites_update_encrypted_model(
    breast_cancer_sites: Any, mode: str, request: pytest.FixtureRequest
) -> None:
    site_be = request.getfixturevalue(f"{mode}_site")
    agg = request.getfixturevalue(f"{mode}_aggregator")
    w0 = np.zeros(tabular.n_params())
    # The server puts the initial model in ciphertext form itself (ckks: public-key encryption;
    # aes: no pad, the value being public; the first site update hides it).
    server = DeepProtectServer(agg, agg.serialize(agg.encrypt_public(w0)), max_staleness=8)
    sites = [
        DeepProtectSite(s.name, site_be, partial(tabular.gradient, x=s.x_train, y=s.y_train), 0.3)
        for s in breast_cancer_sites
    ]
    errors: list[BaseException] = []
    refused: list[str] = []

    def worker(site: DeepProtectSite, steps: int) -> None:
        try:
            done = 0
            while done < steps:
                version, blob = server.download()
                try:
                    server.upload(site.name, site.step(blob), version)
                except Conflict as exc:
                    # Too stale: a thread descheduled on a busy machine while the others uploaded more than
                    # max_staleness times. A site does what the refusal says: download the model again.
                    refused.append(str(exc))
                    continue
                done += 1
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s, 3 + i)) for i, s in enumerate(sites)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all("versions old" in r for r in refused)  # only staleness is refused
    assert server.version == sum(3 + i for i in range(len(sites)))
    assert all(after - 1 - base <= 8 for _, base, after in server.applied)  # every applied update within the bound
    _, blob = server.download()
    w = site_be.decrypt(site_be.deserialize(blob))
    x, y = tabular.pooled_test(breast_cancer_sites)
    assert tabular.accuracy(w, x, y) > 0.85
    with pytest.raises(NoSecretKey, match="secret key"):
        agg.decrypt(agg.deserialize(blob))


def test_deepprotect_refuses_too_stale_update(ckks_site: Any, ckks_aggregator: Any) -> None:
    server = DeepProtectServer(ckks_aggregator, ckks_site.serialize(ckks_site.encrypt(np.zeros(3))), max_staleness=1)
    site = DeepProtectSite("a", ckks_site, lambda w: np.ones_like(w), 0.1)
    _, old = server.download()
    server.upload("b", site.step(old), 0)
    server.upload("b", site.step(old), 1)
    with pytest.raises(Conflict, match="versions old"):
        server.upload("a", site.step(old), 0)


def test_dp_clips_noises_and_reports_epsilon(breast_cancer_sites: Any) -> None:
    cfg = dp.DPConfig(clip_norm=0.5, noise_multiplier=1.0)
    rng = np.random.default_rng(1)
    assert np.linalg.norm(dp.clip(np.full(31, 10.0), 0.5)) == pytest.approx(0.5)
    noised = dp.privatise(np.zeros(10_000), cfg, rng)
    assert np.std(noised) == pytest.approx(0.5, rel=0.05)
    # More noise or fewer rounds: smaller epsilon.
    assert dp.epsilon(2.0, 10, 1e-5) < dp.epsilon(1.0, 10, 1e-5) < dp.epsilon(1.0, 30, 1e-5)
    sites = [
        FedAvgSite(s.name, PlaintextBackend(), partial(tabular.local_train, site=s), s.n_train, cfg, rng)
        for s in breast_cancer_sites
    ]
    model, _ = run_fedavg(FedAvgAggregator(PlaintextBackend()), sites, np.zeros(tabular.n_params()), 10)
    x, y = tabular.pooled_test(breast_cancer_sites)
    assert tabular.accuracy(decode_plain(model.payload), x, y) > 0.8
