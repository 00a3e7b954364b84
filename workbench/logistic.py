"""The solver behind `workbench.probes.fit_logistic`: many L2 logistic regressions at once, each on its own terms.

Why a solver of our own: a probe study fits hundreds of small logistic regressions, and scikit-learn's
`LogisticRegression` (one L-BFGS per probe) re-reads each design matrix from memory about twice per iteration, in
float64. What makes a batch fast differs by case:
- many label sets on one matrix X (N, d): every probe's scores are one matrix product X @ W^T, so a pass over X
  serves all P probes (compute-bound: one read of X per pass instead of P);
- one matrix per probe (layers x positions): nothing is shared, so the cost is passes over each matrix. Probes
  are solved a cache-sized group at a time (`solve_per_matrix`): the group's mean and std, then a standardised
  column-major copy of its matrices (MKL's float32 matrix-vector products run ~3x faster on it than on the
  row-major activations on this project's AMD CPUs), then every L-BFGS pass from that cache-resident copy, with a
  single-probe loop whose bookkeeping is Python scalars. float32 activations stay float32 (half the bytes of
  float64), and every probe stops as soon as its own gradient is small. See benchmarks/bench_probes.py for what
  bounds it (the products' rate, not DRAM bandwidth).

The method is L-BFGS per probe (its own history, step and stopping test) with two things sklearn's lacks: the
initial inverse Hessian is the Newton matrix at w = 0, (S / 4 + l2 I)^-1 with S the covariance of the standardised
features on a strided row sample (only a quarter of it when that pilot is mostly noise), Ledoit-Wolf shrunk (so
correlated activations cost about as many iterations as independent ones); and the bias starts at the log-odds of
the labels. The line search is Armijo backtracking from a unit step; the objective is convex, so every accepted
step gives a valid curvature pair. All small algebra (weights, histories, losses, gradient sums) is float64; the
products with X and the elementwise loss run in X's dtype, blockwise, with float64 accumulation across blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

_F64 = torch.float64
_HISTORY = 10  # L-BFGS curvature pairs kept per probe
_ARMIJO = 1e-4  # sufficient decrease constant
_MAX_HALVINGS = 40  # backtracking steps before a probe is declared stalled
_WHITEN_MAX_D = 1024  # above this width the d x d Newton preconditioner costs more than it saves: identity
_PILOT = 4  # the preconditioner first estimates its shrinkage on every _PILOT-th sample row, ...
_PILOT_NOISE = 0.9  # ... and stops there when Ledoit-Wolf's weight says the estimate is at least this much noise
_STAGE = True  # per-probe matrices on a CPU are solved from a standardised transposed copy (see `_stage`)
_GROUP_BYTES = 16 << 20  # per-probe matrices solved together: about half of a 32 MiB L3 (see `matrix_groups`)


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
    reads: int = 0  # loss + gradient evaluations summed over probes: reads of one probe's matrix (P, N, d) case

    @staticmethod
    def cat(parts: list[LogisticSolution]) -> LogisticSolution:
        """One solution from the solutions of consecutive groups of probes (see `matrix_groups`)."""
        return LogisticSolution(
            weight=torch.cat([s.weight for s in parts]),
            bias=torch.cat([s.bias for s in parts]),
            n_iter=torch.cat([s.n_iter for s in parts]),
            converged=torch.cat([s.converged for s in parts]),
            loss=torch.cat([s.loss for s in parts]),
            grad_max=torch.cat([s.grad_max for s in parts]),
            passes=sum(s.passes for s in parts),
            flops=sum(s.flops for s in parts),
            reads=sum(s.reads for s in parts),
        )


def block_rows(n: int, d: int, element_size: int, device: torch.device) -> int:
    """Rows per block: ~2 MB of the matrix on a CPU, so a block read for the scores is still in cache when the
    gradient reads it (smaller blocks pay per-call overhead: 1.5x slower at 256 KB, measured on a 2-core EPYC);
    everything at once on an accelerator, where launches cost more than memory traffic."""
    if device.type != "cpu":
        return n
    return max(64, min(n, (2 << 20) // max(d * element_size, 1)))


def matrix_groups(X: Tensor) -> list[slice]:
    """Consecutive runs of probes to solve together when each probe has its own matrix (X is (P, N, d)).

    On a CPU, probes are taken in groups whose matrices fit together in `_GROUP_BYTES` (at least one probe each):
    a group's first read (its mean and std) brings its matrices into the last-level cache and every L-BFGS pass
    after it reads them from there, instead of every pass of every probe streaming its matrix from DRAM as when
    all P probes advance one iteration at a time. On an accelerator, one group (launches cost more than reads)."""
    p = X.shape[0]
    if X.device.type != "cpu":
        return [slice(0, p)]
    size = max(1, _GROUP_BYTES // max(X[0].numel() * X.element_size(), 1))
    return [slice(a, min(p, a + size)) for a in range(0, p, size)]


class _Design:
    """The standardised design Z = (X - mean) / std of P probes, never materialised.

    X is (N, d), shared by every probe (one matrix product per block serves all of them), or (P, N, d), one
    matrix per probe (each probe reads only its own, a view at a time). Normally the standardisation is folded
    into the weights (scores X v + c, gradient (X^T r - mean sum r) / std): a pass is then pure products on X.
    For float32 X with a column mean more than 4 standard deviations from 0, the fold would lose the gradient to
    float32 cancellation, so each block is centred and scaled in a reused buffer first (one extra pass in cache)."""

    def __init__(
        self, X: Tensor, mean: Tensor, std: Tensor, stage: Tensor | None = None, zt: Tensor | None = None
    ) -> None:
        self.X, self.dtype, self.shared = X, X.dtype, X.ndim == 2
        self.mean, self.std = mean, std  # (P, d) float64
        n, d = X.shape[-2:]
        self.rows = block_rows(n, d, X.element_size(), X.device)
        self.staged = stage is not None or zt is not None
        if self.staged:  # per-probe matrices, standardised as Z^T (P, d, N): given, or written into stage
            self.Zt = zt if zt is not None else _stage(X, mean, std, stage)
            # whole-matrix products: column-major row blocks run MKL's kernels at less than half the rate (lda = N),
            # and the two reads of a cache-resident matrix cost less than the blocks' extra calls (measured)
            self.rows = n
        self.centre = not self.staged and X.dtype != _F64 and bool(((mean / std).abs() > 4).any())
        if self.centre:
            self.scale = (1.0 / std).to(X.dtype)
            self.shift = (-mean / std).to(X.dtype)
            self.buf = torch.empty(self.rows, d, dtype=X.dtype, device=X.device)

    def _blocks(self, q: int | None):
        if self.staged:  # column-major blocks of Z: B rows, each of its d columns a contiguous run of B values
            Z = self.Zt[q].T
            for a in range(0, Z.shape[0], self.rows):
                yield slice(a, min(a + self.rows, Z.shape[0])), Z[a : a + self.rows]
            return
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
        explicit = self.centre or self.staged  # blocks are z itself: no standardisation to fold into the weights
        if explicit:
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
        if not explicit:
            g_v = (g_v - g_b[:, None] * self.mean[probes]) / self.std[probes]
        loss = loss / n + 0.5 * l2 * (W * W).sum(dim=1)
        return loss, g_v / n + l2 * W, g_b / n


def _stage(X: Tensor, mean: Tensor, std: Tensor, stage: Tensor) -> Tensor:
    """Z^T = ((X[q] - mean[q]) / std[q])^T for every probe q of X (P, N, d), written into the front of `stage`
    (a reused flat buffer) as (P, d, N); returns that view.

    Why a transposed copy: on this project's CPUs (MKL on AMD EPYC) a float32 matrix-vector product reads a
    row-major (N, 256) matrix at ~7 GB/s but a column-major one at ~22 GB/s, near a plain sum's rate. The copy
    costs about as much as four passes and every L-BFGS pass after it is ~2.5x cheaper; standardising it once also
    keeps float32 cancellation out of the passes (no folded mean, no per-block centring)."""
    p, n, d = X.shape
    zt = stage[: p * d * n].view(p, d, n)
    for q in range(p):
        zt[q].copy_(X[q].T)
        zt[q].sub_(mean[q].to(X.dtype)[:, None]).mul_((1.0 / std[q]).to(X.dtype)[:, None])
    return zt


def _transpose_moments(X: Tensor, stage: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(X[q] - X[q, 0])^T for every probe q of X (P, N, d), written into the front of `stage` as (P, d, N), and
    the column means and centred sums of squares (P, d) float64 read off that copy while it is in cache: the
    transposing copy is then the only read of X from memory (`_moments` does the same on row blocks). Finish with
    `_standardise_staged`."""
    p, n, d = X.shape
    zt = stage[: p * d * n].view(p, d, n)
    s1 = torch.empty(p, d, dtype=_F64, device=X.device)
    s2 = torch.empty_like(s1)
    for q in range(p):
        zt[q].copy_(X[q].T).sub_(X[q, 0][:, None])
        s1[q] = zt[q].sum(dim=1)  # pairwise float32 sums along contiguous rows of N values
        s2[q] = torch.linalg.vector_norm(zt[q], dim=1).square()
    delta = s1 / n
    return zt, X[:, 0].to(_F64) + delta, (s2 - n * delta * delta).clamp_min_(0.0)


