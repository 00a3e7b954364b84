"""Statistics behind every reported effect: rates with intervals, differences of rates, bootstrap CIs, AUROC.

Why one module: every number the workbench reports (probe AUROC, steering success rate, patching effect) should carry
an interval computed the same way, so results from different experiments are comparable and a reviewer can check the
method in one place. Only numpy is required (scipy's `rankdata` is used when importable); inputs may be numpy arrays,
lists or torch tensors (converted on the CPU).

Conventions:
- Proportions use the Wilson score interval (good coverage at small n and near 0 or 1, unlike the Wald interval).
- Differences of independent proportions use Newcombe's hybrid score interval (method 10, Newcombe 1998).
- Paired differences and arbitrary statistics use the percentile bootstrap with `np.random.default_rng(seed)`, so a
  given seed always gives the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError

try:  # scipy is optional: tie-averaged ranks are also implemented below
    from scipy.stats import rankdata as _scipy_rankdata
except ImportError:  # pragma: no cover - depends on the environment
    _scipy_rankdata = None

__all__ = [
    "Z95",
    "accuracy",
    "auroc",
    "bootstrap_ci",
    "bootstrap_ci_paired",
    "diff_of_rates_ci",
    "median_ci",
    "normalised_effect",
    "paired_diff_ci",
    "r2_score",
    "rank_average",
    "rate",
    "recall_at_fpr",
    "wilson_ci",
]

Z95 = 1.959964  # two-sided 95% normal quantile

# Bootstrap index matrices are drawn in chunks of at most this many elements (int64: 8 bytes each -> 32 MiB).
_MAX_INDEX_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------------- conversion


def _np(x: Any) -> np.ndarray:
    """Any array-like (including a torch tensor that requires grad or lives on a GPU) as a numpy array."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _vector(x: Any, name: str) -> np.ndarray:
    """A 1-D float array; a WorkbenchError for other shapes so mistakes are not silently flattened."""
    arr = _np(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise WorkbenchError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    try:
        return arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"{name} must be numeric, got dtype {arr.dtype}") from exc


def _flags(x: Any, name: str = "flags") -> np.ndarray:
    """A 1-D boolean array from bools or 0/1 numbers; anything else is an error rather than a silent cast."""
    arr = _np(x)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise WorkbenchError(f"{name} must be 1-D, got shape {tuple(arr.shape)}")
    if arr.dtype == np.bool_:
        return arr
    try:
        num = arr.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise WorkbenchError(f"{name} must be boolean or 0/1, got dtype {arr.dtype}") from exc
    bad = ~((num == 0) | (num == 1))
    if bad.any():
        raise WorkbenchError(f"{name} must be boolean or 0/1, got value {num[bad][0]!r}")
    return num == 1


def _same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if len(a) != len(b):
        raise WorkbenchError(f"{names} must have the same length, got {len(a)} and {len(b)}")


# --------------------------------------------------------------------------------------------------- proportions


