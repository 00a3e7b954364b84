"""The per-probe-matrix path of `workbench.logistic` (a layer x position sweep): cache-sized groups, the standardised
column-major copy, the single-probe L-BFGS loop and the preconditioner's pilot sample each give the solution of
the general path they replace. Small sizes, fixed seeds; no timing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench.logistic as logistic
from workbench.probes import _check_finite_first, _standardisation, fit_logistic

L2 = 1e-2


def sweep(p: int, n: int, d: int, seed: int, offset: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """P correlated (P, N, d) float64 matrices with a planted direction each, and their 0/1 labels (P, N)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(p):
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        y = rng.integers(0, 2, n)
        u = rng.standard_normal(d)
        x = (rng.standard_normal((n, d)) / np.sqrt(np.arange(1, d + 1))) @ q.T + 0.2 * np.outer(2 * y - 1, u)
        xs.append(x * rng.uniform(0.5, 2.0, d) + offset)
        ys.append(y)
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


def test_groups_cover_every_probe_in_order_within_the_byte_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    X = torch.zeros(7, 100, 10)  # 4,000 bytes per matrix
    monkeypatch.setattr(logistic, "_GROUP_BYTES", 9_000)
    groups = logistic.matrix_groups(X)
    assert [(g.start, g.stop) for g in groups] == [(0, 2), (2, 4), (4, 6), (6, 7)]
    monkeypatch.setattr(logistic, "_GROUP_BYTES", 1_000)  # smaller than one matrix: still one probe per group
    assert [(g.start, g.stop) for g in logistic.matrix_groups(X)] == [(q, q + 1) for q in range(7)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_staged_copy_gives_the_same_loss_and_gradient(dtype: torch.dtype) -> None:
    X, Y = sweep(3, 300, 8, seed=0, offset=5.0)
    X = X.to(dtype)
    mean, std = _standardisation(X, 3, True)
    signs = (2 * Y - 1).to(dtype)
    gen = torch.Generator().manual_seed(1)
    W = 0.3 * torch.randn(3, 8, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    probes = torch.arange(3)
    plain = logistic._Design(X, mean, std).loss_grad(signs, W, b, probes, L2)
    stage = torch.full((3 * 300 * 8 + 5,), float("nan"), dtype=dtype)  # a larger, dirty buffer: only its front used
    design = logistic._Design(X, mean, std, stage)
    assert design.staged and not design.centre
    z = ((X.double() - mean[:, None]) / std[:, None]).transpose(1, 2)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(design.Zt.double(), z, atol=tol * 10, rtol=0)
    for a, c in zip(plain, design.loss_grad(signs, W, b, probes, L2), strict=True):
        torch.testing.assert_close(a, c, atol=tol, rtol=tol)


def test_single_probe_loop_matches_the_batched_loop() -> None:
    X, Y = sweep(1, 800, 12, seed=2)
    mean, std = _standardisation(X, 1, True)
    design = logistic._Design(X, mean, std)
    chol, _ = logistic._preconditioner(design, L2, 96)
    h0 = torch.cholesky_inverse(chol)
    prior = Y.double().mean(dim=1)
    outs, states = [], []
    for loop in (logistic._lbfgs, logistic._lbfgs_one):
        st = logistic._new_state(1, 12, torch.log(prior / (1 - prior)))
        outs.append(loop(design, Y.double(), st, h0, l2=L2, max_iter=200, tol=1e-10))
        states.append(st)
    batched, one = outs
    assert bool(one["converged"][0]) and float(one["grad_max"][0]) <= 1e-7  # or its objective stopped changing
    torch.testing.assert_close(states[0].W, states[1].W, atol=1e-9, rtol=0)
    torch.testing.assert_close(states[0].b, states[1].b, atol=1e-9, rtol=0)
    assert abs(int(batched["n_iter"][0]) - int(one["n_iter"][0])) <= 1  # same method, step for step
    assert one["reads"] == one["passes"] >= int(one["n_iter"][0]) + 1


def test_fit_is_the_same_with_and_without_the_staged_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    X, Y = sweep(4, 500, 10, seed=3, offset=50.0)  # a large mean: float32 would cancel if it were folded in
    X32 = X.float()
    monkeypatch.setattr(logistic, "_GROUP_BYTES", 2 * 500 * 10 * 4)  # groups of two probes: the batched loop
    grouped = fit_logistic(X32, Y, l2=L2, tol=1e-7)
    monkeypatch.setattr(logistic, "_GROUP_BYTES", 1)  # one probe at a time: the single-probe loop
    single = fit_logistic(X32, Y, l2=L2, tol=1e-7)
    monkeypatch.setattr(logistic, "_STAGE", False)  # row-major X, standardisation folded or blocks centred
    unstaged = fit_logistic(X32, Y, l2=L2, tol=1e-7)
    exact = fit_logistic(X, Y, l2=L2, tol=1e-9)  # float64 reference
    for probe in (grouped, single, unstaged):
        assert probe.meta["converged"]
        torch.testing.assert_close(probe.weight, exact.weight, atol=2e-4, rtol=0)
        torch.testing.assert_close(probe.bias, exact.bias, atol=2e-4, rtol=0)
        torch.testing.assert_close(probe.mean, exact.mean, atol=1e-4, rtol=1e-6)
    assert single.meta["reads"] == single.meta["passes"] >= 4 * 2  # per-probe groups: every pass reads one matrix
    assert grouped.meta["reads"] >= grouped.meta["passes"]


def test_preconditioner_stops_at_the_pilot_only_when_it_is_mostly_noise() -> None:
    rng = np.random.default_rng(4)
    n, d, m = 4000, 16, 256
    ones, zeros = torch.ones(1, d, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64)
    white = logistic._Design(torch.from_numpy(rng.standard_normal((n, d))), zeros, ones)
    _, flops = logistic._preconditioner(white, L2, m)
    assert flops == 2.0 * (m // logistic._PILOT) * d * d  # independent features: the pilot rows decide
    x, _ = sweep(1, n, d, seed=5)
    xs = (x[0] - x[0].mean(0)) / x[0].std(0, unbiased=False)
    chol, flops = logistic._preconditioner(logistic._Design(xs, zeros, ones), L2, m)
    assert flops == 2.0 * m * d * d  # correlated: the whole sample
    full = xs[torch.linspace(0, n - 1, m).round().long()]
    cov = full.T @ full / m
    hess = chol[0] @ chol[0].T
    assert float((hess - cov / 4).abs().max()) < 0.2 * float(cov.diagonal().mean())  # kept its correlations


def test_solutions_concatenate_in_probe_order() -> None:
    X, Y = sweep(3, 300, 6, seed=6)
    mean, std = _standardisation(X, 3, True)
    parts = [logistic.solve_logistic(X[g], mean[g], std[g], Y[g].double(), l2=L2, max_iter=100, tol=1e-9)
             for g in (slice(0, 1), slice(1, 3))]  # fmt: skip
    whole = logistic.solve_logistic(X, mean, std, Y.double(), l2=L2, max_iter=100, tol=1e-9)
    cat = logistic.LogisticSolution.cat(parts)
    torch.testing.assert_close(cat.weight, whole.weight, atol=1e-8, rtol=0)
    assert cat.n_iter.shape == (3,) and cat.reads == sum(p.reads for p in parts)
    assert cat.flops == sum(p.flops for p in parts)


def test_moments_taken_off_the_transposing_copy_match_the_row_pass() -> None:
    from workbench.probes import _moments

    X, _ = sweep(2, 700, 9, seed=7, offset=300.0)
    X = X.float()
    stage = torch.empty(2 * 700 * 9 + 3)
    zt, mean, sum_sq = logistic._transpose_moments(X, stage)
    ref_mean, ref_sq = _moments(X)
    exact = X.double()
    torch.testing.assert_close(mean, exact.mean(dim=1), atol=0, rtol=1e-6)
    torch.testing.assert_close(mean, ref_mean, atol=0, rtol=1e-6)
    torch.testing.assert_close(sum_sq, ((exact - exact.mean(dim=1, keepdim=True)) ** 2).sum(dim=1), atol=0, rtol=1e-4)
    torch.testing.assert_close(sum_sq, ref_sq, atol=0, rtol=1e-4)
    std = (sum_sq / 700).sqrt()
    z = logistic._standardise_staged(zt, X, mean, std)
    torch.testing.assert_close(z.double(), ((exact - mean[:, None]) / std[:, None]).transpose(1, 2), atol=1e-4, rtol=0)


def test_nan_in_a_late_probe_is_refused_before_any_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.errors import WorkbenchError

    X, Y = sweep(3, 200, 5, seed=8)
    X[2, 17, 3] = float("nan")
    calls = []
    monkeypatch.setattr(logistic, "solve_logistic", lambda *a, **k: calls.append(1))
    with pytest.raises(WorkbenchError, match="nan or inf"):
        fit_logistic(X.float(), Y)
    assert calls == []
    big = torch.zeros(2, 4, 3)
    big[1, :2, 0] = 3e38  # finite values whose float32 sum overflows: not refused by the check itself
    _check_finite_first(big)


def test_threads_solve_groups_side_by_side_with_the_same_results(monkeypatch: pytest.MonkeyPatch) -> None:
    X, Y = sweep(5, 300, 6, seed=9)
    monkeypatch.setattr(logistic, "_GROUP_BYTES", 1)  # five groups of one
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fit_logistic(X.float(), Y, tol=1e-8)
        torch.set_num_threads(2)
        two = fit_logistic(X.float(), Y, tol=1e-8)
        assert torch.get_num_threads() == 2  # restored after the fit
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one.weight, two.weight) and torch.equal(one.bias, two.bias)
    assert torch.equal(one.mean, two.mean) and one.meta["n_iter_each"] == two.meta["n_iter_each"]


def test_shared_matrix_with_two_threads_splits_the_probes_and_agrees() -> None:
    X, _ = sweep(1, 600, 8, seed=10)
    rng = np.random.default_rng(11)
    Y = torch.from_numpy(rng.integers(0, 2, (5, 600)))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fit_logistic(X[0].float(), Y, tol=1e-8)
        torch.set_num_threads(2)
        two = fit_logistic(X[0].float(), Y, tol=1e-8)
        again = fit_logistic(X[0].float(), Y, tol=1e-8)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert one.meta["converged"] and two.meta["converged"]
    torch.testing.assert_close(two.weight, one.weight, atol=1e-6, rtol=0)
    torch.testing.assert_close(two.bias, one.bias, atol=1e-6, rtol=0)
    assert torch.equal(two.weight, again.weight)  # deterministic for fixed inputs and threads


def test_single_probe_loop_without_a_preconditioner_reaches_the_same_optimum(monkeypatch: pytest.MonkeyPatch) -> None:
    X, Y = sweep(2, 500, 7, seed=12)
    monkeypatch.setattr(logistic, "_GROUP_BYTES", 1)
    whitened = fit_logistic(X, Y, tol=1e-9, max_iter=500)
    monkeypatch.setattr(logistic, "_WHITEN_MAX_D", 0)  # too wide for the d x d matrix: identity H0
    plain = fit_logistic(X, Y, tol=1e-9, max_iter=500)
    assert plain.meta["converged"] and whitened.meta["converged"]
    torch.testing.assert_close(plain.weight, whitened.weight, atol=1e-5, rtol=0)
    assert max(whitened.meta["n_iter_each"]) < max(plain.meta["n_iter_each"])  # correlated: whitening pays
