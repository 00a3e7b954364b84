"""The fast logistic path (`workbench.logistic`): agreement with scikit-learn in every branch, and its edge cases.

Branches: a shared design matrix vs one per probe; float32 vs float64; standardisation folded into the weights
vs blocks centred first (float32 with a large column mean); with and without the Newton-at-zero preconditioner
and its shrinkage. Small sizes, fixed seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench.logistic as logistic
from workbench.errors import WorkbenchError
from workbench.metrics import auroc
from workbench.probes import fit_logistic

L2 = 1e-2


def correlated(n: int, d: int, seed: int, offset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Activations with a decaying spectrum (like a residual stream: condition number ~ d) and a planted
    direction, so the preconditioner has something to do; labels 0/1 with AUROC well below 1."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    y = rng.integers(0, 2, n)
    u = rng.standard_normal(d)
    u /= np.linalg.norm(u)
    x = (rng.standard_normal((n, d)) / np.sqrt(np.arange(1, d + 1))) @ q.T + 0.15 * np.outer(2 * y - 1, u)
    return x * rng.uniform(0.5, 2.0, d) + offset, y


def sklearn_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """sklearn on the same standardised z (population std), C = 1 / (l2 N): (coef, intercept, z)."""
    from sklearn.linear_model import LogisticRegression

    x = x.astype(np.float64)
    z = (x - x.mean(0)) / x.std(0)
    clf = LogisticRegression(C=1.0 / (L2 * len(y)), tol=1e-10, max_iter=10_000).fit(z, y)
    return clf.coef_[0], float(clf.intercept_[0]), z


def assert_matches_sklearn(weight: torch.Tensor, bias: torch.Tensor, x: np.ndarray, y: np.ndarray, atol: float):
    coef, intercept, z = sklearn_fit(x, y)
    np.testing.assert_allclose(weight.numpy(), coef, atol=atol)
    assert abs(float(bias) - intercept) <= atol
    ours = z @ weight.numpy() + float(bias)
    assert abs(auroc(y, ours) - auroc(y, z @ coef + intercept)) <= 1e-4


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_probe_matrices_match_sklearn_one_by_one(dtype: torch.dtype) -> None:
    sets = [correlated(600, 12, seed=s) for s in range(3)]
    X = torch.stack([torch.from_numpy(x) for x, _ in sets]).to(dtype)
    Y = torch.stack([torch.from_numpy(y) for _, y in sets])
    probe = fit_logistic(X, Y, l2=L2, tol=1e-8)
    assert probe.meta["converged"] and probe.meta["dtype"] == str(dtype).removeprefix("torch.")
    for q, (_, y) in enumerate(sets):
        assert_matches_sklearn(probe.weight[q], probe.bias[q], X[q].double().numpy(), y, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_shared_matrix_matches_sklearn_per_label_set(dtype: torch.dtype) -> None:
    x, y = correlated(800, 10, seed=7)
    rng = np.random.default_rng(0)
    labels = np.stack([y, 1 - y, (x[:, 0] + rng.standard_normal(800) > 0).astype(np.int64)])
    X = torch.from_numpy(x).to(dtype)
    probe = fit_logistic(X, torch.from_numpy(labels), l2=L2, tol=1e-8)
    assert probe.meta["converged"]
    for q in range(3):
        assert_matches_sklearn(probe.weight[q], probe.bias[q], X.double().numpy(), labels[q], atol=1e-4)


def test_float32_with_a_large_column_mean_is_centred_blockwise() -> None:
    # |mean| / std ~ 1000 on some columns: folding the mean into the gradient would cancel in float32
    x, y = correlated(500, 6, seed=3, offset=1000.0)
    X = torch.from_numpy(x).float()
    design = logistic._Design(X, *(t[None] for t in _moments(X)))
    assert design.centre
    probe = fit_logistic(X, torch.from_numpy(y), l2=L2, tol=1e-7)
    assert probe.meta["converged"] and probe.meta["grad_max"] <= 1e-7
    assert_matches_sklearn(probe.weight[0], probe.bias[0], X.double().numpy(), y, atol=2e-4)


def _moments(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = X.double()
    return x.mean(0), x.std(0, unbiased=False)


def test_preconditioner_leaves_the_optimum_unchanged_and_saves_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = correlated(3000, 8, seed=11)
    X = torch.from_numpy(x)
    mean, std = (t[None] for t in _moments(X))
    Y = torch.from_numpy(y).double()[None]
    sampled = logistic.solve_logistic(X, mean, std, Y, l2=L2, max_iter=200, tol=1e-9, sample=64)
    full = logistic.solve_logistic(X, mean, std, Y, l2=L2, max_iter=200, tol=1e-9, sample=10_000)
    monkeypatch.setattr(logistic, "_WHITEN_MAX_D", 0)  # identity H0
    plain = logistic.solve_logistic(X, mean, std, Y, l2=L2, max_iter=500, tol=1e-9)
    for other in (full, plain):
        torch.testing.assert_close(sampled.weight, other.weight, atol=1e-6, rtol=0)
        torch.testing.assert_close(sampled.bias, other.bias, atol=1e-6, rtol=0)
    assert_matches_sklearn(sampled.weight[0], sampled.bias[0], x, y, atol=1e-5)
    # correlated features: whitening is what makes them cheap
    assert int(full.n_iter[0]) < int(plain.n_iter[0])


def test_shrinkage_is_near_identity_on_independent_features() -> None:
    rng = np.random.default_rng(12)
    X = torch.from_numpy(rng.standard_normal((4000, 16)))
    design = logistic._Design(X, torch.zeros(1, 16, dtype=torch.float64), torch.ones(1, 16, dtype=torch.float64))
    chol, _ = logistic._preconditioner(design, 0.0, 64)  # 64 rows of white noise: the sample covariance is noise
    hess = chol[0] @ chol[0].T
    off = hess - torch.diag(hess.diagonal())
    assert float(off.abs().max()) < 0.02 * float(hess.diagonal().mean())  # shrunk almost all the way to mu I
    x, _ = correlated(4000, 16, seed=13)
    Xc = torch.from_numpy((x - x.mean(0)) / x.std(0))
    design = logistic._Design(Xc, torch.zeros(1, 16, dtype=torch.float64), torch.ones(1, 16, dtype=torch.float64))
    chol, _ = logistic._preconditioner(design, 0.0, 256)
    hess = chol[0] @ chol[0].T
    off = hess - torch.diag(hess.diagonal())
    assert float(off.abs().max()) > 0.05 * float(hess.diagonal().mean())  # correlated: kept, not shrunk away


def test_each_probe_stops_on_its_own() -> None:
    easy, y_easy = correlated(400, 5, seed=1)
    y_hard = (easy[:, 0] > 0).astype(np.int64)  # separable: with a small l2, many more iterations
    X = torch.from_numpy(np.stack([easy, easy]))
    both = fit_logistic(X, torch.from_numpy(np.stack([y_easy, y_hard])), l2=1e-3, tol=1e-9)
    alone = fit_logistic(X[:1], torch.from_numpy(y_easy)[None], l2=1e-3, tol=1e-9)
    assert both.meta["converged"]
    easy_iters, hard_iters = both.meta["n_iter_each"]
    assert easy_iters == alone.meta["n_iter"] < hard_iters == both.meta["n_iter"]
    torch.testing.assert_close(both.weight[0], alone.weight[0], atol=1e-10, rtol=0)  # unaffected by its neighbour
    assert both.meta["passes"] >= hard_iters + 1


def test_separable_data_gives_finite_weights_at_the_regularised_optimum() -> None:
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 100)
    x = rng.standard_normal((200, 4))
    x[:, 0] += 6.0 * (2 * y - 1)  # perfectly separable along axis 0
    probe = fit_logistic(torch.from_numpy(x), torch.from_numpy(y), l2=L2, tol=1e-9)
    assert probe.meta["converged"] and torch.isfinite(probe.weight).all()
    assert_matches_sklearn(probe.weight[0], probe.bias[0], x, y, atol=1e-4)
    assert auroc(y, probe.scores(torch.from_numpy(x))[0].numpy()) == 1.0


def test_iteration_limit_is_reported_as_not_converged() -> None:
    x, y = correlated(300, 6, seed=9)
    probe = fit_logistic(torch.from_numpy(x), torch.from_numpy(y), max_iter=1, tol=1e-12)
    assert not probe.meta["converged"] and probe.meta["n_iter"] == 1


def test_constant_feature_and_half_precision_input() -> None:
    x, y = correlated(300, 5, seed=4)
    x[:, 2] = 3.0  # constant: std 1, z = 0, so its weight is 0 up to float32 rounding of the folded mean
    probe = fit_logistic(torch.from_numpy(x).to(torch.bfloat16), torch.from_numpy(y))
    assert probe.meta["dtype"] == "float32" and probe.weight.dtype == torch.float64
    assert abs(float(probe.weight[0, 2])) <= 1e-5 < float(probe.weight[0].abs().max())


def test_fast_path_refuses_bad_labels_before_fitting() -> None:
    x, y = correlated(100, 3, seed=6)
    X = torch.from_numpy(x).float()
    with pytest.raises(WorkbenchError, match="probe 1 are all 0 .*single class"):
        fit_logistic(X, torch.stack([torch.from_numpy(y), torch.zeros(100, dtype=torch.long)]))
    with pytest.raises(WorkbenchError, match="nan or inf"):
        fit_logistic(torch.where(X > 1.0, float("inf"), X), torch.from_numpy(y))


def test_fast_path_is_deterministic() -> None:
    x, y = correlated(500, 6, seed=8)
    X = torch.from_numpy(x).float().expand(3, -1, -1).contiguous()
    Y = torch.from_numpy(y).expand(3, -1)
    a, b = fit_logistic(X, Y), fit_logistic(X, Y)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    torch.testing.assert_close(a.weight[0], a.weight[2], atol=0, rtol=0)  # same data, same answer per probe