def wilson_ci(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for `successes`/`n`; (0.0, 1.0) when n == 0 (nothing is known).

    Why Wilson: it never leaves [0, 1] and keeps close to nominal coverage for small n and extreme rates, where the
    Wald interval collapses to zero width (e.g. 0/20 successes).
    """
    successes, n = int(successes), int(n)
    if n < 0 or successes < 0 or successes > n:
        raise WorkbenchError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # clamp rounding noise at the boundaries (k = 0 or k = n give exactly 0 or 1 analytically)
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return float(lo), float(hi)


def rate(flags: Any) -> dict:
    """`{"rate", "ci95", "n"}` for a boolean array: the success rate with its Wilson 95% interval.

    An empty array gives rate nan and ci95 [0.0, 1.0], so empty subsets show up in reports instead of crashing them.
    """
    f = _flags(flags)
    n = int(f.size)
    k = int(f.sum())
    lo, hi = wilson_ci(k, n)
    return {"rate": k / n if n else float("nan"), "ci95": [lo, hi], "n": n}


def rates_table(flags: dict[str, Any]) -> dict:
    """`{"rates": {key: rate}, "ci95": {key: [lo, hi]}, "n": N}` for named boolean arrays of one length N (Wilson 95%
    intervals, as `rate`): the shape every rollout's records report their goal rates in."""
    out: dict = {"rates": {}, "ci95": {}, "n": int(_flags(next(iter(flags.values()))).size) if flags else 0}
    for key, values in flags.items():
        r = rate(values)
        out["rates"][key] = r["rate"]
        out["ci95"][key] = r["ci95"]
    return out


def diff_of_rates_ci(a_flags: Any, b_flags: Any, z: float = Z95) -> dict:
    """Difference of two independent rates, b - a, with Newcombe's hybrid score interval (method 10, 1998).

    Why Newcombe: it combines the two Wilson intervals, so it inherits their good coverage at small n and near 0/1,
    where the Wald interval for a difference is badly anti-conservative. For the same items measured under two
    conditions use `paired_diff_ci` instead (the samples are not independent).

    Returns `{"diff", "ci95", "a", "b", "method"}` with `a` and `b` the `rate` dicts of the two samples. If either
    sample is empty the difference is nan and the interval is [-1.0, 1.0].
    """
    fa, fb = _flags(a_flags, "a_flags"), _flags(b_flags, "b_flags")
    ra, rb = rate(fa), rate(fb)
    out = {"diff": float("nan"), "ci95": [-1.0, 1.0], "a": ra, "b": rb, "method": "newcombe-hybrid-score"}
    if fa.size == 0 or fb.size == 0:
        return out
    pa, pb = ra["rate"], rb["rate"]
    la, ua = wilson_ci(int(fa.sum()), fa.size, z)
    lb, ub = wilson_ci(int(fb.sum()), fb.size, z)
    d = pb - pa
    lo = d - math.sqrt((pb - lb) ** 2 + (ua - pa) ** 2)
    hi = d + math.sqrt((ub - pb) ** 2 + (pa - la) ** 2)
    out["diff"] = float(d)
    out["ci95"] = [float(max(-1.0, lo)), float(min(1.0, hi))]
    return out


def paired_diff_ci(a_flags: Any, b_flags: Any, seed: int = 0, n_boot: int = 2000, alpha: float = 0.05) -> dict:
    """Mean of b - a over paired items (same levels/prompts under two conditions), with a bootstrap percentile CI.

    Why a paired bootstrap: pairing removes between-item variance, so the interval is much tighter than treating the
    two conditions as independent samples. Pairs are resampled with `np.random.default_rng(seed)`. Accepts boolean
    flags or real-valued scores. Returns `{"diff", "ci95", "n", "method"}`; empty input gives nan and [nan, nan].
    """
    a = _vector(a_flags, "a_flags")
    b = _vector(b_flags, "b_flags")
    _same_length(a, b, "paired samples a and b")
    d = b - a
    diff = float(d.mean()) if d.size else float("nan")
    lo, hi = bootstrap_ci(d, np.mean, n_boot=n_boot, seed=seed, alpha=alpha)
    return {"diff": diff, "ci95": [lo, hi], "n": int(d.size), "method": "paired-bootstrap-percentile"}


# --------------------------------------------------------------------------------------------------- bootstrap


def _index_chunks(rng: np.random.Generator, n: int, n_boot: int) -> Iterator[np.ndarray]:
    """Bootstrap index matrices of shape (rows, n), `n_boot` rows in all, as few draws as memory allows."""
    rows = max(1, _MAX_INDEX_ELEMENTS // max(n, 1))
    done = 0
    while done < n_boot:
        k = min(rows, n_boot - done)
        yield rng.integers(0, n, size=(k, n))
        done += k


def _percentiles(stats: np.ndarray, alpha: float) -> tuple[float, float]:
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _check_boot_args(n_boot: int, alpha: float) -> None:
    if int(n_boot) < 1:
        raise WorkbenchError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise WorkbenchError(f"alpha must be in (0, 1), got {alpha}")


def bootstrap_ci(
    values: Any,
    statistic: Callable[..., Any] = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of `statistic(values)`; deterministic for a given seed.

    Why vectorised: reports compute hundreds of intervals, so the index matrix is drawn at once (chunked only when it
    would exceed ~32 MiB) and `statistic(sample, axis=1)` is tried first; statistics without an `axis` argument are
    applied resample by resample. Non-finite resampled statistics are dropped. Empty input gives (nan, nan).
    """
    _check_boot_args(n_boot, alpha)
    x = _vector(values, "values")
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    parts = []
    for idx in _index_chunks(rng, n, int(n_boot)):
        sample = x[idx]
        try:
            s = np.asarray(statistic(sample, axis=1), dtype=np.float64)
            if s.shape != (idx.shape[0],):
                raise TypeError("statistic did not reduce along axis 1")
        except TypeError:
            s = np.array([float(statistic(row)) for row in sample], dtype=np.float64)
        parts.append(s)
    return _percentiles(np.concatenate(parts), alpha)


def _auroc_resampled(y: np.ndarray, s: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """AUROC of every resample in `idx` (rows of indices) at once; nan where a resample has a single class.

    Items are sorted by score once; a resample is then just a multiplicity per item. With neg_below(i) = negative
    draws scoring strictly below item i and neg_tied(i) = negative draws tied with it, per resample:
    AUROC = sum over positive items of mult(i) * (neg_below(i) + 0.5 * neg_tied(i)) / (n_pos * n_neg),
    which is the Mann-Whitney U with ties counted one half, exactly as `auroc` computes it.
    """
    n = y.size
    order = np.argsort(s, kind="mergesort")
    where_sorted = np.empty(n, dtype=np.int64)
    where_sorted[order] = np.arange(n)
    ss, ys = s[order], y[order]
    new_group = np.r_[True, ss[1:] != ss[:-1]]
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(n), 0))  # first sorted position of i's group
    group_end = np.r_[np.flatnonzero(new_group)[1:], n][np.cumsum(new_group) - 1]  # one past its last position
    pos_cols = np.flatnonzero(ys)

    rows = idx.shape[0]
    flat = (where_sorted[idx] + (np.arange(rows) * n)[:, None]).ravel()
    mult = np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)  # draws of each sorted item
    neg_cum = np.zeros((rows, n + 1))
    np.cumsum(np.where(ys, 0.0, mult), axis=1, out=neg_cum[:, 1:])  # neg_cum[:, a] = negative draws before a
    below = neg_cum[:, group_start[pos_cols]]
    tied = neg_cum[:, group_end[pos_cols]] - below
    numer = (mult[:, pos_cols] * (below + 0.5 * tied)).sum(axis=1)
    n_pos = mult[:, pos_cols].sum(axis=1)
    n_neg = idx.shape[1] - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numer / (n_pos * n_neg)
    out[(n_pos == 0) | (n_neg == 0)] = np.nan
    return out


def bootstrap_ci_paired(
    y_true: Any,
    y_score: Any,
    metric: Callable[[np.ndarray, np.ndarray], float],
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric(y_true, y_score)`, resampling rows of both arrays jointly.

    Why jointly: metrics such as AUROC depend on which label goes with which score, so labels and scores must be
    drawn as pairs. Resamples where the metric is undefined (it raises, e.g. a single class, or returns nan) are
    skipped. `metric=auroc` takes an exact vectorised path that gives the same intervals as calling it per resample.
    """
    _check_boot_args(n_boot, alpha)
    yt = _np(y_true)
    ys = _np(y_score)
    if yt.ndim == 0 or ys.ndim == 0:
        raise WorkbenchError("y_true and y_score must be arrays")
    _same_length(yt, ys, "y_true and y_score")
    n = len(yt)
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    fast = metric is auroc
    if fast:
        y_bool = _flags(yt, "y_true")
        s = _vector(ys, "y_score")
        if np.isnan(s).any():
            raise WorkbenchError("y_score contains nan")
    parts = []
    for idx in _index_chunks(rng, n, int(n_boot)):
        if fast:
            parts.append(_auroc_resampled(y_bool, s, idx))
            continue
        stats = np.empty(idx.shape[0], dtype=np.float64)
        for r, row in enumerate(idx):
            try:
                stats[r] = float(metric(yt[row], ys[row]))
            except (WorkbenchError, ValueError, ZeroDivisionError, FloatingPointError):
                stats[r] = np.nan
        parts.append(stats)
    return _percentiles(np.concatenate(parts), alpha)


def median_ci(values: Any, seed: int = 0, n_boot: int = 2000, alpha: float = 0.05) -> tuple[float, float]:
    """Bootstrap percentile interval of the median: robust summary for skewed per-item effects."""
    return bootstrap_ci(values, np.median, n_boot=n_boot, seed=seed, alpha=alpha)


# --------------------------------------------------------------------------------------------------- classification


def rank_average(x: Any) -> np.ndarray:
    """1-based ranks with ties given the average of the ranks they span (like scipy.stats.rankdata 'average')."""
    v = _vector(x, "x")
    if _scipy_rankdata is not None:
        return np.asarray(_scipy_rankdata(v, method="average"), dtype=np.float64)
    return _rank_average_numpy(v)


def _rank_average_numpy(v: np.ndarray) -> np.ndarray:
    n = v.size
    if n == 0:
        return np.empty(0, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])  # first sorted position of each tie group
    ends = np.r_[starts[1:], n]  # one past the last position
    avg = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _binary_inputs(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _flags(y_true, "y_true")
    s = _vector(y_score, "y_score")
    _same_length(y, s, "y_true and y_score")
    if np.isnan(s).any():
        raise WorkbenchError("y_score contains nan")
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "positive" if n_pos else "negative"
        raise WorkbenchError(f"y_true has only {only} examples (n={y.size}); the metric needs both classes")
    return y, s


def auroc(y_true: Any, y_score: Any) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic with tie-averaged ranks.

    Equals the probability that a random positive scores above a random negative, ties counting one half. Raises
    WorkbenchError when only one class is present (the AUROC is undefined, not 0.5).
    """
    y, s = _binary_inputs(y_true, y_score)
    ranks = rank_average(s)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def recall_at_fpr(y_true: Any, y_score: Any, fpr: float = 0.01) -> float:
    """True-positive rate at the smallest threshold whose false-positive rate on the negatives is <= `fpr`.

    Tie rule: an example is called positive iff its score is strictly greater than the threshold t. The FPR at t,
    #(negatives > t) / n_neg, only falls as t rises, so the smallest admissible t is the (k+1)-th largest negative
    score with k = floor(fpr * n_neg) (t = -inf when k >= n_neg). Positives tied with that negative score are NOT
    counted as recalled, which keeps the FPR bound exact even with many tied scores.
    """
    if not 0.0 <= fpr <= 1.0:
        raise WorkbenchError(f"fpr must be in [0, 1], got {fpr}")
    y, s = _binary_inputs(y_true, y_score)
    neg_desc = np.sort(s[~y])[::-1]
    k = math.floor(fpr * neg_desc.size + 1e-9)  # tolerance so e.g. 0.1 * 10 is 1, not 0.9999
    threshold = neg_desc[k] if k < neg_desc.size else -np.inf
    return float(np.mean(s[y] > threshold))


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of exact matches between labels and predictions (any dtype that compares with ==)."""
    t, p = _np(y_true).reshape(-1), _np(y_pred).reshape(-1)
    _same_length(t, p, "y_true and y_pred")
    if t.size == 0:
        raise WorkbenchError("accuracy of an empty array is undefined")
    return float(np.mean(t == p))


def r2_score(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination 1 - SS_res / SS_tot; nan when y_true is constant (SS_tot = 0).

    For 2-D targets (n, d) it is computed per column and averaged over columns with a defined value (sklearn's
    'uniform_average'), so one constant column does not poison a probe's score.
    """
    t = _np(y_true).astype(np.float64)
    p = _np(y_pred).astype(np.float64)
    if t.shape != p.shape:
        raise WorkbenchError(f"y_true and y_pred must have the same shape, got {t.shape} and {p.shape}")
    if t.ndim not in (1, 2) or t.shape[0] == 0:
        raise WorkbenchError(f"r2_score needs a non-empty 1-D or 2-D array, got shape {t.shape}")
    ss_res = ((t - p) ** 2).sum(axis=0)
    ss_tot = ((t - t.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0), np.nan)
    r2 = np.atleast_1d(r2)
    finite = r2[np.isfinite(r2)]
    return float(finite.mean()) if finite.size else float("nan")


# --------------------------------------------------------------------------------------------------- patching


def normalised_effect(patched: Any, clean: Any, corrupt: Any) -> np.ndarray | float:
    """(patched - corrupt) / (clean - corrupt) elementwise: 0 = no recovery, 1 = full recovery of the clean metric.

    Why normalise: raw patching effects are in logit or probability units that differ across prompts and levels;
    this fraction is comparable. Where clean == corrupt the effect is undefined and returned as nan. Inputs
    broadcast; scalar inputs give a float.
    """
    pa = _np(patched).astype(np.float64)
    cl = _np(clean).astype(np.float64)
    co = _np(corrupt).astype(np.float64)
    denom = cl - co
    safe = np.where(denom == 0, 1.0, denom)
    out = np.where(denom == 0, np.nan, (pa - co) / safe)
    return float(out) if out.ndim == 0 else out
