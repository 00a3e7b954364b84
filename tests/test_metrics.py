"""Golden values for workbench.metrics (hand-computed, arithmetic in the comments) plus property checks."""

from __future__ import annotations

import numpy as np
import pytest

from workbench import metrics
from workbench.errors import WorkbenchError
from workbench.metrics import (
    accuracy,
    auroc,
    bootstrap_ci,
    bootstrap_ci_paired,
    diff_of_rates_ci,
    median_ci,
    normalised_effect,
    paired_diff_ci,
    r2_score,
    rank_average,
    rate,
    recall_at_fpr,
    wilson_ci,
)


def flags(k: int, n: int) -> np.ndarray:
    return np.r_[np.ones(k, dtype=bool), np.zeros(n - k, dtype=bool)]


# ------------------------------------------------------------------------------------------------ Wilson / rate


def test_wilson_8_of_10():
    # p = 0.8, z^2 = 3.8415, denom = 1 + z^2/n = 1.38415
    # centre = (0.8 + 3.8415/20) / 1.38415 = 0.99207 / 1.38415 = 0.71674
    # half = 1.96 * sqrt(0.8*0.2/10 + 3.8415/400) / 1.38415 = 1.96 * sqrt(0.0256037) / 1.38415 = 0.22658
    # -> (0.71674 - 0.22658, 0.71674 + 0.22658) = (0.4902, 0.9433)
    lo, hi = wilson_ci(8, 10)
    assert lo == pytest.approx(0.4902, abs=5e-5)
    assert hi == pytest.approx(0.9433, abs=5e-5)


def test_wilson_edges():
    assert wilson_ci(0, 0) == (0.0, 1.0)
    # 0/10: centre = (0 + 0.19207)/1.38415 = 0.13877, half = 1.96*sqrt(0.0096037)/1.38415 = 0.13877 -> (0, 0.2775)
    lo, hi = wilson_ci(0, 10)
    assert lo == 0.0
    assert hi == pytest.approx(0.2775, abs=5e-5)
    lo, hi = wilson_ci(10, 10)  # mirror image of 0/10
    assert hi == 1.0
    assert lo == pytest.approx(1 - 0.2775, abs=5e-5)
    with pytest.raises(WorkbenchError):
        wilson_ci(11, 10)


def test_rate_dict():
    r = rate([True, True, False, True, True, True, True, False, True, True])  # 8/10
    assert r["n"] == 10
    assert r["rate"] == pytest.approx(0.8)
    assert r["ci95"] == pytest.approx([0.4902, 0.9433], abs=5e-5)
    assert rate(np.array([1, 0, 1, 1]))["rate"] == pytest.approx(0.75)  # 0/1 numbers accepted
    empty = rate([])
    assert empty["n"] == 0 and np.isnan(empty["rate"]) and empty["ci95"] == [0.0, 1.0]
    with pytest.raises(WorkbenchError, match="0/1"):
        rate([0.5, 1.0])


def test_rate_accepts_torch():
    torch = pytest.importorskip("torch")
    r = rate(torch.tensor([True, False, True, True]))
    assert r["rate"] == pytest.approx(0.75) and r["n"] == 4


# ------------------------------------------------------------------------------------------------ differences


def test_newcombe_1998_example():
    # Newcombe (1998), Stat Med 17:873, example (a): 56/70 vs 48/80, method 10 gives 0.2 with CI (0.0524, 0.3339).
    # Wilson 56/70 = (l1, u1) = (0.6918, 0.8770); Wilson 48/80 = (l2, u2) = (0.4905, 0.7004)
    # lower = 0.2 - sqrt((0.8 - 0.6918)^2 + (0.7004 - 0.6)^2) = 0.2 - sqrt(0.011707 + 0.010080) = 0.2 - 0.1476 = 0.0524
    # upper = 0.2 + sqrt((0.8770 - 0.8)^2 + (0.6 - 0.4905)^2) = 0.2 + sqrt(0.005922 + 0.012001) = 0.2 + 0.1339 = 0.3339
    a = flags(48, 80)
    b = flags(56, 70)
    out = diff_of_rates_ci(a, b)  # b - a
    assert out["diff"] == pytest.approx(0.2)
    assert out["ci95"] == pytest.approx([0.0524, 0.3339], abs=5e-5)
    assert out["a"]["n"] == 80 and out["b"]["n"] == 70
    # swapping the samples negates the difference and mirrors the interval
    rev = diff_of_rates_ci(b, a)
    assert rev["diff"] == pytest.approx(-0.2)
    assert rev["ci95"] == pytest.approx([-0.3339, -0.0524], abs=5e-5)


