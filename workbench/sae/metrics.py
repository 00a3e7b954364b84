"""Reconstruction metrics for SAEs, each a small pure function with golden-value tests (tests/test_sae_metrics.py).

Conventions (SAELens's, stated so they can be checked by hand):
- L0: mean over tokens of the number of latents with a non-zero activation.
- explained variance: 1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2, sums over tokens and dimensions, the mean
  taken over the evaluated tokens (the "against the mean" baseline: predicting the mean scores 0).
- MSE: mean over tokens and dimensions of (x - x_hat)^2 (per element).
- density of a latent: the fraction of tokens on which it is non-zero. Dead: density 0 on the evaluation tokens.
  Dense: density above `dense_threshold` (default 0.1 -- a "feature" on more than one token in ten says little).
- fraction recovered: (spliced - ablated) / (original - ablated) for a downstream score where higher is better
  (return, goal rate) or its negation for a loss (cross-entropy): 1 = the reconstruction is as good as the model's
  own activation, 0 = no better than ablating the layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError

DENSE_THRESHOLD = 0.1


def _pair(x: Tensor, x_hat: Tensor) -> tuple[Tensor, Tensor]:
    x, x_hat = torch.as_tensor(x).double(), torch.as_tensor(x_hat).double()
    if x.shape != x_hat.shape or x.ndim != 2:
        raise WorkbenchError(f"need x and x_hat of the same (N, d) shape, got {tuple(x.shape)}, {tuple(x_hat.shape)}")
    if x.shape[0] == 0:
        raise WorkbenchError("no tokens to evaluate")
    return x, x_hat


def l0(feature_acts: Tensor) -> float:
    """Mean number of non-zero latents per token; feature_acts (N, d_sae)."""
    f = torch.as_tensor(feature_acts)
    if f.ndim != 2 or f.shape[0] == 0:
        raise WorkbenchError(f"need (N, d_sae) latent activations with N > 0, got {tuple(f.shape)}")
    return float((f != 0).sum(dim=1).double().mean())


def explained_variance(x: Tensor, x_hat: Tensor) -> float:
    """1 - SSE / SS around the mean of x; x, x_hat (N, d). Undefined (error) when x is constant."""
    x, x_hat = _pair(x, x_hat)
    total = ((x - x.mean(0)) ** 2).sum()
    if float(total) == 0.0:
        raise WorkbenchError("x has zero variance; explained variance is undefined")
    return float(1.0 - ((x - x_hat) ** 2).sum() / total)


def mse(x: Tensor, x_hat: Tensor) -> float:
    """Mean squared error per element; x, x_hat (N, d)."""
    x, x_hat = _pair(x, x_hat)
    return float(((x - x_hat) ** 2).mean())


def latent_density(feature_acts: Tensor) -> np.ndarray:
    """(d_sae,) fraction of tokens on which each latent is non-zero; feature_acts (N, d_sae)."""
    f = torch.as_tensor(feature_acts)
    if f.ndim != 2 or f.shape[0] == 0:
        raise WorkbenchError(f"need (N, d_sae) latent activations with N > 0, got {tuple(f.shape)}")
    return (f != 0).double().mean(0).numpy()


def dead_dense(density: np.ndarray, dense_threshold: float = DENSE_THRESHOLD) -> dict:
    """Counts and fractions of dead (density 0) and dense (density > threshold) latents."""
    d = np.asarray(density, dtype=np.float64)
    if not 0.0 < dense_threshold < 1.0:
        raise WorkbenchError(f"dense_threshold must be in (0, 1), got {dense_threshold}")
    dead, dense = int((d == 0).sum()), int((d > dense_threshold).sum())
    return {
        "dead": dead,
        "dead_frac": dead / d.size,
        "dense": dense,
        "dense_frac": dense / d.size,
        "dense_threshold": dense_threshold,
    }


def fraction_recovered(original: float, spliced: float, ablated: float) -> float:
    """(spliced - ablated) / (original - ablated); nan when ablation costs nothing (the ratio is meaningless)."""
    gap = original - ablated
    if gap == 0:
        return float("nan")
    return float((spliced - ablated) / gap)


@torch.no_grad()
def reconstruction_metrics(sae, batches: Iterable[Tensor], dense_threshold: float = DENSE_THRESHOLD) -> dict:
    """L0, explained variance, MSE, dead / dense latents of `sae` over token batches (each (n, d_in)).

    Sums are accumulated in float64 over batches, so the result equals one pass over all tokens (checked in tests)."""
    n, fired, active = 0, None, 0.0
    sum_x, sum_x2, sse = None, None, 0.0
    for x in batches:
        x = torch.as_tensor(x, dtype=torch.float32)
        f = sae.encode(x)
        x_hat = sae.decode(f)
        xd = x.double()
        nz = f != 0
        fired = nz.sum(0).double() if fired is None else fired + nz.sum(0).double()
        active += float(nz.sum())
        sum_x = xd.sum(0) if sum_x is None else sum_x + xd.sum(0)
        sum_x2 = (xd**2).sum(0) if sum_x2 is None else sum_x2 + (xd**2).sum(0)
        sse += float(((xd - x_hat.double()) ** 2).sum())
        n += x.shape[0]
    if n == 0 or fired is None or sum_x is None or sum_x2 is None:
        raise WorkbenchError("no tokens to evaluate")
    total = float((sum_x2 - sum_x**2 / n).sum())
    density = (fired / n).numpy()
    return {
        "tokens": n,
        "l0": active / n,
        "explained_variance": 1.0 - sse / total if total > 0 else float("nan"),
        "mse": sse / (n * sum_x.numel()),
        **dead_dense(density, dense_threshold),
        "density": density,
    }
