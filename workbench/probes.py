"""Probes: the spatial location probe for conv nets, and batched linear probes with evaluation and controls.

The spatial (1x1 convolutional) location probe finds where a conv net represents a goal.

A spatial probe is one weight per channel plus a bias, applied at every cell of a (C, H, W) activation; a softmax
over the H*W cells gives a distribution over where the target (e.g. the cheese) is. It is the cheapest probe that
can only succeed if the location is *linearly readable per cell*: it cannot learn a lookup table of its own.
Fitting is full-batch L-BFGS on the cross-entropy with an L2 penalty, deterministic for fixed inputs.

The linear probes (`LinearProbe`, `fit_logistic`, `fit_mass_mean`, `fit_ridge`, `fit_multiclass`) read a vector
per example (a residual-stream position, a pooled conv layer) and fit P probes at once, e.g. every layer x position
of a sweep. `evaluate_probe` reports each metric with a 95% interval in a tidy table; `control_task_labels`,
`selectivity` and `random_direction_baseline` say whether a probe's score beats what capacity or chance alone gives;
`transfer_matrix` / `transfer_table` test whether a probe fitted on one split works on others.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.metrics import (
    accuracy,
    auroc,
    bootstrap_ci,
    bootstrap_ci_paired,
    r2_score,
    rate,
    recall_at_fpr,
    wilson_ci,
)


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


def downsample_cells(cells: np.ndarray, world: int, grid: int, pixels: bool = False) -> np.ndarray:
    """Map world cells (N, 2) onto a layer's grid.

    Symbolic observations (one input pixel per cell): after k maxpools (kernel 3, stride 2, pad 1), cell -> cell >> k;
    each pooled output i covers inputs 2i-1..2i+1, so 2i and 2i+1 (= i's own pair) always fall inside it.
    Pixel observations whose frame shows the whole world (`pixels=True`; procgen maze: 25 cells over 64 pixels,
    layers 32/16/8): the grid cell under the cell's centre, floor((cell + 0.5) * grid / world)."""
    if pixels:
        return np.floor((np.asarray(cells) + 0.5) * grid / world).astype(np.int64).clip(0, grid - 1)
    k, size = 0, world
    while size > grid:
        size, k = (size + 1) // 2, k + 1
    if size != grid:
        raise WorkbenchError(f"a {grid}x{grid} layer is not a pooled {world}x{world} grid")
    return cells >> k


def layer_cell_index(flat_cells: np.ndarray, world: int, grid: int, pixels: bool = False) -> np.ndarray:
    """(N,) flat world cells (row * world + col) -> (N,) flat cells of a grid x grid layer (see `downsample_cells`):
    the class labels a spatial probe at that layer predicts."""
    flat = np.asarray(flat_cells, dtype=np.int64)
    rc = downsample_cells(np.stack([flat // world, flat % world], axis=1), world, grid, pixels)
    return rc[:, 0] * grid + rc[:, 1]


def top1_accuracy(probe: SpatialProbe, acts: Tensor, targets: Tensor) -> dict:
    """Top-1 location accuracy with a Wilson 95% interval: `{"rate", "ci95", "n"}`."""
    hits = (probe.predict(acts.double()) == targets.long()).numpy()
    return rate(hits)


# ================================================================================================================
# Linear probes on vectors: P probes at once, with standardisation, evaluation with intervals, controls, transfer.
#
# Why batched: a sweep over layers x positions (or over control tasks) fits hundreds of independent probes. Each
# probe p has its own activations X[p] (N, d) -- or all share one (N, d) matrix -- and its own labels y[p] (N,).
# Because the probes share no parameters, one optimiser over the sum of their objectives reaches every probe's own
# optimum, and the work is a few batched matrix products per step instead of P Python-level fits.
#
# Why standardise: an L2 penalty (and a mass-mean difference) depends on the scale of each feature. Each probe is
# fitted on z = (x - mean) / std with its own training mean and (population, ddof=0) std, so the regularisation
# means the same thing at every layer. `LinearProbe.direction()` maps the weights back to raw activation space.
# Standardisation is applied implicitly (folded into the weights), so no standardised copy of X is ever made.
# ================================================================================================================

KINDS = ("logistic", "mass_mean", "ridge", "multiclass")
_BINARY_KINDS = ("logistic", "mass_mean")
_DEFAULT_METRICS = {
    "logistic": ("accuracy", "auroc", "recall_at_1pct_fpr"),
    "mass_mean": ("accuracy", "auroc", "recall_at_1pct_fpr"),
    "ridge": ("r2",),
    "multiclass": ("accuracy",),
}
_RECALL_METRIC = re.compile(r"recall_at_(\d+(?:\.\d+)?)pct_fpr")
_F64 = torch.float64


@dataclass
class LinearProbe:
    """P linear probes on standardised inputs: score[p, n] = weight[p] . (x[n] - mean[p]) / std[p] + bias[p].

    Shapes: weight (P, d) and bias (P,), or (P, K, d) and (P, K) for `kind == "multiclass"`; mean and std (P, d).
    Decision values are logits for "logistic"/"multiclass", a signed distance along the class-mean difference for
    "mass_mean" (0 at the midpoint of the class means) and the predicted target for "ridge". `meta` records how the
    probe was fitted (regularisation, iterations, final gradient) so a result can be traced to its settings.
    """

    weight: Tensor
    bias: Tensor
    kind: str
    mean: Tensor
    std: Tensor
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise unknown("probe kind", self.kind, KINDS)
        want = 3 if self.kind == "multiclass" else 2
        if self.weight.ndim != want or self.bias.shape != self.weight.shape[:-1]:
            raise WorkbenchError(
                f"a {self.kind} probe needs weight with {want} dims and bias of shape weight.shape[:-1], got "
                f"{tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )
        shape = (self.weight.shape[0], self.weight.shape[-1])
        if self.mean.shape != shape or self.std.shape != shape:
            raise WorkbenchError(
                f"mean and std must be (P, d) = {shape}, got {tuple(self.mean.shape)} and {tuple(self.std.shape)}"
            )

    @property
    def n_probes(self) -> int:
        """P, the number of probes held."""
        return int(self.weight.shape[0])

    @property
    def dim(self) -> int:
        """d, the activation width the probes read."""
        return int(self.weight.shape[-1])

    def _stacked(self) -> tuple[Tensor, Tensor]:
        """Weights as (P, K, d) and biases as (P, K), K = 1 unless multiclass: one code path for every kind."""
        if self.kind == "multiclass":
            return self.weight, self.bias
        return self.weight[:, None, :], self.bias[:, None]

    def scores(self, X: Tensor) -> Tensor:
        """Decision values (P, N), or (P, N, K) for multiclass, for X (P, N, d) or (N, d) (shared by all P)."""
        X = _activations(X, "X")
        if X.shape[-1] != self.dim:
            raise WorkbenchError(f"the probe reads {self.dim} features but X has {X.shape[-1]}")
        if X.ndim == 3 and X.shape[0] != self.n_probes:
            raise WorkbenchError(f"the probe holds {self.n_probes} probes but X has activations for {X.shape[0]}")
        W, b = self._stacked()
        out = _affine(
            X, W.to(X.device, _F64), b.to(X.device, _F64), self.mean.to(X.device, _F64), self.std.to(X.device, _F64)
        )
        return out if self.kind == "multiclass" else out[..., 0]

    def predict(self, X: Tensor) -> Tensor:
        """(P, N): class 0/1 (decision value > 0) for binary kinds, the class index for multiclass, the target for
        ridge."""
        s = self.scores(X)
        if self.kind == "multiclass":
            return s.argmax(dim=-1)
        if self.kind == "ridge":
            return s
        return (s > 0).long()

    def direction(self) -> Tensor:
        """(P, d), or (P, K, d) for multiclass: the weights in raw activation space (weight / std), for steering,
        ablation and cosine comparisons; the mean only moves the bias."""
        std = self.std if self.kind != "multiclass" else self.std[:, None, :]
        return self.weight / std

    def select(self, index: int | Sequence[int] | slice) -> LinearProbe:
        """A LinearProbe holding only the chosen probes (index keeps the P axis, so one index gives P = 1)."""
        idx = [index] if isinstance(index, int) else index
        return LinearProbe(self.weight[idx], self.bias[idx], self.kind, self.mean[idx], self.std[idx], dict(self.meta))


# --------------------------------------------------------------------------------------------------- input checks


def _as_tensor(x: Any, name: str = "input") -> Tensor:
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(np.asarray(x))
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"{name} must be a numeric array or tensor") from exc


def _activations(X: Any, name: str, keep_float32: bool = False) -> Tensor:
    """X as float64 (N, d) or (P, N, d) (no copy when it already is); with keep_float32, float32 stays float32
    and half precision becomes float32 (activations are stored in float32: reading them as float64 doubles the
    bytes every pass moves and changes nothing they can express)."""
    X = _as_tensor(X, name)
    if X.ndim not in (2, 3):
        raise WorkbenchError(f"{name} must be (N, d) or (P, N, d) activations, got shape {tuple(X.shape)}")
    if keep_float32 and X.dtype in (torch.float32, torch.float16, torch.bfloat16):
        return X.float()
    return X.to(_F64)


def _inputs(
    X: Any, y: Any, kind: str, n_classes: int | None = None, keep_float32: bool = False
) -> tuple[Tensor, Tensor]:
    """Checked (X, Y): X float64 (or float32, see `_activations`) (N, d) or (P, N, d); Y float64 (P, N) with the
    probe axis made explicit."""
    X = _activations(X, "X", keep_float32)
    y = _as_tensor(y, "labels")
    if y.ndim not in (1, 2):
        raise WorkbenchError(f"labels must be (N,) or (P, N), got shape {tuple(y.shape)}")
    n, m = X.shape[-2], y.shape[-1]
    if n != m:
        raise WorkbenchError(f"{n} activations but {m} labels")
    if n == 0:
        raise WorkbenchError("no activations to fit a probe on")
    px = X.shape[0] if X.ndim == 3 else None
    py = y.shape[0] if y.ndim == 2 else None
    if px is not None and py is not None and px != py:
        raise WorkbenchError(f"activations for {px} probes but labels for {py}")
    p = px or py or 1
    Y = y.to(device=X.device, dtype=_F64).expand(p, n) if y.ndim == 1 else y.to(device=X.device, dtype=_F64)
    if not torch.isfinite(Y).all():
        raise WorkbenchError("labels contain nan or inf")
    if kind in _BINARY_KINDS:
        bad = (Y != 0) & (Y != 1)
        if bad.any():
            raise WorkbenchError(f"{kind} probes need binary 0/1 labels, got value {Y[bad][0].item():g}")
        pos = Y.sum(dim=1)
        single = ((pos == 0) | (pos == n)).nonzero().flatten()
        if single.numel():
            q = int(single[0])
            only = int(Y[q, 0].item())
            raise WorkbenchError(
                f"labels for probe {q} are all {only} (a single class, n={n}); a {kind} probe needs both 0 and 1"
            )
    elif kind == "multiclass":
        k = int(n_classes or 0)
        if k < 2:
            raise WorkbenchError(f"n_classes must be >= 2, got {n_classes}")
        bad = (Y != Y.round()) | (Y < 0) | (Y >= k)
        if bad.any():
            raise WorkbenchError(f"multiclass labels must be integers in [0, {k}), got value {Y[bad][0].item():g}")
        single = (Y.amax(dim=1) == Y.amin(dim=1)).nonzero().flatten()
        if single.numel():
            q = int(single[0])
            raise WorkbenchError(
                f"labels for probe {q} are all class {int(Y[q, 0].item())} (a single class, n={n}); "
                "a multiclass probe needs at least two"
            )
    return X, Y


def _standardisation(
    X: Tensor, p: int, standardize: bool, moments: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Per-probe training mean and population std, (P, d) each, float64; std 1 where a feature is constant (its z
    is 0). `moments`: X's column means and centred sums of squares when the caller already has them (see
    `workbench.logistic.solve_per_matrix`), else one pass over X (`_moments`).

    With standardize=False the std is 1 but the data are still centred: centring never changes these fits (the
    bias is unpenalised) and keeps the implicit-standardisation arithmetic well conditioned."""
    X3 = X if X.ndim == 3 else X[None]
    mean, sum_sq = _moments(X3) if moments is None else moments
    if not torch.isfinite(mean).all():  # a nan or inf anywhere in a column reaches its mean: no extra pass over X
        raise WorkbenchError("activations contain nan or inf")
    if standardize:
        std = sum_sq.div_(X3.shape[1]).sqrt_()
        std = torch.where(std > 1e-10 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
    else:
        std = torch.ones_like(mean)
    if X.ndim == 2:
        mean, std = mean.expand(p, -1).clone(), std.expand(p, -1).clone()
    return mean, std


def _check_finite_first(X3: Tensor) -> None:
    """Refuse nan or inf in (P, N, d) activations before any probe is fitted (their means would catch it, but only
    when that probe's group comes up): one float32 sum per matrix, at a plain read's rate (~2% of a fit), and an
    exact check only for a matrix whose sum is not finite (a nan or inf, or an overflow of finite values)."""
    for q in (~torch.isfinite(X3.sum(dim=(1, 2)))).nonzero().flatten().tolist():
        if not bool(torch.isfinite(X3[q]).all()):
            raise WorkbenchError("activations contain nan or inf")


def _moments(X3: Tensor) -> tuple[Tensor, Tensor]:
    """Column means and centred sums of squares of X3 (P, N, d), float64 (P, d) each, in one pass over X3.

    Each ~2 MB block of rows of one probe's matrix has a shift (its first row) subtracted in X's dtype, and its
    sums and sums of squares are taken in X's dtype (torch's sum is pairwise) and added up in float64 across
    blocks, so sum((x - mean)^2) = sum((x - k)^2) - N (mean - k)^2 keeps
    two-pass accuracy (torch's std is several times slower on CPU, a float64 mean of float32 as slow again, and a
    centred copy of X costs memory and page faults)."""
    p, n, d = X3.shape
    rows = max(1, min(n, (2 << 20) // max(d * X3.element_size(), 1)))
    shift = X3[:, 0, :]
    s1 = torch.zeros(p, d, dtype=_F64, device=X3.device)
    s2 = torch.zeros_like(s1)
    buf = torch.empty(rows, d, dtype=X3.dtype, device=X3.device)
    for q in range(p):
        for a in range(0, n, rows):
            block = X3[q, a : a + rows]
            b = buf[: block.shape[0]]
            torch.sub(block, shift[q], out=b)
            s1[q] += b.sum(dim=0).to(_F64)
            s2[q] += b.square_().sum(dim=0).to(_F64)
    delta = s1 / n
    return shift.to(_F64) + delta, (s2 - n * delta * delta).clamp_min_(0.0)


# --------------------------------------------------------------------------------------------------- batched algebra


def _xv(X: Tensor, V: Tensor) -> Tensor:
    """X (N, d) or (P, N, d) times V (P, K, d) -> (P, N, K); a shared X is one matmul, not P copies."""
    p, k, d = V.shape
    if X.ndim == 2:
        return (X @ V.reshape(p * k, d).T).reshape(X.shape[0], p, k).permute(1, 0, 2)
    return torch.bmm(X, V.transpose(1, 2))


def _xtr(X: Tensor, R: Tensor) -> Tensor:
    """X^T R per probe: X (N, d) or (P, N, d), R (P, N, K) -> (P, K, d)."""
    p, n, k = R.shape
    if X.ndim == 2:
        return (R.permute(0, 2, 1).reshape(p * k, n) @ X).reshape(p, k, X.shape[1])
    return torch.bmm(R.transpose(1, 2), X)


def _affine(X: Tensor, W: Tensor, b: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """W . (x - mean) / std + b for every probe and example, (P, N, K), without materialising the standardised X."""
    V = W / std[:, None, :]
    return _xv(X, V) + (b - torch.einsum("pkd,pd->pk", V, mean))[:, None, :]


def _z_grad(X: Tensor, R: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """sum_n R[p, n, k] * z[p, n] with z = (x - mean) / std, (P, K, d): the gradient of a loss in the z-space
    weights given R = dloss/dscore; also Z^T r for the ridge normal equations."""
    return (_xtr(X, R) - R.sum(dim=1)[..., None] * mean[:, None, :]) / std[:, None, :]


def _block_rows(X: Tensor, p: int) -> int:
    """Rows per block in a loss evaluation: ~2 MB of activations on the CPU, so the block read for the scores is
    still in cache when the gradient reads it again (one trip to memory per evaluation instead of two, ~1.5x on
    large sweeps); everything at once on an accelerator, where extra launches cost more than memory traffic."""
    n, d = X.shape[-2], X.shape[-1]
    if X.device.type != "cpu":
        return n
    per_row = (p if X.ndim == 3 else 1) * d * X.element_size()
    return max(16, min(n, (2 << 20) // max(per_row, 1)))


def _fit_lbfgs(
    X: Tensor,
    mean: Tensor,
    std: Tensor,
    k: int,
    data_loss: Callable[[Tensor, slice], tuple[Tensor, Tensor]],
    l2: float,
    max_iter: int,
    tol: float,
) -> tuple[Tensor, Tensor, dict]:
    """One L-BFGS (strong Wolfe) over all probes: minimise sum_p [data_loss_p + l2 / 2 * ||W_p||^2].

    data_loss(scores (P, B, K), rows) returns, for that block of rows, (its share of the sum over probes of the
    mean loss, dloss/dscores (P, B, K)). The gradient is assembled by hand, block by block, so no autograd graph
    over the (P, N, d) activations is kept and no standardised copy of them is made.
    """
    p, d = mean.shape
    n = X.shape[-2]
    rows = _block_rows(X, p)
    W = torch.zeros(p, k, d, dtype=_F64, device=X.device, requires_grad=True)
    b = torch.zeros(p, k, dtype=_F64, device=X.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [W, b],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tol,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    last: dict = {}

    def closure() -> Tensor:
        with torch.no_grad():
            V = W / std[:, None, :]  # raw-space weights: w . (x - mean) / std = V . x - V . mean
            c = b - torch.einsum("pkd,pd->pk", V, mean)
            loss = torch.zeros((), dtype=_F64, device=X.device)
            g_v = torch.zeros_like(W)
            g_b = torch.zeros_like(b)
            for a in range(0, n, rows):
                block = slice(a, a + rows)
                xb = X[..., block, :]
                part, R = data_loss(_xv(xb, V) + c[:, None, :], block)
                loss += part
                g_v += _xtr(xb, R)
                g_b += R.sum(dim=1)
            W.grad = (g_v - g_b[..., None] * mean[:, None, :]) / std[:, None, :] + l2 * W
            b.grad = g_b
            loss += 0.5 * l2 * (W * W).sum()
            last["loss"] = float(loss) / p
            last["grad_max"] = max(float(W.grad.abs().max()), float(b.grad.abs().max()))
            return loss

    opt.step(closure)
    n_iter = int(opt.state[W].get("n_iter", 0))
    meta = {
        "l2": l2,
        "max_iter": max_iter,
        "tol": tol,
        "n_iter": n_iter,
        "converged": n_iter < max_iter,  # stopped by a tolerance, not by the iteration limit
        "loss": last["loss"],  # mean over probes of the objective, at the last evaluation
        "grad_max": last["grad_max"],
    }
    return W.detach(), b.detach(), meta


# --------------------------------------------------------------------------------------------------- fitting


def fit_logistic(
    X: Tensor, y: Tensor, l2: float = 1e-2, max_iter: int = 100, *, standardize: bool = True, tol: float = 1e-7
) -> LinearProbe:
    """L2-regularised logistic regression probes, P at once (`workbench.logistic.solve_logistic`).

    X (P, N, d) or (N, d) shared by all probes; y (N,) shared or (P, N), binary {0, 1}. Each probe minimises, on
    its standardised inputs z (see `LinearProbe`),

        (1/N) sum_n BCE(y_n, w . z_n + b) + (l2 / 2) * ||w||^2        (the bias b is not penalised)

    scikit-learn's LogisticRegression(C) minimises C * sum_n BCE + ||w||^2 / 2, i.e. (1/N) sum_n BCE +
    ||w||^2 / (2 C N); the two agree for C = 1 / (l2 * N) fitted on the same standardised z (tests check this).
    A shared X is one design matrix for all P label sets (one pass serves every probe); with a (P, N, d) X each
    probe reads only its own matrix. Every probe has its own L-BFGS history, step and stopping test. float32
    activations are read as float32 (products in float32, every sum and the weights in float64); anything else
    as float64. Each probe stops when every entry
    of its gradient is below `tol`, when its objective stops changing, or after `max_iter` iterations
    (`meta["converged"]` is False only if some probe hit that limit).
    Returns a LinearProbe with weight (P, d), bias (P,) in float64; deterministic for fixed inputs.
    """
    from workbench.logistic import solve_per_matrix, solve_shared

    X, Y = _inputs(X, y, "logistic", keep_float32=True)
    p, n = Y.shape
    l2, max_iter, tol = float(l2), int(max_iter), float(tol)
    if X.ndim == 2:
        mean, std = _standardisation(X, p, standardize)
        sol = solve_shared(X, mean, std, Y, l2=l2, max_iter=max_iter, tol=tol)
    else:  # one matrix per probe: a cache-sized group at a time, its mean and std first
        _check_finite_first(X)
        sol, mean, std = solve_per_matrix(
            X,
            Y,
            lambda xg, sums: _standardisation(xg, xg.shape[0], standardize, sums),
            l2=l2,
            max_iter=max_iter,
            tol=tol,
        )
    meta = {
        "l2": l2,
        "max_iter": max_iter,
        "tol": tol,
        "n_iter": int(sol.n_iter.max()),  # the most full-data iterations any probe took
        "n_iter_each": sol.n_iter.tolist(),
        "converged": bool(sol.converged.all()),
        "loss": float(sol.loss.mean()),  # mean over probes of the objective
        "grad_max": float(sol.grad_max.max()),
        "dtype": str(X.dtype).removeprefix("torch."),
        "passes": sol.passes,  # loss + gradient rounds over the probes still running, summed over probe groups
        "reads": sol.reads,  # loss + gradient evaluations summed over probes (one read of a probe's matrix each)
        "flops": sol.flops,  # in products with the design matrices, preconditioner included
    }
    return LinearProbe(sol.weight, sol.bias, "logistic", mean, std, meta)


def fit_multiclass(
    X: Tensor,
    y: Tensor,
    n_classes: int,
    l2: float = 1e-2,
    max_iter: int = 100,
    *,
    standardize: bool = True,
    tol: float = 1e-7,
) -> LinearProbe:
    """Softmax-regression probes, batched like `fit_logistic`: weight (P, K, d), bias (P, K).

    X (P, N, d) or (N, d); y (N,) or (P, N) integer classes in [0, n_classes). Objective per probe: mean
    cross-entropy + (l2 / 2) * ||W||_F^2, bias unpenalised (sklearn's multinomial LogisticRegression with
    C = 1 / (l2 * N)). The biases are centred to sum 0 per probe (softmax ignores a common shift). A class absent
    from the training labels gets an ever lower bias, so such fits stop at `max_iter`.
    """
    X, Y = _inputs(X, y, "multiclass", n_classes)
    n, k = Y.shape[1], int(n_classes)
    mean, std = _standardisation(X, Y.shape[0], standardize)
    onehot = torch.nn.functional.one_hot(Y.long(), k).to(_F64)

    def data_loss(s: Tensor, rows: slice) -> tuple[Tensor, Tensor]:
        logp, t = torch.log_softmax(s, dim=-1), onehot[:, rows]
        return -(logp * t).sum() / n, (logp.exp() - t) / n

    W, b, meta = _fit_lbfgs(X, mean, std, k, data_loss, float(l2), int(max_iter), float(tol))
    meta["n_classes"] = k
    return LinearProbe(W, b - b.mean(dim=1, keepdim=True), "multiclass", mean, std, meta)


def _class_means(X: Tensor, Y: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
    """Standardised class means (P, d) of positives and negatives."""
    pos = Y.sum(dim=1, keepdim=True)
    neg = Y.shape[1] - pos
    mu_pos = _z_grad(X, Y[..., None], mean, std)[:, 0] / pos
    mu_neg = _z_grad(X, (1 - Y)[..., None], mean, std)[:, 0] / neg
    return mu_pos, mu_neg


def _per_probe(X: Tensor, q: int) -> Tensor:
    return X if X.ndim == 2 else X[q]


def fit_mass_mean(
    X: Tensor, y: Tensor, whiten: bool = False, *, standardize: bool = True, ridge: float = 1e-3
) -> LinearProbe:
    """Difference-of-means probes (Marks & Tegmark 2023): w = mean(z | y=1) - mean(z | y=0) on standardised z.

    Why: no optimisation and no regularisation choice, and in Marks & Tegmark's experiments its directions were
    more causally implicated than logistic regression's, which can lean on correlated distractor features.
    With whiten=True, w = (S + ridge * tr(S) / d * I)^-1 (mu_pos - mu_neg), S the pooled within-class covariance
    (denominator N - 2) of z: Fisher's LDA direction, which discounts high-variance nuisance directions.
    Bias -w . (mu_pos + mu_neg) / 2, so the decision value is 0 halfway between the class means.
    X (P, N, d) or (N, d); y (N,) or (P, N) in {0, 1}. Note `direction()` = w / std; for the raw-space mean
    difference itself use standardize=False.
    """
    X, Y = _inputs(X, y, "mass_mean")
    p, n = Y.shape
    mean, std = _standardisation(X, p, standardize)
    mu_pos, mu_neg = _class_means(X, Y, mean, std)
    w = mu_pos - mu_neg
    if whiten:
        d = X.shape[-1]
        cov = torch.empty(p, d, d, dtype=_F64, device=X.device)
        for q in range(p):
            z = (_per_probe(X, q) - mean[q]) / std[q]
            resid = z - torch.where(Y[q, :, None] > 0, mu_pos[q], mu_neg[q])
            cov[q] = resid.T @ resid / max(n - 2, 1)
        lam = ridge * torch.diagonal(cov, dim1=1, dim2=2).sum(dim=1) / d
        eye = torch.eye(d, dtype=_F64, device=X.device)
        w = torch.linalg.solve(cov + lam[:, None, None] * eye, w[..., None])[..., 0]
    bias = -(w * (mu_pos + mu_neg) / 2).sum(dim=1)
    return LinearProbe(w, bias, "mass_mean", mean, std, {"whiten": bool(whiten), "ridge": ridge if whiten else 0.0})


def fit_ridge(X: Tensor, y: Tensor, alpha: float = 1.0, *, standardize: bool = True) -> LinearProbe:
    """Ridge-regression probes for continuous targets, closed form and batched (one torch.linalg.solve).

    Per probe minimises sum_n (y_n - w . z_n - b)^2 + alpha * ||w||^2 on standardised z (sklearn's Ridge(alpha)
    convention: a sum, not a mean, of squares; the bias unpenalised). Since z is centred, b = mean(y) and
    w = (Z^T Z + alpha I)^-1 Z^T (y - mean(y)). X (P, N, d) or (N, d); y (N,) or (P, N) real.
    """
    X, Y = _inputs(X, y, "ridge")
    p, n = Y.shape
    d = X.shape[-1]
    mean, std = _standardisation(X, p, standardize)
    ybar = Y.mean(dim=1)
    rhs = _z_grad(X, (Y - ybar[:, None])[..., None], mean, std)[:, 0]
    gram = torch.empty(p, d, d, dtype=_F64, device=X.device)
    for q in range(1 if X.ndim == 2 else p):  # a shared X has one Gram matrix
        z = (_per_probe(X, q) - mean[q]) / std[q]
        gram[q] = z.T @ z
    if X.ndim == 2:
        gram[1:] = gram[0]
    eye = torch.eye(d, dtype=_F64, device=X.device)
    w = torch.linalg.solve(gram + float(alpha) * eye, rhs[..., None])[..., 0]
    return LinearProbe(w, ybar.clone(), "ridge", mean, std, {"alpha": float(alpha)})


# --------------------------------------------------------------------------------------------------- evaluation


def _metric_names(kind: str, metrics: Sequence[str] | None) -> tuple[str, ...]:
    names = tuple(_DEFAULT_METRICS[kind] if metrics is None else (metrics,) if isinstance(metrics, str) else metrics)
    valid = {"ridge": ("r2",), "multiclass": ("accuracy",)}.get(kind, ("accuracy", "auroc", "recall_at_<x>pct_fpr"))
    for name in names:
        if kind in _BINARY_KINDS and _RECALL_METRIC.fullmatch(name):
            continue
        if name not in valid:
            raise unknown(f"metric for a {kind} probe", name, valid)
    return names


def _metric_value(kind: str, metric: str, y: np.ndarray, s: np.ndarray) -> float:
    """Point value of one metric for one probe: y (N,), s (N,) decision values or (N, K) class scores."""
    if kind == "multiclass":
        return accuracy(y.astype(np.int64), s.argmax(axis=1))
    if kind == "ridge":
        return r2_score(y, s)
    if metric == "accuracy":
        return accuracy(y.astype(bool), s > 0)
    if metric == "auroc":
        return auroc(y, s)
    return recall_at_fpr(y, s, fpr=float(_RECALL_METRIC.fullmatch(metric).group(1)) / 100)


def _metric_with_ci(
    kind: str, metric: str, y: np.ndarray, s: np.ndarray, n_boot: int, seed: int
) -> tuple[float, float, float]:
    """(value, ci_low, ci_high): Wilson for multiclass accuracy, otherwise a paired percentile bootstrap."""
    value = _metric_value(kind, metric, y, s)
    if kind == "multiclass":
        lo, hi = wilson_ci(int(round(value * y.size)), y.size)
    elif kind == "ridge":
        lo, hi = bootstrap_ci_paired(y, s, r2_score, n_boot=n_boot, seed=seed)
    elif metric == "accuracy":  # accuracy is a mean of hits: resampling the hits is the paired bootstrap
        lo, hi = bootstrap_ci((s > 0) == y.astype(bool), np.mean, n_boot=n_boot, seed=seed)
    elif metric == "auroc":
        lo, hi = bootstrap_ci_paired(y, s, auroc, n_boot=n_boot, seed=seed)
    else:
        fpr = float(_RECALL_METRIC.fullmatch(metric).group(1)) / 100
        lo, hi = bootstrap_ci_paired(y, s, partial(recall_at_fpr, fpr=fpr), n_boot=n_boot, seed=seed)
    return value, lo, hi


def _eval_labels(probe: LinearProbe, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Scores (P, N[, K]) and labels (P, N) as numpy, with the same length checks as fitting."""
    s = probe.scores(X)
    y = _as_tensor(y, "labels")
    if y.ndim not in (1, 2):
        raise WorkbenchError(f"labels must be (N,) or (P, N), got shape {tuple(y.shape)}")
    if y.shape[-1] != s.shape[1]:
        raise WorkbenchError(f"{s.shape[1]} activations but {y.shape[-1]} labels")
    if y.ndim == 2 and y.shape[0] != probe.n_probes:
        raise WorkbenchError(f"the probe holds {probe.n_probes} probes but labels are given for {y.shape[0]}")
    Y = y.to(_F64).cpu().numpy()
    Y = np.broadcast_to(Y, (probe.n_probes, Y.shape[-1]))
    if probe.kind in _BINARY_KINDS and not np.isin(Y, (0.0, 1.0)).all():
        raise WorkbenchError(
            f"{probe.kind} probes are evaluated on binary 0/1 labels, got value {Y[~np.isin(Y, (0.0, 1.0))][0]:g}"
        )
    return s.cpu().numpy(), Y


def evaluate_probe(
    probe: LinearProbe,
    X: Tensor,
    y: Tensor,
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Tidy table, one row per (probe, metric): columns probe, metric, value, ci_low, ci_high, n (95% intervals).

    X (P, N, d) or (N, d); y (N,) or (P, N). metrics default to the probe kind's: binary kinds ("logistic",
    "mass_mean") report accuracy (decision value > 0), auroc and recall_at_1pct_fpr (any recall_at_<x>pct_fpr
    works) with paired percentile bootstrap intervals; ridge reports r2 with a bootstrap interval; multiclass
    reports top-1 accuracy with a Wilson interval. `probe` is names[p] when given, else the index p. Every
    bootstrap uses `seed`, so all metrics and probes see the same resamples and reruns give the same table.
    """
    chosen = _metric_names(probe.kind, metrics)
    if names is not None and len(names) != probe.n_probes:
        raise WorkbenchError(f"{len(names)} names for {probe.n_probes} probes")
    S, Y = _eval_labels(probe, X, y)
    rows = []
    for q in range(probe.n_probes):
        label = names[q] if names is not None else q
        for metric in chosen:
            value, lo, hi = _metric_with_ci(probe.kind, metric, Y[q], S[q], n_boot, seed)
            rows.append(
                {"probe": label, "metric": metric, "value": value, "ci_low": lo, "ci_high": hi, "n": int(Y.shape[1])}
            )
    return pd.DataFrame(rows, columns=["probe", "metric", "value", "ci_low", "ci_high", "n"])


# --------------------------------------------------------------------------------------------------- controls


def _type_key(value: np.ndarray) -> bytes:
    """A stable byte key for one type (a scalar or a row): equal values give equal keys in every process."""
    if value.dtype.kind in "biu":
        return value.astype(np.int64).tobytes()
    if value.dtype.kind == "f":
        return value.astype(np.float64).tobytes()
    return repr(value.tolist()).encode()


def control_task_labels(types: Any, n_classes: int = 2, seed: int = 0) -> np.ndarray:
    """Hewitt & Liang (2019) control task: a consistent random relabelling, (N,) int64 classes in [0, n_classes).

    types: (N,) values (cell index, word id, token string) or (N, k) rows (e.g. (row, col) cells). Every distinct
    type gets one uniformly random class, the same every time it appears. A probe can only solve this task by
    memorising types, so task accuracy minus control accuracy (`selectivity`) shows how much of a probe's success
    is the representation rather than the probe's own capacity. The class of a type depends only on the type and
    the seed (a keyed hash), not on which other types are present, so train and test splits labelled separately
    stay consistent. With few types a class can be left empty; use enough types (tens or more).
    """
    arr = _as_tensor(types).cpu().numpy() if isinstance(types, Tensor) else np.asarray(types)
    if arr.ndim not in (1, 2) or arr.shape[0] == 0:
        raise WorkbenchError(f"types must be a non-empty (N,) or (N, k) array, got shape {tuple(arr.shape)}")
    if int(n_classes) < 2:
        raise WorkbenchError(f"n_classes must be >= 2, got {n_classes}")
    uniq, inverse = np.unique(arr, axis=0 if arr.ndim == 2 else None, return_inverse=True)
    salt = int(seed).to_bytes(16, "little", signed=True)
    classes = np.array(
        [
            int.from_bytes(hashlib.blake2b(_type_key(u), digest_size=8, key=salt).digest(), "little") % int(n_classes)
            for u in uniq
        ],
        dtype=np.int64,
    )
    return classes[np.asarray(inverse).reshape(-1)]


def selectivity(task_metric: float, control_metric: float) -> float:
    """Task metric minus control-task metric (Hewitt & Liang): high only if the representation, not the probe's
    capacity to memorise, explains the task score. Works elementwise on arrays and pandas Series."""
    return task_metric - control_metric


def random_direction_baseline(
    X: Tensor, y: Tensor, n_directions: int = 100, seed: int = 0, *, standardize: bool = True
) -> dict:
    """AUROC of random unit directions in the (standardised) activation space: what chance looks like here.

    Why: with d features and few examples, or with a label correlated with a dominant feature, random directions
    can score far from 0.5; a probe's AUROC is only meaningful against this spread. X (N, d); y (N,) in {0, 1}.
    Returns {"mean", "p95" (95th percentile of AUROC), "max_abs" (max |AUROC - 0.5| + 0.5), "p95_abs" (95th
    percentile of |AUROC - 0.5| + 0.5, the fair comparison for a probe whose sign was fitted), "aurocs"
    ((n_directions,) array), "n_directions"}. Directions come from np.random.default_rng(seed).
    """
    X, Y = _inputs(X, y, "logistic")
    if X.ndim != 2:
        raise WorkbenchError(f"random_direction_baseline takes one (N, d) activation matrix, got {tuple(X.shape)}")
    if int(n_directions) < 1:
        raise WorkbenchError(f"n_directions must be >= 1, got {n_directions}")
    mean, std = _standardisation(X, 1, standardize)
    dirs = np.random.default_rng(seed).standard_normal((int(n_directions), X.shape[1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    S = (((X - mean[0]) / std[0]) @ torch.from_numpy(dirs).to(X.device).T).cpu().numpy()
    labels = Y[0].cpu().numpy()
    aurocs = np.array([auroc(labels, S[:, j]) for j in range(S.shape[1])])
    folded = np.abs(aurocs - 0.5) + 0.5
    return {
        "mean": float(aurocs.mean()),
        "p95": float(np.quantile(aurocs, 0.95)),
        "max_abs": float(folded.max()),
        "p95_abs": float(np.quantile(folded, 0.95)),
        "aurocs": aurocs,
        "n_directions": int(n_directions),
    }


# --------------------------------------------------------------------------------------------------- transfer


_FITTERS: dict[str, Callable[..., LinearProbe]] = {
    "logistic": fit_logistic,
    "mass_mean": fit_mass_mean,
    "ridge": fit_ridge,
    "multiclass": fit_multiclass,
}


def _fit_each(fit_sets: Mapping[str, tuple[Any, Any]], method: str, kw: dict) -> dict[str, LinearProbe]:
    if method not in _FITTERS:
        raise unknown("probe method", method, _FITTERS)
    if not fit_sets:
        raise WorkbenchError("transfer needs at least one fit set")
    probes = {}
    for name, (X, y) in fit_sets.items():
        probe = _FITTERS[method](X, y, **kw)
        if probe.n_probes != 1:
            raise WorkbenchError(f"fit set {name!r} gives {probe.n_probes} probes; transfer sets hold one (N, d) each")
        probes[name] = probe
    return probes


def transfer_matrix(
    fit_sets: Mapping[str, tuple[Tensor, Tensor]],
    test_sets: Mapping[str, tuple[Tensor, Tensor]],
    method: str = "logistic",
    metric: str = "auroc",
    **kw: Any,
) -> pd.DataFrame:
    """Fit one probe per fit split and score it on every test split: rows = fit split, columns = test split.

    Why: a probe that only works on the distribution it was fitted on has found a split-specific feature, not the
    concept; the off-diagonal entries say how far it transfers. Each set is (X (N, d), y (N,)); `method` is one of
    "logistic", "mass_mean", "ridge", "multiclass" and `kw` go to its fit function. Point values only; see
    `transfer_table` for the same with bootstrap intervals.
    """
    probes = _fit_each(fit_sets, method, kw)
    kind = next(iter(probes.values())).kind
    (metric,) = _metric_names(kind, (metric,))
    values = {}
    for fit_name, probe in probes.items():
        row = {}
        for test_name, (X, y) in test_sets.items():
            S, Y = _eval_labels(probe, X, y)
            row[test_name] = _metric_value(kind, metric, Y[0], S[0])
        values[fit_name] = row
    table = pd.DataFrame.from_dict(values, orient="index").reindex(columns=list(test_sets))
    table.index.name, table.columns.name = "fit", "test"
    return table


def transfer_table(
    fit_sets: Mapping[str, tuple[Tensor, Tensor]],
    test_sets: Mapping[str, tuple[Tensor, Tensor]],
    method: str = "logistic",
    metrics: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    **kw: Any,
) -> pd.DataFrame:
    """`transfer_matrix` in long form with intervals: columns fit, test, metric, value, ci_low, ci_high, n, one
    row per (fit split, test split, metric), computed by `evaluate_probe`."""
    probes = _fit_each(fit_sets, method, kw)
    parts = []
    for fit_name, probe in probes.items():
        for test_name, (X, y) in test_sets.items():
            part = evaluate_probe(probe, X, y, metrics=metrics, n_boot=n_boot, seed=seed)
            parts.append(part.drop(columns="probe").assign(fit=fit_name, test=test_name))
    cols = ["fit", "test", "metric", "value", "ci_low", "ci_high", "n"]
    return pd.concat(parts, ignore_index=True)[cols]