def test_newcombe_empty_sample():
    out = diff_of_rates_ci([], [True, False])
    assert np.isnan(out["diff"]) and out["ci95"] == [-1.0, 1.0]


def test_paired_diff_ci():
    a = np.array([0, 0, 1, 0, 1, 0, 0, 1, 0, 0], dtype=bool)
    b = np.array([1, 0, 1, 1, 1, 1, 0, 1, 1, 0], dtype=bool)
    out = paired_diff_ci(a, b, seed=3)
    # b - a = [1,0,0,1,0,1,0,0,1,0] -> mean 4/10
    assert out["diff"] == pytest.approx(0.4)
    assert out["n"] == 10
    lo, hi = out["ci95"]
    assert lo <= 0.4 <= hi
    assert 0.0 <= lo and hi <= 1.0  # differences are all 0 or 1 here, so every resampled mean is in [0, 1]
    assert paired_diff_ci(a, b, seed=3) == out  # deterministic for a seed
    # the CI is exactly the percentile bootstrap of the differences
    assert tuple(out["ci95"]) == bootstrap_ci(b.astype(float) - a.astype(float), np.mean, seed=3)
    with pytest.raises(WorkbenchError, match="same length"):
        paired_diff_ci(a, b[:-1])


# ------------------------------------------------------------------------------------------------ bootstrap


def test_bootstrap_deterministic_and_contains_estimate():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, size=200)
    ci1 = bootstrap_ci(x, np.mean, n_boot=1000, seed=7)
    ci2 = bootstrap_ci(x, np.mean, n_boot=1000, seed=7)
    ci3 = bootstrap_ci(x, np.mean, n_boot=1000, seed=8)
    assert ci1 == ci2
    assert ci1 != ci3
    assert ci1[0] < x.mean() < ci1[1]
    # width close to the normal theory 2 * 1.96 * sd / sqrt(n)
    expected = 2 * 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    assert (ci1[1] - ci1[0]) == pytest.approx(expected, rel=0.15)


def test_bootstrap_matches_a_loop_and_chunking(monkeypatch):
    # the vectorised path must equal drawing the same index matrix and applying the statistic row by row
    x = np.arange(20, dtype=float) ** 2
    rng = np.random.default_rng(5)
    idx = rng.integers(0, x.size, size=(300, x.size))
    stats = np.array([np.median(x[row]) for row in idx])
    expected = tuple(float(q) for q in np.quantile(stats, [0.025, 0.975]))
    assert bootstrap_ci(x, np.median, n_boot=300, seed=5) == pytest.approx(expected)
    # a statistic without an `axis` argument takes the per-resample path and agrees
    assert bootstrap_ci(x, lambda v: float(np.median(v)), n_boot=300, seed=5) == pytest.approx(expected)
    # small chunks (low memory budget) still give a valid, deterministic interval
    monkeypatch.setattr(metrics, "_MAX_INDEX_ELEMENTS", 7 * x.size)
    c1 = bootstrap_ci(x, np.median, n_boot=300, seed=5)
    assert c1 == bootstrap_ci(x, np.median, n_boot=300, seed=5)
    assert c1[0] <= np.median(x) <= c1[1]


def test_bootstrap_edge_cases():
    assert all(np.isnan(bootstrap_ci([])))
    assert bootstrap_ci([3.0, 3.0, 3.0]) == (3.0, 3.0)
    with pytest.raises(WorkbenchError):
        bootstrap_ci([1.0, 2.0], n_boot=0)
    with pytest.raises(WorkbenchError, match="1-D"):
        bootstrap_ci(np.zeros((3, 3)))


