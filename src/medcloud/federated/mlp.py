"""The cost benchmark's local training step: a real 1M-parameter torch model, one local epoch.

A multilayer perceptron 784 -> 1024 -> 200 -> 10 (1,010,850 parameters, MNIST-sized) trained by
each site for one epoch of minibatch SGD (batch 32) over its own synthetic samples (a few hundred,
Gaussian class clusters, generated from the site index). The data are synthetic and say so: the
point is the work a hospital's round contains, not the accuracy. Weights cross the federated
boundary as one flat float vector (`parameters_to_vector` order), like Flower's FedAvg arrays.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

LAYERS = (784, 1024, 200, 10)
BATCH = 32


def n_params(layers: tuple[int, ...] = LAYERS) -> int:
    return sum(a * b + b for a, b in itertools.pairwise(layers))


def _model() -> Any:
    import torch

    torch.manual_seed(0)
    mods: list[Any] = []
    for i, (a, b) in enumerate(itertools.pairwise(LAYERS)):
        mods.append(torch.nn.Linear(a, b))
        if i < len(LAYERS) - 2:
            mods.append(torch.nn.ReLU())
    return torch.nn.Sequential(*mods)


def initial_weights() -> NDArray[np.float32]:
    """The same initial weights on every machine (seeded init), float32 as Flower would send them."""
    import torch

    with torch.no_grad():
        return np.asarray(torch.nn.utils.parameters_to_vector(_model().parameters()).numpy(), dtype=np.float32)


@dataclass
class SiteTask:
    """One site's samples and its model; `train` runs one local epoch from the given weights."""

    index: int
    samples: int = 320
    lr: float = 0.05
    threads: int = 1

    def __post_init__(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        rng = np.random.default_rng(500 + self.index)
        centres = np.random.default_rng(1).normal(size=(LAYERS[-1], LAYERS[0])).astype(np.float32)
        y = rng.integers(0, LAYERS[-1], size=self.samples)
        x = centres[y] + 2.0 * rng.normal(size=(self.samples, LAYERS[0])).astype(np.float32)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        self.model = _model()

    @property
    def n_examples(self) -> int:
        return self.samples

    def train(self, weights: NDArray[Any]) -> NDArray[np.float64]:
        import torch

        params = list(self.model.parameters())
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.as_tensor(np.asarray(weights, dtype=np.float32)), params)
        opt = torch.optim.SGD(params, lr=self.lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        order = torch.randperm(self.samples, generator=torch.Generator().manual_seed(self.index))
        self.model.train()
        for start in range(0, self.samples, BATCH):
            idx = order[start : start + BATCH]
            opt.zero_grad()
            loss_fn(self.model(self.x[idx]), self.y[idx]).backward()
            opt.step()
        with torch.no_grad():
            out = torch.nn.utils.parameters_to_vector(params).numpy()
        return np.asarray(out, dtype=np.float64)

    def accuracy(self, weights: NDArray[Any]) -> float:
        import torch

        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(
                torch.as_tensor(np.asarray(weights, dtype=np.float32)), list(self.model.parameters())
            )
            return float((self.model(self.x).argmax(1) == self.y).float().mean())
