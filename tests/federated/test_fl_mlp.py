"""The cost benchmark's local step: a real 1M-parameter torch model trained one epoch per round."""

from __future__ import annotations

import numpy as np
import pytest


def test_mlp_task_trains_a_million_parameters() -> None:
    pytest.importorskip("torch")
    from medcloud.federated import mlp
    from medcloud.federated.flower.apps import _LocalTask
    from medcloud.federated.flower.settings import FLSettings

    w0 = mlp.initial_weights()
    assert w0.dtype == np.float32 and w0.size == mlp.n_params() == 1_010_850
    np.testing.assert_array_equal(w0, mlp.initial_weights())  # every site starts from the same weights
    task = _LocalTask(FLSettings(task="mlp", num_sites=2, mlp_samples=64), 1, "site2")
    assert task.n_examples == 64
    w1 = task.train(w0.astype(np.float64))
    assert w1.shape == w0.shape and np.all(np.isfinite(w1))
    assert 0 < np.max(np.abs(w1 - w0)) < 1.0
    acc, n = task.evaluate(w1)
    assert n == 64 and 0.0 <= acc <= 1.0
