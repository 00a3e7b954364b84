"""The solver behind `workbench.probes.fit_logistic`: many L2 logistic regressions at once, each on its own terms.

Why a solver of our own: a probe study fits hundreds of small logistic regressions, and scikit-learn's
`LogisticRegression` (one L-BFGS per probe) re-reads each design matrix from memory about twice per iteration, in
float64. What makes a batch fast differs by case:
- many label sets on one matrix X (N, d): every probe's scores are one matrix product X @ W^T, so a pass over X
  serves all P probes (compute-bound: one read of X per pass instead of P);
- one matrix per probe (layers x positions): nothing is shared, so the cost is passes over each matrix. Each pass
  computes the loss and the gradient together on cache-sized row blocks, float32 activations are read as float32
  (half the bytes of float64), and every probe stops as soon as its own gradient is small (no probe waits for the
  slowest). This case is memory-bound for both sides; see benchmarks/bench_probes.py for what that allows.

The method is L-BFGS per probe (its own history, step and stopping test) with two things sklearn's lacks: the
initial inverse Hessian is the Newton matrix at w = 0, (S / 4 + l2 I)^-1 with S the covariance of the standardised
features on a strided row sample, Ledoit-Wolf shrunk (so correlated activations cost about as many iterations as
independent ones); and the bias starts at the log-odds of the labels. The line search is Armijo backtracking from a
unit step; the objective is convex, so every accepted step gives a valid curvature pair. All small algebra
(weights, histories, losses, gradient sums) is float64; the products with X and the elementwise loss run in X's
dtype, blockwise, with float64 accumulation across blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_F64 = torch.float64
_HISTORY = 10  # L-BFGS curvature pairs kept per probe
_ARMIJO = 1e-4  # sufficient decrease constant
_MAX_HALVINGS = 40  # backtracking steps before a probe is declared stalled
_WHITEN_MAX_D = 1024  # above this width the d x d Newton preconditioner costs more than it saves: identity


@dataclass
class LogisticSolution:
    """Per-probe results of `solve_logistic` on the standardised design matrix."""

    weight: Tensor  # (P, d) float64, weights on the standardised features
    bias: Tensor  # (P,) float64
    n_iter: Tensor  # (P,) int64, L-BFGS iterations taken by each probe
    converged: Tensor  # (P,) bool, True when the probe stopped on its gradient or on a stalled objective
    loss: Tensor  # (P,) float64, objective at the returned weights
    grad_max: Tensor  # (P,) float64, max |gradient| at the returned weights
    passes: int  # full passes over the design matrix (loss + gradient evaluations), for bandwidth accounting
    flops: float  # floating-point operations in products with the design matrix, preconditioner included


def block_rows(n: int, d: int, element_size: int, device: torch.device) -> int:
    """Rows per block: ~2 MB of the matrix on a CPU, so a block read for the scores is still in cache when the
    gradient reads it (smaller blocks pay per-call overhead: 1.5x slower at 256 KB, measured on a 2-core EPYC);
    everything at once on an accelerator, where launches cost more than memory traffic."""
    if device.type != "cpu":
        return n
    return max(64, min(n, (2 << 20) // max(d * element_size, 1)))


class _Design:
    """The standardised design Z = (X - mean) / std of P probes, never materialised.

    X is (N, d), shared by every probe (one matrix product per block serves all of them), or (P, N, d), one
    matrix per probe (each probe reads only its own, a view at a time). Normally the standardisation is folded
    into the weights (scores X v + c, gradient (X^T r - mean sum r) / std): a pass is then pure products on X.
    For float32 X with a column mean more than 4 standard deviations from 0, the fold would lose the gradient to
    float32 cancellation, so each block is centred and scaled in a reused buffer first (one extra pass in cache)."""

    def __init__(self, X: Tensor, mean: Tensor, std: Tensor) -> None:
        self.X, self.dtype, self.shared = X, X.dtype, X.ndim == 2
        self.mean, self.std = mean, std  # (P, d) float64
        n, d = X.shape[-2:]
        self.rows = block_rows(n, d, X.element_size(), X.device)
        self.centre = X.dtype != _F64 and bool(((mean / std).abs() > 4).any())
        if self.centre:
            self.scale = (1.0 / std).to(X.dtype)
            self.shift = (-mean / std).to(X.dtype)
            self.buf = torch.empty(self.rows, d, dtype=X.dtype, device=X.device)

    def _blocks(self, q: int | None):
        X = self.X if q is None else self.X[q]
        for a in range(0, X.shape[0], self.rows):
            xb = X[a : a + self.rows]
            if self.centre:
                zb = self.buf[: xb.shape[0]]
                i = 0 if q is None else q
                torch.addcmul(self.shift[i], xb, self.scale[i], out=zb)
                xb = zb
            yield slice(a, a + xb.shape[0]), xb

    def sample_rows(self, probe: int, rows: Tensor) -> Tensor:
        """Standardised rows (m, d) of one probe's matrix (every probe's, when X is shared), in X's dtype."""
        X = self.X if self.shared else self.X[probe]
        i = 0 if self.shared else probe
        return (X[rows] - self.mean[i].to(X.dtype)) * (1.0 / self.std[i]).to(X.dtype)

    def loss_grad(
        self, signs: Tensor, W: Tensor, b: Tensor, probes: Tensor, l2: float
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Objective (A,), weight gradient (A, d) and bias gradient (A,) of the mean logistic loss
        + l2/2 ||w||^2 for the probes `probes` (A,) at weights W (A, d), b (A,), in one pass over their data.

        signs: 2y - 1 in X's dtype, (N, P) for a shared X (rows of a block are contiguous), (P, N) otherwise (each
        probe's labels are contiguous). With margin m = sign * score, the loss is -logsigmoid(m) and its
        derivative in the score is (sigmoid(m) - 1) * sign: one logsigmoid and one exp per entry, in X's dtype
        (float32 elementwise work is half the cost, and rounds no worse than the products that made the score);
        every sum over rows accumulates in float64."""
        n = signs.shape[0] if self.shared else signs.shape[1]
        if self.centre:
            V, c = W, b
        else:
            V = W / self.std[probes]
            c = b - (V * self.mean[probes]).sum(dim=1)
        Vx, cx = V.to(self.dtype), c.to(self.dtype)
        loss = torch.zeros_like(b)
        g_v = torch.zeros_like(W)
        g_b = torch.zeros_like(b)
        if self.shared:
            Vt = Vx.T.contiguous()  # (d, A)
            sg = signs if probes.numel() == signs.shape[1] else signs[:, probes]
            for rows, xb in self._blocks(None):
                t = sg[rows]
                m = torch.addmm(cx, xb, Vt).mul_(t)  # (B, A) margins
                ls = torch.nn.functional.logsigmoid(m)
                loss -= ls.sum(dim=0, dtype=_F64)
                r = ls.exp_().sub_(1.0).mul_(t)  # dloss/dscore
                g_v += (r.T @ xb).to(_F64)
                g_b += r.sum(dim=0, dtype=_F64)
        else:
            for i, q in enumerate(probes.tolist()):
                v, ci, sq = Vx[i], cx[i], signs[q]
                for rows, xb in self._blocks(q):
                    t = sq[rows]
                    m = torch.addmv(ci, xb, v).mul_(t)  # (B,) margins
                    ls = torch.nn.functional.logsigmoid(m)
                    loss[i] -= ls.sum(dtype=_F64)
                    r = ls.exp_().sub_(1.0).mul_(t)
                    g_v[i] += (r @ xb).to(_F64)
                    g_b[i] += r.sum(dtype=_F64)
        if not self.centre:
            g_v = (g_v - g_b[:, None] * self.mean[probes]) / self.std[probes]
        loss = loss / n + 0.5 * l2 * (W * W).sum(dim=1)
        return loss, g_v / n + l2 * W, g_b / n


def _preconditioner(design: _Design, l2: float, rows: int) -> tuple[Tensor | None, float]:
    """Cholesky factors (G, d, d), G = 1 for a shared matrix else P, of the logistic Hessian at w = 0,
    S / 4 + l2 I, with S the covariance of z estimated on `rows` strided rows and shrunk toward mu I (mu its mean
    eigenvalue) by the Ledoit-Wolf weight; or None when d is too wide for it to pay; and the FLOPs it took.

    Why shrink: on independent features the sample covariance of m rows spreads its eigenvalues over
    (1 +- sqrt(d/m))^2 by chance alone, and preconditioning with that noise costs iterations (10-11 instead of 7
    at m = 8 d, measured); Ledoit-Wolf's weight is ~1 there (the identity: plain L-BFGS) and ~0 on correlated
    activations, where whitening turns ~50 iterations into ~8."""
    n, d = design.X.shape[-2:]
    if d > _WHITEN_MAX_D:
        return None, 0.0
    m = min(n, rows)
    idx = torch.linspace(0, n - 1, m, device=design.X.device).round().long()
    g = 1 if design.shared else design.X.shape[0]
    hess = torch.empty(g, d, d, dtype=_F64, device=design.X.device)
    for q in range(g):
        z = design.sample_rows(q, idx)  # (m, d) standardised, in X's dtype
        cov = (z.T @ z).to(_F64) / m
        mu = float(cov.diagonal().mean())
        cov_sq = float((cov * cov).sum())
        spread = cov_sq - d * mu * mu  # ||S - mu I||_F^2
        row_sq = (z * z).sum(dim=1, dtype=_F64)
        noise = float((row_sq * row_sq).sum()) / m**2 - cov_sq / m  # Ledoit-Wolf's estimate of the sampling error
        alpha = min(1.0, max(0.0, noise / spread)) if spread > 0 else 1.0
        hess[q] = cov.mul_((1 - alpha) / 4)
        hess[q].diagonal().add_(alpha * mu / 4 + max(l2, 1e-8))
    chol, info = torch.linalg.cholesky_ex(hess)
    flops = 2.0 * m * d * d * g
    if bool((info != 0).any()):
        return None, flops
    return chol, flops


def _apply_h0(chol: Tensor | None, idx: Tensor, g_w: Tensor, g_b: Tensor) -> tuple[Tensor, Tensor]:
    """H0 (g_w, g_b) for the probes idx: the Newton-at-zero inverse Hessian (bias curvature 1/4 at p = 1/2)."""
    if chol is None:
        h_w = g_w
    elif chol.shape[0] == 1:
        h_w = torch.cholesky_solve(g_w.T, chol[0]).T
    else:
        h_w = torch.cholesky_solve(g_w[..., None], chol[idx])[..., 0]
    return h_w, 4.0 * g_b


@dataclass
class _State:
    """L-BFGS state for P probes: iterate, objective, gradient and curvature history, all float64."""

    W: Tensor  # (P, d)
    b: Tensor  # (P,)
    S: Tensor  # (P, H, d + 1) steps
    Yd: Tensor  # (P, H, d + 1) gradient changes
    rho: Tensor  # (P, H) 1 / s.y; 0 marks an empty slot
    gamma: Tensor  # (P,) scale of H0 from the newest pair
    slot: int = 0
    filled: int = 0


def _new_state(p: int, d: int, b0: Tensor) -> _State:
    z = torch.zeros(p, _HISTORY, d + 1, dtype=_F64, device=b0.device)
    return _State(
        W=torch.zeros(p, d, dtype=_F64, device=b0.device),
        b=b0.clone(),
        S=z,
        Yd=z.clone(),
        rho=torch.zeros(p, _HISTORY, dtype=_F64, device=b0.device),
        gamma=torch.ones(p, dtype=_F64, device=b0.device),
    )


def _direction(st: _State, idx: Tensor, g: Tensor, chol: Tensor | None) -> Tensor:
    """-H g for the probes idx by the two-loop recursion over the filled history slots (g is (A, d + 1))."""
    d = g.shape[1] - 1
    q = g.clone()
    Sa, Ya, ra = st.S[idx], st.Yd[idx], st.rho[idx]
    order = [(st.slot - 1 - k) % _HISTORY for k in range(st.filled)]
    alphas = []
    for j in order:
        a = ra[:, j] * (Sa[:, j] * q).sum(dim=1)
        q -= a[:, None] * Ya[:, j]
        alphas.append(a)
    h_w, h_b = _apply_h0(chol, idx, q[:, :d], q[:, d])
    r = torch.cat([h_w, h_b[:, None]], dim=1) * st.gamma[idx, None]
    for j, a in zip(reversed(order), reversed(alphas), strict=True):
        beta = ra[:, j] * (Ya[:, j] * r).sum(dim=1)
        r += (a - beta)[:, None] * Sa[:, j]
    return -r


def _lbfgs(
    design: _Design, Y: Tensor, st: _State, chol: Tensor | None, *, l2: float, max_iter: int, tol: float
) -> dict:
    """Run L-BFGS from state `st` (updated in place) until every probe stops; returns per-probe diagnostics."""
    p, d = st.W.shape
    n = Y.shape[1]
    signs = (2 * Y - 1).to(design.dtype)  # (P, N)
    signs = signs.T.contiguous() if design.shared else signs.contiguous()
    f, g_w, g_b = design.loss_grad(signs, st.W, st.b, torch.arange(p, device=st.W.device), l2)
    passes, pass_flops = 1, 4.0 * n * d  # scores and gradient: two multiply-adds per matrix entry per probe
    flops = pass_flops * p
    noise_eps = 16 * torch.finfo(design.dtype).eps  # relative rounding of a loss summed from products in Z's dtype
    n_iter = torch.zeros(p, dtype=torch.long, device=st.W.device)
    gmax = torch.maximum(g_w.abs().amax(dim=1), g_b.abs())
    active = gmax > tol
    converged = ~active
    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        g = torch.cat([g_w[idx], g_b[idx, None]], dim=1)
        direction = _direction(st, idx, g, chol)
        slope = (direction * g).sum(dim=1)
        bad = slope >= 0  # not a descent direction (impossible with positive curvature; restart if it happens)
        if bad.any():
            h_w, h_b = _apply_h0(chol, idx[bad], g_w[idx][bad], g_b[idx][bad])
            direction[bad] = -torch.cat([h_w, h_b[:, None]], dim=1)
            slope = (direction * g).sum(dim=1)
            st.rho[idx[bad]] = 0.0
        # Armijo backtracking from t = 1, each round evaluating only the probes still searching
        a_n = idx.numel()
        step = torch.ones(a_n, dtype=_F64, device=st.W.device)
        f_new, gb_new = torch.empty_like(step), torch.empty_like(step)
        gw_new = torch.empty(a_n, d, dtype=_F64, device=st.W.device)
        todo = torch.arange(a_n, device=st.W.device)
        for _ in range(_MAX_HALVINGS):
            probes = idx[todo]
            t_dir = step[todo, None] * direction[todo]
            f_t, gw_t, gb_t = design.loss_grad(
                signs, st.W[probes] + t_dir[:, :d], st.b[probes] + t_dir[:, d], probes, l2
            )
            passes, flops = passes + 1, flops + pass_flops * todo.numel()
            f_new[todo], gw_new[todo], gb_new[todo] = f_t, gw_t, gb_t
            # Armijo; or, when the decrease is below what the products' rounding can resolve, the curvature test
            # on the new gradient alone (near the optimum in float32 both losses are equal to rounding)
            sl, f0 = slope[todo], f[probes]
            ok = f_t <= f0 + _ARMIJO * step[todo] * sl
            d_new = (gw_t * direction[todo, :d]).sum(dim=1) + gb_t * direction[todo, d]
            ok |= (f_t <= f0 + noise_eps * f0.abs().clamp_min(1.0)) & (d_new.abs() <= 0.9 * sl.abs())
            todo = todo[~ok]
            if todo.numel() == 0:
                break
            step[todo] *= 0.5
        keep = torch.ones(a_n, dtype=torch.bool, device=st.W.device)
        keep[todo] = False  # no acceptable step down to 2^-40: the objective is flat to rounding here
        s_vec = step[:, None] * direction
        y_vec = torch.cat([gw_new - g_w[idx], (gb_new - g_b[idx])[:, None]], dim=1)
        sy = (s_vec * y_vec).sum(dim=1)
        good = keep & (sy > 1e-12 * s_vec.norm(dim=1) * y_vec.norm(dim=1))
        st.S[idx, st.slot] = s_vec
        st.Yd[idx, st.slot] = y_vec
        st.rho[idx, st.slot] = torch.where(good, 1.0 / torch.where(good, sy, 1.0), 0.0)
        if good.any():
            yh_w, yh_b = _apply_h0(chol, idx[good], y_vec[good, :d], y_vec[good, d])
            yhy = (y_vec[good, :d] * yh_w).sum(dim=1) + y_vec[good, d] * yh_b
            st.gamma[idx[good]] = sy[good] / yhy.clamp_min(1e-300)
        st.slot, st.filled = (st.slot + 1) % _HISTORY, min(st.filled + 1, _HISTORY)
        moved = idx[keep]
        change = (f[moved] - f_new[keep]).abs()
        st.W[moved] += s_vec[keep, :d]
        st.b[moved] += s_vec[keep, d]
        f[moved], g_w[moved], g_b[moved] = f_new[keep], gw_new[keep], gb_new[keep]
        n_iter[idx] += 1
        gmax[moved] = torch.maximum(g_w[moved].abs().amax(dim=1), g_b[moved].abs())
        finished = (gmax[idx] <= tol) | ~keep
        finished[keep] |= change <= 1e-12 * f[moved].abs().clamp_min(1.0)
        converged[idx[finished]] = True
        active[idx[finished]] = False
    return {"n_iter": n_iter, "converged": converged, "loss": f, "grad_max": gmax, "passes": passes, "flops": flops}


def solve_logistic(
    X: Tensor,
    mean: Tensor,
    std: Tensor,
    Y: Tensor,
    *,
    l2: float,
    max_iter: int,
    tol: float,
    sample: int | None = None,
) -> LogisticSolution:
    """Fit P logistic probes on standardised activations z = (x - mean[p]) / std[p].

    X (N, d) shared by all probes or (P, N, d), float32 or float64; mean and std (P, d) float64; Y (P, N) float64
    0/1 labels. Each probe minimises (1/N) sum_n BCE(y_n, w . z_n + b) + (l2 / 2) ||w||^2 and stops when
    max |gradient| <= tol, when its objective stops changing (relative 1e-12) or after max_iter iterations.
    `sample` is the number of strided rows behind the preconditioner: by default 16 d for a shared matrix (paid
    once) and 8 d per matrix otherwise (paid per probe). Deterministic for fixed inputs.
    """
    p, n = Y.shape
    d = X.shape[-1]
    design = _Design(X, mean, std)
    rows = sample if sample is not None else (16 if design.shared else 8) * d
    chol, flops = _preconditioner(design, l2, rows)
    prior = Y.mean(dim=1).clamp(1e-12, 1 - 1e-12)
    st = _new_state(p, d, torch.log(prior / (1 - prior)))
    out = _lbfgs(design, Y, st, chol, l2=l2, max_iter=max_iter, tol=tol)
    return LogisticSolution(
        weight=st.W,
        bias=st.b,
        n_iter=out["n_iter"],
        converged=out["converged"],
        loss=out["loss"],
        grad_max=out["grad_max"],
        passes=out["passes"],
        flops=flops + out["flops"],
    )