def test_median_ci():
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    lo, hi = median_ci(x, seed=0)
    assert lo <= 3.0 <= hi
    assert hi <= 100.0 and lo >= 1.0
    assert median_ci(x, seed=0) == (lo, hi)


def test_bootstrap_ci_paired_auroc_fast_path_equals_generic():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.3
    s = np.round(rng.normal(size=60) + y, 1)  # rounded so there are ties
    fast = bootstrap_ci_paired(y, s, auroc, n_boot=500, seed=11)
    slow = bootstrap_ci_paired(y, s, lambda t, p: auroc(t, p), n_boot=500, seed=11)
    assert fast == pytest.approx(slow, abs=1e-12)
    point = auroc(y, s)
    assert fast[0] <= point <= fast[1]


def test_bootstrap_ci_paired_skips_single_class_resamples():
    # 1 positive among 20: many resamples miss it and are skipped instead of failing
    y = np.zeros(20, dtype=bool)
    y[0] = True
    s = np.linspace(0, 1, 20)
    s[0] = 2.0  # the positive outranks every negative -> AUROC 1 whenever defined
    assert bootstrap_ci_paired(y, s, auroc, n_boot=200, seed=0) == (1.0, 1.0)
    assert bootstrap_ci_paired(y, s, lambda t, p: auroc(t, p), n_boot=200, seed=0) == (1.0, 1.0)


# ------------------------------------------------------------------------------------------------ AUROC


def test_auroc_with_ties_by_pair_counting():
    y = [1, 1, 0, 0, 1, 0]
    s = [0.9, 0.5, 0.5, 0.2, 0.3, 0.3]
    # positives {0.9, 0.5, 0.3}, negatives {0.5, 0.2, 0.3}; wins count 1, ties 1/2
    # 0.9: beats 0.5, 0.2, 0.3          -> 3
    # 0.5: ties 0.5, beats 0.2, 0.3     -> 2.5
    # 0.3: loses 0.5, beats 0.2, ties 0.3 -> 1.5
    # AUROC = (3 + 2.5 + 1.5) / (3 * 3) = 7/9
    assert auroc(y, s) == pytest.approx(7 / 9)


def test_auroc_properties():
    y = np.array([0, 0, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    assert auroc(y, s) == 1.0
    assert auroc(y, -s) == 0.0
    assert auroc(y, np.zeros(5)) == 0.5  # all tied
    with pytest.raises(WorkbenchError, match="both classes"):
        auroc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(WorkbenchError, match="same length"):
        auroc([0, 1], [0.1, 0.2, 0.3])


def test_rank_average_numpy_fallback_matches():
    v = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    # sorted: 1,1 -> ranks 1,2 avg 1.5; 2 -> 3; 3,3,3 -> ranks 4,5,6 avg 5
    expected = np.array([5.0, 1.5, 5.0, 3.0, 5.0, 1.5])
    np.testing.assert_allclose(metrics._rank_average_numpy(v), expected)
    np.testing.assert_allclose(rank_average(v), expected)
    rng = np.random.default_rng(2)
    w = rng.integers(0, 10, size=500).astype(float)
    stats = pytest.importorskip("scipy.stats")
    np.testing.assert_allclose(metrics._rank_average_numpy(w), stats.rankdata(w))


def test_auroc_without_scipy(monkeypatch):
    monkeypatch.setattr(metrics, "_scipy_rankdata", None)
    assert auroc([1, 1, 0, 0, 1, 0], [0.9, 0.5, 0.5, 0.2, 0.3, 0.3]) == pytest.approx(7 / 9)


def test_auroc_matches_sklearn():
    skm = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    y = rng.random(300) < 0.4
    s = np.round(rng.normal(size=300) + 0.8 * y, 1)
    assert auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s))


def test_auroc_accepts_torch():
    torch = pytest.importorskip("torch")
    y = torch.tensor([0, 0, 1, 1])
    s = torch.tensor([0.1, 0.4, 0.35, 0.8], requires_grad=True)
    # pairs: 0.35>0.1 yes, 0.35>0.4 no, 0.8 beats both -> 3/4
    assert auroc(y, s) == pytest.approx(0.75)


# ------------------------------------------------------------------------------------------------ recall@FPR


