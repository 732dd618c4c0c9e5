"""Differential privacy for site updates: clip each update to L2 norm C, add Gaussian noise.

Each site perturbs its own update before encrypting it (local DP, so the guarantee does not
rest on the aggregator). The unit protected is the site's update: any change to a site's data
moves its clipped update by at most 2C in L2 (both updates lie in the ball of radius C), so
noise N(0, (z·C)^2) per coordinate is a Gaussian mechanism with sensitivity 2C. The privacy
loss over R rounds is accounted with Rényi DP (Mironov 2017): a Gaussian mechanism with
sensitivity Δ and std σ is (α, αΔ²/2σ²)-RDP, RDP adds up over rounds, and
ε(δ) = min_α [R·αΔ²/2σ² + log(1/δ)/(α-1)]. No subsampling amplification is claimed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

ALPHAS = tuple([1.0 + x / 10.0 for x in range(1, 100)] + list(range(12, 257)))


@dataclass(frozen=True)
class DPConfig:
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0  # z: noise std is z * clip_norm
    delta: float = 1e-5


def clip(update: NDArray[np.float64], clip_norm: float) -> NDArray[np.float64]:
    norm = float(np.linalg.norm(update))
    if norm <= clip_norm or norm == 0.0:
        return update.copy()
    return update * (clip_norm / norm)


def privatise(update: NDArray[np.float64], cfg: DPConfig, rng: np.random.Generator) -> NDArray[np.float64]:
    """Clip to `clip_norm` and add N(0, (z·C)²) noise to every coordinate."""
    clipped = clip(update, cfg.clip_norm)
    return clipped + rng.normal(0.0, cfg.noise_multiplier * cfg.clip_norm, size=update.shape)


def epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε after `rounds` releases of one site's update (RDP accountant, sensitivity 2C)."""
    if noise_multiplier <= 0:
        return math.inf
    sens_over_sigma_sq = (2.0 / noise_multiplier) ** 2
    return min(rounds * a * sens_over_sigma_sq / 2.0 + math.log(1.0 / delta) / (a - 1.0) for a in ALPHAS)
