"""Batched logistic probes (`workbench.probes.fit_logistic`) against scikit-learn fitting the same probes one by one.

What is compared, and why: a probe sweep fits one logistic probe per (layer, position); the full size here is
10 layers x 10 positions = 100 probes, each on its own activations X[p] (N = 50_000, d = 256) with a planted
direction. Ours fits all 100 with one batched L-BFGS in float64; the peer is sklearn's LogisticRegression (lbfgs)
called once per probe, the obvious alternative. Both see the same standardised data (standardised once, up front,
outside the timed region), the same regularisation (C = 1 / (l2 * N), see `fit_logistic`), the same iteration
limit and the same stopping rule (max |gradient| of the same mean-loss objective <= tol: sklearn's lbfgs `tol` is
scipy's pgtol on that objective, our `tol` the same test), and run on the same number of threads
(torch.set_num_threads and threadpoolctl, default 1), so the ratio measures batching rather than thread counts.
Both are warmed up first on a tiny fit (torch imports its compiler stack the first time an optimiser is built).
Our time includes computing each probe's mean and std (one pass over X); sklearn's has no such step.
Correctness check: the held-out AUROC of every probe must agree within 0.01 between the two; the script exits 1 if
it does not.

What to expect: both are memory-bound (float64 matrix-vector products). When one probe's data fits in the
CPU's last-level cache (the --quick size: 10 MB per probe) sklearn's one-at-a-time loop re-reads it from cache and
can win (0.5-0.7x measured on a loaded 2-core EPYC). Once a probe's data does not fit (the full size: 100 MB per
probe) the batched fit, which reads each block of activations once per evaluation for both the scores and the
gradient, should be ahead (1.3x measured at N = 50_000 with 3 probes on the same machine; the full size was not run
there). Batching pays most for many small probes (per-fit overhead) and on a GPU.

Memory: the full size holds P x N x d float64 values = 10.2 GB of training activations (plus 20% for the held-out
set); --quick (N = 5_000, 10 probes) needs ~120 MB. Timings are single runs: on a loaded machine read the ratio,
not the seconds.

Usage: python benchmarks/bench_probes.py [--quick] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings

import numpy as np
import torch

from workbench.metrics import auroc
from workbench.probes import fit_logistic

AUROC_TOLERANCE = 0.01


def _make_data(n: int, d: int, p: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(p, n, d) train and (p, n // 5, d) test activations, standardised with the train mean/std (ddof=0), and
    their 0/1 labels. Each probe has its own planted unit direction, feature scales and offsets; the separation
    (0.75 along the direction, per class) puts the AUROC near 0.85, away from the ceiling where any fit agrees."""
    rng = np.random.default_rng(seed)
    n_test = max(n // 5, 100)
    X = np.empty((p, n, d))
    Xt = np.empty((p, n_test, d))
    y = rng.integers(0, 2, size=(p, n))
    yt = rng.integers(0, 2, size=(p, n_test))
    for q in range(p):
        u = rng.standard_normal(d)
        u /= np.linalg.norm(u)
        scale, offset = rng.uniform(0.5, 2.0, d), rng.uniform(-1.0, 1.0, d)
        for arr, lab in ((X[q], y[q]), (Xt[q], yt[q])):
            arr[:] = rng.standard_normal(arr.shape)
            arr += np.outer(0.75 * (2 * lab - 1), u)
            arr *= scale
            arr += offset
        mean, std = X[q].mean(axis=0), X[q].std(axis=0)
        X[q] -= mean
        X[q] /= std
        Xt[q] -= mean
        Xt[q] /= std
    return X, y, Xt, yt


def bench_logistic_vs_sklearn(
    n: int = 50_000,
    d: int = 256,
    p: int = 100,
    quick: bool = False,
    l2: float = 1e-2,
    max_iter: int = 100,
    threads: int = 1,
    seed: int = 0,
    tol: float = 1e-6,
) -> dict:
    """Time P logistic probes: ours batched vs sklearn one at a time; returns timings, ratio and AUROC agreement.

    quick=True uses n = 5_000 and p = 10. Keys: n, d, p, threads, time_ours_s, time_sklearn_s, speedup
    (sklearn time / ours), max_abs_auroc_diff (held-out, over probes), mean AUROC of each, ours_n_iter,
    sklearn_max_n_iter, ok (max_abs_auroc_diff <= 0.01).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if quick:
        n, p = 5_000, 10
    X, y, Xt, yt = _make_data(n, d, p, seed)
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit_logistic(torch.from_numpy(X[0, :200]), torch.from_numpy(y[0, :200]))  # warm-up, both sides
            LogisticRegression().fit(X[0, :200], y[0, :200])
            start = time.perf_counter()
            probe = fit_logistic(torch.from_numpy(X), torch.from_numpy(y), l2=l2, max_iter=max_iter, tol=tol)
            time_ours = time.perf_counter() - start

            sk_scores, sk_iters = [], []
            start = time.perf_counter()
            for q in range(p):
                clf = LogisticRegression(C=1.0 / (l2 * n), solver="lbfgs", max_iter=max_iter, tol=tol).fit(X[q], y[q])
                sk_scores.append(clf.decision_function(Xt[q]))  # prediction is cheap next to the fit
                sk_iters.append(int(np.max(clf.n_iter_)))
            time_sklearn = time.perf_counter() - start
        ours_scores = probe.scores(torch.from_numpy(Xt)).numpy()
    finally:
        torch.set_num_threads(old_threads)
    auc_ours = np.array([auroc(yt[q], ours_scores[q]) for q in range(p)])
    auc_sk = np.array([auroc(yt[q], sk_scores[q]) for q in range(p)])
    diff = float(np.max(np.abs(auc_ours - auc_sk)))
    return {
        "n": n,
        "d": d,
        "p": p,
        "threads": threads,
        "tol": tol,
        "time_ours_s": time_ours,
        "time_sklearn_s": time_sklearn,
        "speedup": time_sklearn / time_ours,
        "max_abs_auroc_diff": diff,
        "auroc_ours_mean": float(auc_ours.mean()),
        "auroc_sklearn_mean": float(auc_sk.mean()),
        "ours_n_iter": probe.meta["n_iter"],
        "sklearn_max_n_iter": max(sk_iters),
        "ok": diff <= AUROC_TOLERANCE,
    }


def _print_table(r: dict) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.platform()} | cpus {os.cpu_count()} | threads {r['threads']} | load(1m) {load:.2f} | "
        f"torch {torch.__version__}"
    )
    print(
        f"{r['p']} logistic probes, N = {r['n']}, d = {r['d']}, float64, same standardised data, C = 1/(l2 N), "
        f"tol {r['tol']:g}"
    )
    rows = [
        ("ours: fit_logistic, one batched L-BFGS", f"{r['time_ours_s']:.2f} s", f"{r['ours_n_iter']} iters (joint)"),
        (
            f"sklearn LogisticRegression(lbfgs) x {r['p']}",
            f"{r['time_sklearn_s']:.2f} s",
            f"<= {r['sklearn_max_n_iter']} iters each",
        ),
        ("speedup (sklearn / ours)", f"{r['speedup']:.2f}x", ""),
        (
            "max |AUROC ours - sklearn| (held-out)",
            f"{r['max_abs_auroc_diff']:.2e}",
            f"{'pass' if r['ok'] else 'FAIL'} (<= {AUROC_TOLERANCE}); mean AUROC {r['auroc_ours_mean']:.4f}",
        ),
    ]
    width = max(len(a) for a, _, _ in rows)
    for a, b, c in rows:
        print(f"  {a:<{width}}  {b:>10}  {c}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 5_000, 10 probes (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both torch and sklearn's BLAS")
    args = parser.parse_args(argv)
    result = bench_logistic_vs_sklearn(quick=args.quick, threads=args.threads)
    _print_table(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