def test_recall_at_fpr_small_example():
    neg = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    pos = [0.85, 0.92, 0.97, 0.99, 0.9]
    y = [0] * 10 + [1] * 5
    s = neg + pos
    # fpr = 0.1 -> k = floor(0.1 * 10) = 1 false positive allowed; threshold = 2nd largest negative = 0.9
    # positive iff score > 0.9: 0.92, 0.97, 0.99 -> 3/5 (0.9 ties the threshold and does not count; 0.85 is below)
    assert recall_at_fpr(y, s, fpr=0.1) == pytest.approx(0.6)
    # fpr = 0 -> threshold = largest negative 0.95; positives above: 0.97, 0.99 -> 2/5
    assert recall_at_fpr(y, s, fpr=0.0) == pytest.approx(0.4)
    # fpr = 0.25 -> k = 2; threshold = 3rd largest negative 0.8; positives above: all 5 -> 1.0
    assert recall_at_fpr(y, s, fpr=0.25) == pytest.approx(1.0)
    # fpr = 1 -> k = 10 >= n_neg, threshold = -inf -> every positive counts
    assert recall_at_fpr(y, s, fpr=1.0) == 1.0


def test_recall_at_fpr_respects_bound_with_ties():
    # all negatives tied at 0.5: any threshold below 0.5 gives FPR 1, so at fpr=0.5 the threshold is 0.5
    y = [0, 0, 0, 0, 1, 1]
    s = [0.5, 0.5, 0.5, 0.5, 0.5, 0.7]
    assert recall_at_fpr(y, s, fpr=0.5) == pytest.approx(0.5)  # only 0.7 > 0.5
    with pytest.raises(WorkbenchError):
        recall_at_fpr(y, s, fpr=1.5)


# ------------------------------------------------------------------------------------------------ others


def test_accuracy_and_r2():
    assert accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == pytest.approx(0.5)
    assert accuracy(np.array(["a", "b"]), ["a", "b"]) == 1.0
    # y = [1, 2, 3, 4], pred = [1, 2, 3, 5]: SS_res = 1, mean 2.5, SS_tot = 2.25+0.25+0.25+2.25 = 5 -> R^2 = 0.8
    assert r2_score([1, 2, 3, 4], [1, 2, 3, 5]) == pytest.approx(0.8)
    assert r2_score([1, 2, 3], [1, 2, 3]) == 1.0
    assert np.isnan(r2_score([2, 2, 2], [1, 2, 3]))
    # 2-D: columns 0.8 and 1.0 -> mean 0.9
    t = np.array([[1, 0], [2, 1], [3, 0], [4, 1]], dtype=float)
    p = np.array([[1, 0], [2, 1], [3, 0], [5, 1]], dtype=float)
    assert r2_score(t, p) == pytest.approx(0.9)
    with pytest.raises(WorkbenchError):
        accuracy([1, 2], [1])


def test_normalised_effect():
    # (patched - corrupt) / (clean - corrupt): (1.5-1)/(3-1) = 0.25, (3-1)/(3-1) = 1, clean == corrupt -> nan
    out = normalised_effect([1.5, 3.0, 2.0], [3.0, 3.0, 2.0], [1.0, 1.0, 2.0])
    np.testing.assert_allclose(out, [0.25, 1.0, np.nan])
    assert normalised_effect(0.0, 2.0, 0.0) == 0.0
    assert isinstance(normalised_effect(1.0, 2.0, 0.0), float)
    assert normalised_effect(np.array([1.0, 2.0]), 2.0, 0.0).tolist() == [0.5, 1.0]  # broadcasting


@pytest.mark.parametrize("k,n", [(0, 5), (1, 5), (3, 7), (20, 20), (13, 200)])
def test_ci_contains_estimate(k, n):
    r = rate(flags(k, n))
    assert r["ci95"][0] <= r["rate"] <= r["ci95"][1]
    d = diff_of_rates_ci(flags(k, n), flags(n - k, n))
    assert d["ci95"][0] <= d["diff"] <= d["ci95"][1]
    assert -1.0 <= d["ci95"][0] and d["ci95"][1] <= 1.0
