"""Probes. Here: the spatial (1x1 convolutional) location probe used to find where a conv net represents a goal.

A spatial probe is one weight per channel plus a bias, applied at every cell of a (C, H, W) activation; a softmax
over the H*W cells gives a distribution over where the target (e.g. the cheese) is. It is the cheapest probe that
can only succeed if the location is *linearly readable per cell*: it cannot learn a lookup table of its own.
Fitting is full-batch L-BFGS on the cross-entropy with an L2 penalty, deterministic for fixed inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.metrics import rate


@dataclass
class SpatialProbe:
    """logits[n, h, w] = sum_c weight[c] * (act[n, c, h, w] - mean[c]) / std[c] + bias."""

    weight: Tensor  # (C,)
    bias: Tensor  # ()
    mean: Tensor  # (C,)
    std: Tensor  # (C,)

    def logits(self, acts: Tensor) -> Tensor:
        """(N, H*W) cell logits for activations (N, C, H, W)."""
        z = (acts - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        return (torch.einsum("nchw,c->nhw", z, self.weight) + self.bias).flatten(1)

    def predict(self, acts: Tensor) -> Tensor:
        """(N,) the predicted cell, as a flat index into the H*W grid."""
        return self.logits(acts).argmax(dim=1)

    def direction(self) -> Tensor:
        """(C,) the probe's direction in (unnormalised) channel space, for steering and comparison."""
        return self.weight / self.std


def fit_spatial_probe(acts: Tensor, targets: Tensor, l2: float = 1e-3, max_iter: int = 200) -> SpatialProbe:
    """Fit a spatial probe: acts (N, C, H, W), targets (N,) flat cell indices in [0, H*W)."""
    if acts.ndim != 4:
        raise WorkbenchError(f"spatial probes need (N, C, H, W) activations, got {tuple(acts.shape)}")
    if targets.shape != (acts.shape[0],):
        raise WorkbenchError(f"{acts.shape[0]} activations but {targets.shape[0]} labels")
    acts = acts.double()
    mean = acts.mean(dim=(0, 2, 3))
    std = acts.std(dim=(0, 2, 3)).clamp_min(1e-6)
    z = (acts - mean[None, :, None, None]) / std[None, :, None, None]
    w = torch.zeros(acts.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    t = targets.long()

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.einsum("nchw,c->nhw", z, w).flatten(1)
        loss = torch.nn.functional.cross_entropy(logits, t) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    # The bias is irrelevant to a softmax over cells; kept (zero) so logits are comparable across probes.
    return SpatialProbe(weight=w.detach(), bias=torch.zeros((), dtype=torch.float64), mean=mean, std=std)


def downsample_cells(cells: np.ndarray, world: int, grid: int) -> np.ndarray:
    """Map world cells (N, 2) onto a layer's grid after k maxpools (kernel 3, stride 2, pad 1): cell -> cell >> k.
    Each pooled output i covers inputs 2i-1..2i+1, so 2i and 2i+1 (= i's own pair) always fall inside it."""
    k, size = 0, world
    while size > grid:
        size, k = (size + 1) // 2, k + 1
    if size != grid:
        raise WorkbenchError(f"a {grid}x{grid} layer is not a pooled {world}x{world} grid")
    return cells >> k


def top1_accuracy(probe: SpatialProbe, acts: Tensor, targets: Tensor) -> dict:
    """Top-1 location accuracy with a Wilson 95% interval: `{"rate", "ci95", "n"}`."""
    hits = (probe.predict(acts.double()) == targets.long()).numpy()
    return rate(hits)
