"""Linear probes: golden values, agreement with scikit-learn and numpy, batching, evaluation, controls, transfer."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.metrics import accuracy, auroc
from workbench.probes import (
    LinearProbe,
    control_task_labels,
    evaluate_probe,
    fit_logistic,
    fit_mass_mean,
    fit_multiclass,
    fit_ridge,
    random_direction_baseline,
    selectivity,
    transfer_matrix,
    transfer_table,
)

# Four points on a 2x4 grid: mean (2, 2), population std (1, 2), so z = [[-1,-1], [1,-1], [-1,1], [1,1]].
HAND_X = torch.tensor([[1.0, 0.0], [3.0, 0.0], [1.0, 4.0], [3.0, 4.0]], dtype=torch.float64)
HAND_Y = torch.tensor([0, 1, 1, 1])


def planted(n: int, d: int, seed: int, sep: float = 1.0, axis: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary labels and activations with the class signal (+-sep) on one axis, plus scaled, shifted noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, d))
    x[:, axis] += sep * (2 * y - 1)
    x = x * rng.uniform(0.5, 3.0, d) + rng.uniform(-2.0, 2.0, d)
    return torch.from_numpy(x), torch.from_numpy(y)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --------------------------------------------------------------------------------------------------- mass-mean


def test_mass_mean_matches_hand_computation() -> None:
    probe = fit_mass_mean(HAND_X, HAND_Y)
    # mu_pos = mean of z rows 1..3 = (1/3, 1/3), mu_neg = (-1, -1): w = (4/3, 4/3); midpoint (-1/3, -1/3),
    # bias = -w . midpoint = 8/9; raw-space direction = w / std = (4/3, 2/3).
    torch.testing.assert_close(probe.mean, torch.tensor([[2.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(probe.std, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(probe.weight, torch.tensor([[4 / 3, 4 / 3]], dtype=torch.float64))
    torch.testing.assert_close(probe.bias, torch.tensor([8 / 9], dtype=torch.float64))
    torch.testing.assert_close(probe.direction(), torch.tensor([[4 / 3, 2 / 3]], dtype=torch.float64))
    expected = torch.tensor([[-16 / 9, 8 / 9, 8 / 9, 32 / 9]], dtype=torch.float64)
    torch.testing.assert_close(probe.scores(HAND_X), expected)
    assert probe.predict(HAND_X).tolist() == [[0, 1, 1, 1]]


def test_mass_mean_whitened_matches_hand_computation() -> None:
    # Positive residuals from (1/3, 1/3): (2/3, -4/3), (-4/3, 2/3), (2/3, 2/3); the negative class has none.
    # Pooled covariance (N - 2 = 2): [[4/3, -2/3], [-2/3, 4/3]]; ridge 1e-3 * trace / d = 4e-3 / 3.
    # (S + ridge I) w = (4/3, 4/3) gives w = c (1, 1) with c = (4/3) / (2/3 + 4e-3/3) = 2 / 1.002; bias = 2c / 3.
    probe = fit_mass_mean(HAND_X, HAND_Y, whiten=True)
    c = 2 / 1.002
    torch.testing.assert_close(probe.weight, torch.tensor([[c, c]], dtype=torch.float64))
    torch.testing.assert_close(probe.bias, torch.tensor([2 * c / 3], dtype=torch.float64))


def test_mass_mean_without_standardisation_is_the_raw_mean_difference() -> None:
    probe = fit_mass_mean(HAND_X, HAND_Y, standardize=False)
    # raw class means: positives (7/3, 8/3), negative (1, 0)
    torch.testing.assert_close(probe.direction(), torch.tensor([[4 / 3, 8 / 3]], dtype=torch.float64))


def test_whitening_discounts_a_correlated_nuisance_direction() -> None:
    rng = np.random.default_rng(3)
    n = 2000
    y = rng.integers(0, 2, n)
    nuisance = 3.0 * rng.standard_normal(n)  # large shared noise on both features
    x = np.stack([0.5 * (2 * y - 1) + nuisance + 0.3 * rng.standard_normal(n), nuisance], axis=1)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    plain = auroc(y, fit_mass_mean(X, Y).scores(X)[0])
    white = auroc(y, fit_mass_mean(X, Y, whiten=True).scores(X)[0])
    assert white > 0.9 > plain


# --------------------------------------------------------------------------------------------------- logistic


def test_logistic_agrees_with_sklearn_at_the_documented_c() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = planted(400, 20, seed=0, sep=0.6)
    l2 = 1e-2
    probe = fit_logistic(X, y, l2=l2)
    assert probe.meta["converged"]
    z = ((X - probe.mean[0]) / probe.std[0]).numpy()
    sk = LogisticRegression(C=1.0 / (l2 * len(y)), tol=1e-10, max_iter=10_000).fit(z, y.numpy())
    ours = probe.scores(X)[0].numpy()
    assert abs(auroc(y, ours) - auroc(y, sk.decision_function(z))) <= 1e-3
    assert cosine(probe.weight[0].numpy(), sk.coef_[0]) > 0.999
    np.testing.assert_allclose(probe.weight[0].numpy(), sk.coef_[0], atol=1e-4)
    np.testing.assert_allclose(probe.bias.numpy(), sk.intercept_, atol=1e-4)


def test_batched_logistic_equals_separate_fits() -> None:
    sets = [planted(300, 8, seed=s, sep=0.5 + 0.3 * s, axis=s) for s in range(3)]
    X = torch.stack([x for x, _ in sets])
    Y = torch.stack([y for _, y in sets])
    batched = fit_logistic(X, Y)
    for p, (x, y) in enumerate(sets):
        alone = fit_logistic(x, y)
        torch.testing.assert_close(batched.weight[p], alone.weight[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(batched.bias[p], alone.bias[0], atol=1e-4, rtol=0)
        torch.testing.assert_close(batched.mean[p], alone.mean[0])


def test_shared_activations_broadcast_to_every_probe() -> None:
    X, y = planted(300, 6, seed=1)
    labels = torch.stack([y, 1 - y, (X[:, 1] > X[:, 1].median()).long()])
    shared = fit_logistic(X, labels)
    stacked = fit_logistic(X.expand(3, -1, -1), labels)
    torch.testing.assert_close(shared.weight, stacked.weight, atol=1e-5, rtol=0)
    assert shared.scores(X).shape == (3, 300)
    torch.testing.assert_close(shared.scores(X), shared.scores(X.expand(3, -1, -1)))
    torch.testing.assert_close(shared.weight[0], -shared.weight[1], atol=1e-5, rtol=0)  # flipped labels, flipped w


def test_direction_is_the_raw_space_weight() -> None:
    X, y = planted(200, 5, seed=2)
    probe = fit_logistic(X, y)
    raw = X @ probe.direction()[0]
    offset = probe.scores(X)[0] - raw
    torch.testing.assert_close(offset, torch.full_like(offset, float(offset[0])))  # differs only by a constant
    assert probe.select(0).weight.shape == (1, 5)


def test_logistic_is_deterministic() -> None:
    X, y = planted(200, 5, seed=4)
    assert torch.equal(fit_logistic(X, y).weight, fit_logistic(X, y).weight)


# --------------------------------------------------------------------------------------------------- ridge, multiclass


def test_ridge_equals_numpy_closed_form() -> None:
    rng = np.random.default_rng(5)
    n, d, alpha = 120, 6, 3.0
    x = rng.standard_normal((n, d)) * rng.uniform(0.5, 2.0, d) + 1.0
    t = x @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) + 4.0
    probe = fit_ridge(torch.from_numpy(x), torch.from_numpy(t), alpha=alpha)
    # augmented least squares with an unpenalised intercept column: theta = (A^T A + D)^-1 A^T t
    z = (x - x.mean(axis=0)) / x.std(axis=0)
    A = np.hstack([z, np.ones((n, 1))])
    D = np.diag([alpha] * d + [0.0])
    theta = np.linalg.solve(A.T @ A + D, A.T @ t)
    np.testing.assert_allclose(probe.weight[0].numpy(), theta[:d], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(probe.bias.numpy(), theta[d:], rtol=1e-9)
    np.testing.assert_allclose(probe.predict(torch.from_numpy(x))[0].numpy(), A @ theta, rtol=1e-9)


def test_batched_ridge_matches_each_probe() -> None:
    rng = np.random.default_rng(6)
    X = torch.from_numpy(rng.standard_normal((2, 50, 4)))
    T = torch.from_numpy(rng.standard_normal((2, 50)))
    both = fit_ridge(X, T, alpha=0.5)
    for p in range(2):
        torch.testing.assert_close(both.weight[p], fit_ridge(X[p], T[p], alpha=0.5).weight[0])


def test_multiclass_recovers_separable_classes() -> None:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    centres = 4.0 * np.eye(3, 5)
    k_train, k_test = rng.integers(0, 3, 300), rng.integers(0, 3, 150)
    x_train = centres[k_train] + 0.5 * rng.standard_normal((300, 5))
    x_test = centres[k_test] + 0.5 * rng.standard_normal((150, 5))
    probe = fit_multiclass(torch.from_numpy(x_train), torch.from_numpy(k_train), n_classes=3)
    assert probe.weight.shape == (1, 3, 5) and probe.bias.shape == (1, 3)
    assert probe.scores(torch.from_numpy(x_test)).shape == (1, 150, 3)
    assert accuracy(k_train, probe.predict(torch.from_numpy(x_train))[0]) == 1.0
    assert accuracy(k_test, probe.predict(torch.from_numpy(x_test))[0]) == 1.0
    torch.testing.assert_close(probe.bias.sum(), torch.tensor(0.0, dtype=torch.float64))
    z = ((torch.from_numpy(x_train) - probe.mean[0]) / probe.std[0]).numpy()
    sk = LogisticRegression(C=1.0 / (1e-2 * 300), tol=1e-10, max_iter=10_000).fit(z, k_train)
    np.testing.assert_allclose(probe.weight[0].numpy(), sk.coef_, atol=1e-4)


# --------------------------------------------------------------------------------------------------- evaluation


def test_evaluate_probe_is_tidy_with_intervals_around_the_value() -> None:
    X, y = planted(300, 6, seed=8, sep=0.8)
    labels = torch.stack([y, (X[:, 3] > X[:, 3].median()).long()])
    probe = fit_logistic(X, labels)
    table = evaluate_probe(probe, X, labels, n_boot=200, names=["signal", "other"])
    assert list(table.columns) == ["probe", "metric", "value", "ci_low", "ci_high", "n"]
    assert len(table) == 2 * 3
    assert table["probe"].tolist() == ["signal"] * 3 + ["other"] * 3
    assert table["metric"].tolist()[:3] == ["accuracy", "auroc", "recall_at_1pct_fpr"]
    assert (table["n"] == 300).all()
    assert ((table["ci_low"] <= table["value"]) & (table["value"] <= table["ci_high"])).all()
    row = table.set_index(["probe", "metric"]).loc[("signal", "auroc")]
    assert row["value"] == pytest.approx(auroc(y, probe.scores(X)[0]))
    assert row["value"] > 0.8
    again = evaluate_probe(probe, X, labels, n_boot=200, names=["signal", "other"])
    pd.testing.assert_frame_equal(table, again)


def test_evaluate_ridge_and_multiclass_use_their_metrics() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((200, 4))
    t = x @ np.array([1.0, -2.0, 0.0, 0.5]) + 0.3 * rng.standard_normal(200)
    ridge = evaluate_probe(fit_ridge(torch.from_numpy(x), torch.from_numpy(t)), torch.from_numpy(x), t, n_boot=200)
    assert ridge["metric"].tolist() == ["r2"]
    assert ridge["ci_low"][0] <= ridge["value"][0] <= ridge["ci_high"][0] and ridge["value"][0] > 0.9
    k = rng.integers(0, 3, 200)
    xm = torch.from_numpy(np.eye(3, 4)[k] * 3 + rng.standard_normal((200, 4)))
    multi = evaluate_probe(fit_multiclass(xm, torch.from_numpy(k), n_classes=3), xm, k)
    assert multi["metric"].tolist() == ["accuracy"]
    assert multi["ci_low"][0] <= multi["value"][0] <= multi["ci_high"][0]


# --------------------------------------------------------------------------------------------------- controls


def test_control_task_labels_are_consistent_per_type_and_seeded() -> None:
    rng = np.random.default_rng(10)
    types = rng.integers(0, 40, 500)
    labels = control_task_labels(types, seed=0)
    assert labels.shape == (500,) and set(np.unique(labels)) == {0, 1}
    for t in np.unique(types):
        assert len(np.unique(labels[types == t])) == 1
    assert np.array_equal(labels, control_task_labels(types, seed=0))
    assert not np.array_equal(labels, control_task_labels(types, seed=1))
    # a type's class does not depend on which other types are present: separate splits stay consistent
    assert np.array_equal(control_task_labels(types[:100], seed=0), labels[:100])
    # (row, col) cells as rows, and more than two classes
    cells = np.stack([types % 5, types // 5], axis=1)
    three = control_task_labels(cells, n_classes=3, seed=2)
    assert set(np.unique(three)) == {0, 1, 2}
    for t in np.unique(types):
        assert len(np.unique(three[types == t])) == 1


def test_selectivity_is_positive_for_a_real_signal_and_near_zero_for_noise() -> None:
    rng = np.random.default_rng(11)
    n_types, reps, d = 200, 4, 10
    types = np.repeat(np.arange(n_types), reps)
    task = rng.integers(0, 2, n_types)[types]  # the property the representation encodes
    control = control_task_labels(types, seed=0)

    def split_accuracy(x: np.ndarray, y: np.ndarray) -> float:
        train, test = np.arange(len(y)) % reps < 2, np.arange(len(y)) % reps >= 2  # every type in both splits
        X, Y = torch.from_numpy(x), torch.from_numpy(y)
        probe = fit_logistic(X[train], Y[train])
        return accuracy(y[test], probe.predict(X[test])[0])

    noise = rng.standard_normal((len(types), d))
    signal = noise.copy()
    signal[:, 0] += 2.0 * (2 * task - 1)
    real = selectivity(split_accuracy(signal, task), split_accuracy(signal, control))
    null = selectivity(split_accuracy(noise, task), split_accuracy(noise, control))
    assert real > 0.3
    assert abs(null) < 0.1


def test_random_direction_baseline_is_centred_on_chance() -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((500, 16))
    y = rng.integers(0, 2, 500)
    base = random_direction_baseline(torch.from_numpy(x), torch.from_numpy(y), n_directions=100, seed=0)
    assert abs(base["mean"] - 0.5) < 0.02
    assert 0.5 <= base["p95_abs"] <= base["max_abs"] < 0.65
    assert base["aurocs"].shape == (100,) and base["n_directions"] == 100
    again = random_direction_baseline(torch.from_numpy(x), torch.from_numpy(y), n_directions=100, seed=0)
    assert np.array_equal(base["aurocs"], again["aurocs"])
    X, Y = planted(500, 16, seed=13, sep=1.0)
    probe_auroc = auroc(Y, fit_logistic(X, Y).scores(X)[0])
    assert probe_auroc > random_direction_baseline(X, Y, seed=0)["max_abs"]


# --------------------------------------------------------------------------------------------------- transfer


def test_transfer_matrix_diagonal_beats_a_shifted_split() -> None:
    # split A carries the label on feature 0, split B on feature 1: a probe fitted on one cannot read the other
    splits = {"A": planted(500, 6, seed=14, sep=1.5, axis=0), "B": planted(500, 6, seed=15, sep=1.5, axis=1)}
    fit_sets = {name: (x[:300], y[:300]) for name, (x, y) in splits.items()}
    test_sets = {name: (x[300:], y[300:]) for name, (x, y) in splits.items()}
    matrix = transfer_matrix(fit_sets, test_sets)
    assert matrix.shape == (2, 2)
    assert matrix.index.tolist() == ["A", "B"] and matrix.columns.tolist() == ["A", "B"]
    assert matrix.index.name == "fit" and matrix.columns.name == "test"
    for name, other in (("A", "B"), ("B", "A")):
        assert matrix.loc[name, name] > 0.85
        assert matrix.loc[name, name] > matrix.loc[name, other] + 0.2
    long = transfer_table(fit_sets, test_sets, metrics=("auroc",), n_boot=100)
    assert list(long.columns) == ["fit", "test", "metric", "value", "ci_low", "ci_high", "n"]
    assert len(long) == 4
    np.testing.assert_allclose(long.set_index(["fit", "test"])["value"].unstack().values, matrix.values)
    acc = transfer_matrix(fit_sets, test_sets, method="mass_mean", metric="accuracy")
    assert acc.loc["A", "A"] > acc.loc["A", "B"]


# --------------------------------------------------------------------------------------------------- errors


def test_errors_name_the_problem() -> None:
    X, y = planted(100, 4, seed=18)
    with pytest.raises(WorkbenchError, match="^100 activations but 99 labels$"):
        fit_logistic(X, y[:99])
    with pytest.raises(WorkbenchError, match="100 activations but 99 labels"):
        evaluate_probe(fit_logistic(X, y), X, y[:99])
    with pytest.raises(WorkbenchError, match="binary 0/1 labels, got value 2"):
        fit_logistic(X, torch.cat([y[:-1], torch.tensor([2])]))
    with pytest.raises(WorkbenchError, match="probe 1 are all 1 .*single class"):
        fit_logistic(X, torch.stack([y, torch.ones(100, dtype=torch.long)]))
    with pytest.raises(WorkbenchError, match="probe 0 are all 0 .*single class"):
        fit_mass_mean(X, torch.zeros(100))
    with pytest.raises(WorkbenchError, match="single class"):
        fit_multiclass(X, torch.zeros(100), n_classes=3)
    with pytest.raises(WorkbenchError, match=r"integers in \[0, 3\)"):
        fit_multiclass(X, torch.full((100,), 3), n_classes=3)
    with pytest.raises(WorkbenchError, match="activations for 2 probes but labels for 3"):
        fit_logistic(X.expand(2, -1, -1), y.expand(3, -1))
    with pytest.raises(WorkbenchError, match="nan or inf"):
        fit_logistic(torch.where(X > 2.5, float("nan"), X), y)
    with pytest.raises(WorkbenchError, match="unknown metric .*did you mean: auroc"):
        evaluate_probe(fit_logistic(X, y), X, y, metrics=("aurocc",))
    with pytest.raises(WorkbenchError, match="unknown probe method 'logistc'"):
        transfer_matrix({"a": (X, y)}, {"a": (X, y)}, method="logistc")
    with pytest.raises(WorkbenchError, match="unknown probe kind"):
        LinearProbe(torch.zeros(1, 4), torch.zeros(1), "svm", torch.zeros(1, 4), torch.ones(1, 4))
    with pytest.raises(WorkbenchError, match="n_classes must be >= 2"):
        control_task_labels([1, 2, 3], n_classes=1)


def test_notebook_api_fit_probe_evaluate(registry) -> None:
    """collect -> fit_probe -> evaluate returns a tidy table for each method (tiny random agent)."""
    import workbench

    agent = workbench.load_agent("tiny-maze")
    hook = "embedder.block1.res2.resadd_out"
    fit = workbench.collect(agent, [hook], split="ood", episodes=60, seed=0, progress=False)
    test = workbench.collect(agent, [hook], split="ood", episodes=30, seed=1, progress=False)
    for method, target in (
        ("spatial", "cheese_cell"),
        ("logistic", "cheese_in_region"),
        ("mass_mean", "cheese_in_region"),
        ("ridge", "dist_to_cheese"),
    ):
        table = workbench.fit_probe(fit, hook, target, method=method).evaluate(test, n_boot=100)
        assert list(table.columns) == ["hook", "target", "method", "metric", "value", "ci_low", "ci_high", "n"]
        assert (table["method"] == method).all() and (table["n"] == 30).all()
    spatial = workbench.fit_probe(fit, hook, "cheese_cell", method="spatial")
    assert spatial.direction().shape == (4,)  # one weight per channel of the 4-channel tiny block1
    row = spatial.evaluate(test).iloc[0]
    assert row.metric == "top1" and row.ci_low <= row.value <= row.ci_high
    with pytest.raises(WorkbenchError, match="did you mean: cheese_cell"):
        workbench.fit_probe(fit, hook, "cheese_cel")