def _standardise_staged(zt: Tensor, X: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Turn `_transpose_moments`' shifted copy into Z^T = ((X[q] - mean[q]) / std[q])^T, in place."""
    for q in range(zt.shape[0]):
        zt[q].sub_((mean[q] - X[q, 0].to(_F64)).to(zt.dtype)[:, None]).mul_((1.0 / std[q]).to(zt.dtype)[:, None])
    return zt


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
    first = torch.zeros(m, dtype=torch.bool, device=idx.device)
    first[::_PILOT] = True  # a quarter of the sample, spread over the whole matrix like the rest
    g = 1 if design.shared else design.X.shape[0]
    hess = torch.empty(g, d, d, dtype=_F64, device=design.X.device)
    flops = 0.0
    for q in range(g):
        gram, row_sq, used = None, [], 0
        for part in (idx[first], idx[~first]):
            if part.numel() == 0:
                continue
            z = design.sample_rows(q, part)  # (m_k, d) standardised, in X's dtype
            gz = (z.T @ z).to(_F64)
            gram = gz if gram is None else gram.add_(gz)
            row_sq.append((z * z).sum(dim=1).to(_F64))
            used += part.numel()
            flops += 2.0 * part.numel() * d * d
            alpha, cov, mu = _shrinkage(gram, torch.cat(row_sq), used)
            if alpha >= _PILOT_NOISE:  # the pilot rows are mostly sampling noise: near-identity, more rows won't help
                break
        hess[q] = cov.mul_((1 - alpha) / 4)
        hess[q].diagonal().add_(alpha * mu / 4 + max(l2, 1e-8))
    chol, info = torch.linalg.cholesky_ex(hess)
    if bool((info != 0).any()):
        return None, flops
    return chol, flops


def _shrinkage(gram: Tensor, row_sq: Tensor, m: int) -> tuple[float, Tensor, float]:
    """Ledoit-Wolf weight alpha in [0, 1], sample covariance S = gram / m and its mean eigenvalue mu, from the
    Gram matrix (d, d) of m standardised rows and their squared norms (m,)."""
    d = gram.shape[0]
    cov = gram / m
    mu = float(cov.diagonal().mean())
    cov_sq = float((cov * cov).sum())
    spread = cov_sq - d * mu * mu  # ||S - mu I||_F^2
    noise = float((row_sq * row_sq).sum()) / m**2 - cov_sq / m  # Ledoit-Wolf's estimate of the sampling error
    alpha = min(1.0, max(0.0, noise / spread)) if spread > 0 else 1.0
    return alpha, cov, mu


def _apply_h0(h0: Tensor | None, idx: Tensor, g_w: Tensor, g_b: Tensor) -> tuple[Tensor, Tensor]:
    """H0 (g_w, g_b) for the probes idx: the Newton-at-zero inverse Hessian h0 (G, d, d), G = 1 when shared
    (bias curvature 1/4 at p = 1/2). A product with the explicit inverse: a batched triangular solve per
    iteration costs several times more on a CPU at these sizes."""
    if h0 is None:
        h_w = g_w
    elif h0.shape[0] == 1:
        h_w = g_w @ h0[0]  # symmetric
    else:
        hq = h0 if idx.numel() == h0.shape[0] else h0[idx]  # every probe still active: no gather
        h_w = torch.bmm(g_w[:, None, :], hq)[:, 0]
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


def _direction(st: _State, idx: Tensor, g: Tensor, h0: Tensor | None) -> Tensor:
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
    h_w, h_b = _apply_h0(h0, idx, q[:, :d], q[:, d])
    r = torch.cat([h_w, h_b[:, None]], dim=1) * st.gamma[idx, None]
    for j, a in zip(reversed(order), reversed(alphas), strict=True):
        beta = ra[:, j] * (Ya[:, j] * r).sum(dim=1)
        r += (a - beta)[:, None] * Sa[:, j]
    return -r


def _lbfgs(design: _Design, Y: Tensor, st: _State, h0: Tensor | None, *, l2: float, max_iter: int, tol: float) -> dict:
    """Run L-BFGS from state `st` (updated in place) until every probe stops; returns per-probe diagnostics."""
    p, d = st.W.shape
    n = Y.shape[1]
    signs = (2 * Y - 1).to(design.dtype)  # (P, N)
    signs = signs.T.contiguous() if design.shared else signs.contiguous()
    f, g_w, g_b = design.loss_grad(signs, st.W, st.b, torch.arange(p, device=st.W.device), l2)
    passes, pass_flops = 1, 4.0 * n * d  # scores and gradient: two multiply-adds per matrix entry per probe
    flops, reads = pass_flops * p, p
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
        direction = _direction(st, idx, g, h0)
        slope = (direction * g).sum(dim=1)
        bad = slope >= 0  # not a descent direction (impossible with positive curvature; restart if it happens)
        if bad.any():
            h_w, h_b = _apply_h0(h0, idx[bad], g_w[idx][bad], g_b[idx][bad])
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
            passes, flops, reads = passes + 1, flops + pass_flops * todo.numel(), reads + todo.numel()
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
            yh_w, yh_b = _apply_h0(h0, idx[good], y_vec[good, :d], y_vec[good, d])
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
    return {
        "n_iter": n_iter,
        "converged": converged,
        "loss": f,
        "grad_max": gmax,
        "passes": passes,
        "flops": flops,
        "reads": reads,
    }


def _lbfgs_one(
    design: _Design, Y: Tensor, st: _State, h0: Tensor | None, *, l2: float, max_iter: int, tol: float
) -> dict:
    """`_lbfgs` for a single probe (P = 1), the same method step for step, with its bookkeeping on one (d + 1)
    vector and Python scalars instead of (P, ...) tensors with index gathers: solving a sweep probe by probe
    (`solve_per_matrix`) pays this loop's overhead once per probe and iteration, where the batched loop's ~60 small
    tensor operations per iteration would cost as much as a pass over a 5,000 x 256 matrix."""
    d = st.W.shape[1]
    n = Y.shape[1]
    dev = st.W.device
    signs = (2 * Y - 1).to(design.dtype)
    signs = signs.T.contiguous() if design.shared else signs.contiguous()  # (N, 1) or (1, N), as loss_grad reads
    probe = torch.zeros(1, dtype=torch.long, device=dev)
    if h0 is None:  # identity on the weights (wide d: no d x d matrix), 4 on the bias
        diag = torch.ones(d + 1, dtype=_F64, device=dev)
        diag[d] = 4.0

        def h_mul(v: Tensor) -> Tensor:
            return v * diag
    else:  # H0 as one (d + 1) x (d + 1) matrix: the weights block, 4 on the bias
        h = torch.zeros(d + 1, d + 1, dtype=_F64, device=dev)
        h[:d, :d] = h0[0]
        h[d, d] = 4.0

        def h_mul(v: Tensor) -> Tensor:
            return h @ v

    def evaluate(x: Tensor) -> tuple[float, Tensor]:
        f, g_w, g_b = design.loss_grad(signs, x[None, :d], x[d : d + 1], probe, l2)
        return float(f[0]), torch.cat([g_w[0], g_b])

    x = torch.cat([st.W[0], st.b])
    f, g = evaluate(x)
    pass_flops = 4.0 * n * d
    passes, flops = 1, pass_flops
    noise_eps = 16 * torch.finfo(design.dtype).eps
    gmax = float(g.abs().max())
    converged, n_iter, gamma = gmax <= tol, 0, 1.0
    pairs: list[tuple[Tensor, Tensor, float]] = []  # (s, y, rho), oldest first; rho = 0 marks a skipped pair
    while not converged and n_iter < max_iter:
        q = g.clone()
        alphas = []
        for s_k, y_k, rho in reversed(pairs):
            a = rho * float(s_k @ q)
            q.add_(y_k, alpha=-a)
            alphas.append(a)
        r = h_mul(q).mul_(gamma)
        for (s_k, y_k, rho), a in zip(pairs, reversed(alphas), strict=True):
            r.add_(s_k, alpha=a - rho * float(y_k @ r))
        direction = r.neg_()
        slope = float(direction @ g)
        if slope >= 0:  # not a descent direction: restart from H0 with the history's weights cleared
            direction = -h_mul(g)
            slope = float(direction @ g)
            pairs = [(s_k, y_k, 0.0) for s_k, y_k, _ in pairs]
        step, keep = 1.0, False
        for _ in range(_MAX_HALVINGS):
            f_t, g_t = evaluate(x + step * direction)
            passes, flops = passes + 1, flops + pass_flops
            if f_t <= f + _ARMIJO * step * slope:
                keep = True
            elif f_t <= f + noise_eps * max(abs(f), 1.0) and abs(float(g_t @ direction)) <= 0.9 * abs(slope):
                keep = True
            if keep:
                break
            step *= 0.5
        s_vec = step * direction
        y_vec = g_t - g
        sy = float(s_vec @ y_vec)
        good = keep and sy > 1e-12 * float(s_vec.norm()) * float(y_vec.norm())
        pairs = [*pairs, (s_vec, y_vec, 1.0 / sy if good else 0.0)][-_HISTORY:]
        if good:
            gamma = sy / max(float(y_vec @ h_mul(y_vec)), 1e-300)
        n_iter += 1
        if not keep:  # no acceptable step down to 2^-40: the objective is flat to rounding here
            converged = True
            break
        change = abs(f - f_t)
        x, f, g = x + s_vec, f_t, g_t
        gmax = float(g.abs().max())
        converged = gmax <= tol or change <= 1e-12 * max(abs(f), 1.0)
    st.W[0], st.b[0] = x[:d], x[d]
    return {
        "n_iter": torch.tensor([n_iter], device=dev),
        "converged": torch.tensor([converged], device=dev),
        "loss": torch.tensor([f], dtype=_F64, device=dev),
        "grad_max": torch.tensor([gmax], dtype=_F64, device=dev),
        "passes": passes,
        "flops": flops,
        "reads": passes,
    }


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
    stage: Tensor | None = None,
    zt: Tensor | None = None,
) -> LogisticSolution:
    """Fit P logistic probes on standardised activations z = (x - mean[p]) / std[p].

    X (N, d) shared by all probes or (P, N, d), float32 or float64; mean and std (P, d) float64; Y (P, N) float64
    0/1 labels. Each probe minimises (1/N) sum_n BCE(y_n, w . z_n + b) + (l2 / 2) ||w||^2 and stops when
    max |gradient| <= tol, when its objective stops changing (relative 1e-12) or after max_iter iterations.
    `sample` is the number of strided rows behind the preconditioner: by default 16 d for a shared matrix (paid
    once) and 8 d per matrix otherwise (paid per probe). `stage`: for a (P, N, d) X, a flat buffer of at least
    P N d values in X's dtype to hold the standardised, transposed matrices (see `_stage`); None reads X as it is.
    `zt`: those matrices already staged, (P, d, N).
    Deterministic for fixed inputs.
    """
    p, n = Y.shape
    d = X.shape[-1]
    design = _Design(X, mean, std, stage if X.ndim == 3 else None, zt)
    rows = sample if sample is not None else (16 if design.shared else 8) * d
    chol, flops = _preconditioner(design, l2, rows)
    h0 = None if chol is None else torch.cholesky_inverse(chol)
    prior = Y.mean(dim=1).clamp(1e-12, 1 - 1e-12)
    st = _new_state(p, d, torch.log(prior / (1 - prior)))
    out = (_lbfgs_one if p == 1 else _lbfgs)(design, Y, st, h0, l2=l2, max_iter=max_iter, tol=tol)
    return LogisticSolution(
        weight=st.W,
        bias=st.b,
        n_iter=out["n_iter"],
        converged=out["converged"],
        loss=out["loss"],
        grad_max=out["grad_max"],
        passes=out["passes"],
        flops=flops + out["flops"],
        reads=out["reads"],
    )


