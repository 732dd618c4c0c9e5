"""Real data for accuracy: scikit-learn's bundled breast-cancer set (569 cases, 30 features).

Split non-IID over sites by label skew and size (a fixed Dirichlet draw), each site keeping a
local test part. Feature scaling uses only aggregate statistics (counts, sums, sums of squares)
that the sites contribute, never a record. The model is L2-regularised logistic regression in
numpy, trained with full-batch gradient descent so that every run is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Array = NDArray[np.float64]


@dataclass
class SiteData:
    name: str
    x_train: Array
    y_train: Array
    x_test: Array
    y_test: Array

    @property
    def n_train(self) -> int:
        return int(self.y_train.size)


def load_sites(n_sites: int = 4, seed: int = 7, alpha: float = 0.5, test_fraction: float = 0.3) -> list[SiteData]:
    """The breast-cancer data split over `n_sites` with label skew (Dirichlet `alpha`)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    y = np.asarray(data.target, dtype=np.float64)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_sites)]
    for label in (0.0, 1.0):
        idx = rng.permutation(np.flatnonzero(y == label))
        shares = rng.dirichlet([alpha] * n_sites)
        cuts = (np.cumsum(shares)[:-1] * idx.size).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].extend(chunk.tolist())
    sites = []
    for k, members in enumerate(parts):
        idx = rng.permutation(np.asarray(members, dtype=int))
        n_test = max(1, round(idx.size * test_fraction))
        te, tr = idx[:n_test], idx[n_test:]
        sites.append(SiteData(f"site{k + 1}", x[tr], y[tr], x[te], y[te]))
    _standardise(sites)
    return sites


def _standardise(sites: list[SiteData]) -> None:
    """Scale features with pooled mean/std computed from per-site sums only."""
    count = sum(s.n_train for s in sites)
    total = sum(s.x_train.sum(axis=0) for s in sites)
    squares = sum((s.x_train**2).sum(axis=0) for s in sites)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 1e-12))
    for s in sites:
        s.x_train = (s.x_train - mean) / std
        s.x_test = (s.x_test - mean) / std


def n_params(n_features: int = 30) -> int:
    return n_features + 1


def _sigmoid(z: Array) -> Array:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -30, 30))), dtype=np.float64)


def gradient(w: Array, x: Array, y: Array, l2: float = 1e-3) -> Array:
    """Gradient of the mean logistic loss plus L2 on the weights (bias last)."""
    p = _sigmoid(x @ w[:-1] + w[-1])
    err = p - y
    g = np.empty_like(w)
    g[:-1] = x.T @ err / y.size + l2 * w[:-1]
    g[-1] = err.mean()
    return g


def local_train(w: Array, site: SiteData, epochs: int = 5, lr: float = 0.5) -> Array:
    """`epochs` full-batch gradient steps from `w` on the site's training data."""
    w = w.copy()
    for _ in range(epochs):
        w -= lr * gradient(w, site.x_train, site.y_train)
    return w


def accuracy(w: Array, x: Array, y: Array) -> float:
    if y.size == 0:
        return float("nan")
    return float(((x @ w[:-1] + w[-1] > 0).astype(np.float64) == y).mean())


def pooled_test(sites: list[SiteData], exclude: str | None = None) -> tuple[Array, Array]:
    chosen = [s for s in sites if s.name != exclude]
    return np.concatenate([s.x_test for s in chosen]), np.concatenate([s.y_test for s in chosen])