def solve_per_matrix(
    X: Tensor,
    Y: Tensor,
    standardise: Callable[[Tensor, tuple[Tensor, Tensor] | None], tuple[Tensor, Tensor]],
    *,
    l2: float,
    max_iter: int,
    tol: float,
) -> tuple[LogisticSolution, Tensor, Tensor]:
    """`solve_logistic` for one matrix per probe (X (P, N, d)), a cache-sized group of probes at a time.

    `standardise(X_g, moments)` gives a group's (G, d) float64 mean and std, from its column means and centred
    sums of squares when `moments` has them, else by reading X_g. On a CPU each group is read from memory once: a
    transposing copy into a reused buffer with the moments taken off it (`_transpose_moments`), standardised in
    place, then every L-BFGS pass of the group from that cache-resident copy. Elsewhere the group's mean and std,
    then its fit on X as it is. Returns the solution and the (P, d) mean and std.

    With T > 1 torch threads on a CPU, T groups are solved at once, one per Python thread with one torch thread
    each (torch's kernels release the GIL), instead of T threads splitting every small product: a probe's ~100
    operations per iteration each pay a thread barrier otherwise, which costs more than it saves at these sizes
    and far more when the cores are shared. torch's thread count is restored on return; each probe's arithmetic
    is single-threaded either way, so results do not depend on T.
    """
    groups = matrix_groups(X)
    n, d = X.shape[1:]
    staged = X.device.type == "cpu" and _STAGE
    workers = min(torch.get_num_threads(), len(groups)) if X.device.type == "cpu" else 1
    size = max(g.stop - g.start for g in groups) * n * d
    buffers = [torch.empty(size, dtype=X.dtype) if staged else None for _ in range(workers)]

    def solve(g: slice, stage: Tensor | None) -> tuple[LogisticSolution, Tensor, Tensor]:
        xg, zt = X[g], None
        if stage is None:
            mean, std = standardise(xg, None)
        else:
            zt, mean, sum_sq = _transpose_moments(xg, stage)
            mean, std = standardise(xg, (mean, sum_sq))
            _standardise_staged(zt, xg, mean, std)
        return solve_logistic(xg, mean, std, Y[g], l2=l2, max_iter=max_iter, tol=tol, zt=zt), mean, std

    if workers <= 1:
        results = [solve(g, buffers[0]) for g in groups]
    else:
        results = _in_threads(groups, buffers, solve)
    return (
        LogisticSolution.cat([r[0] for r in results]),
        torch.cat([r[1] for r in results]),
        torch.cat([r[2] for r in results]),
    )


def solve_shared(
    X: Tensor, mean: Tensor, std: Tensor, Y: Tensor, *, l2: float, max_iter: int, tol: float
) -> LogisticSolution:
    """`solve_logistic` for P label sets on one matrix X (N, d). With T > 1 torch threads on a CPU and P >= T, the
    probes are split into T contiguous parts solved side by side, one Python thread and one torch thread each
    (each part reads X itself: this case is compute-bound, and every small per-iteration operation on (P, d)
    tensors would otherwise pay a thread barrier, which on shared cores cost more than the second core gave).
    Each part's arithmetic is single-threaded, so results depend on T only through how the probes are split
    (rounding in the shared products), and are deterministic for fixed inputs and T."""
    p = Y.shape[0]
    workers = min(torch.get_num_threads(), p) if X.device.type == "cpu" else 1
    if workers <= 1:
        return solve_logistic(X, mean, std, Y, l2=l2, max_iter=max_iter, tol=tol)
    edges = [round(k * p / workers) for k in range(workers + 1)]
    parts = [slice(a, b) for a, b in zip(edges, edges[1:], strict=False)]

    def solve(g: slice, _: None) -> LogisticSolution:
        return solve_logistic(X, mean[g], std[g], Y[g], l2=l2, max_iter=max_iter, tol=tol)

    return LogisticSolution.cat(_in_threads(parts, [None] * workers, solve))


def _in_threads(groups: list[slice], buffers: list, solve: Callable) -> list:
    """solve(group, buffer) for every group, len(buffers) Python threads at once, each with its own buffer, torch
    at one thread meanwhile; results in group order; the first error is raised after all threads stop."""
    from concurrent.futures import ThreadPoolExecutor
    from queue import SimpleQueue

    free: SimpleQueue = SimpleQueue()
    for b in buffers:
        free.put(b)

    def run(g: slice):
        buf = free.get()
        try:
            return solve(g, buf)
        finally:
            free.put(buf)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=len(buffers)) as pool:
            return list(pool.map(run, groups))
    finally:
        torch.set_num_threads(threads)
