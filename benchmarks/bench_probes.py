"""Logistic probes (`workbench.probes.fit_logistic`) against scikit-learn fitting the same probes one at a time.

What is compared, and why: a probe study fits many logistic probes, in one of two shapes:
- case (a), many label sets on shared activations: one design matrix X (N, d), P label sets (e.g. every
  concept read from one layer, or P control tasks);
- case (b), many layers/positions: P design matrices (P, N, d), one label set each (a layer x position sweep).
The peer is scikit-learn's `LogisticRegression(solver="lbfgs")`, one fit per probe (the obvious alternative).
Both sides see the same standardised activations (standardised once, up front; ours recomputes each probe's
mean and std inside the timed region, sklearn has no such step), the same regularisation (C = 1 / (l2 * N), see
`fit_logistic`), the same iteration limit and the same stopping rule (max |gradient| of the same mean-loss
objective <= tol), on the same number of threads (torch.set_num_threads and threadpoolctl). Activations are
float32, as a model stores them; ours reads them as float32, sklearn's lbfgs needs float64, so it gets a float64
copy made outside its timed region (its best case: a user passing float32 pays for that copy too).

Two kinds of activations, because they favour different solvers:
- "white": independent features, each probe with its own planted unit direction, feature scales and offsets
  (what this benchmark used before; L-BFGS needs ~7 iterations, so sklearn is memory-bound on ~15 passes);
- "correlated": features mixed by a random rotation with a 1/k variance spectrum (condition number d, like a
  residual stream), plus a planted direction per probe. Plain L-BFGS needs ~50 iterations; ours starts from
  the (shrunk) Newton matrix at w = 0 (see `workbench.logistic`) and needs ~10.
The separation (0.75 white, 0.05 correlated, along each probe's unit direction; in case (a) the other probes'
directions add noise) keeps held-out AUROC near 0.84 (white) and 0.77 (correlated), away from the ceiling where
any fit agrees. Correctness: the held-out AUROC of every probe must agree within 0.01 (it agrees to ~1e-5); the
script exits 1 if it does not.

What bounds each case: (a) is compute-bound (one matrix product per pass serves every probe), so the ratio grows
with P and with sklearn's iteration count. (b) is bound by the rate of the matrix-vector products, not by DRAM:
each probe reads its own matrix once for its mean and std, copies it transposed and standardised (ATen's
transposing copy, ~1-3 GB/s), then makes ~8 passes (white) or ~11 (correlated) over that cache-resident
column-major copy, where MKL's GEMVs run at ~15-25 GB/s (~3-7 GB/s on the row-major original); sklearn makes
about twice as many products per iteration on a float64 copy (~8 iterations white, ~60 correlated). The run
prints the machine's rates for the same matrix (plain read from DRAM and from cache, the products in both layouts,
the transposing copy) and one probe's time split into those steps, so the bound is visible next to the ratio.

Timing: `rounds` interleaved rounds (ours, sklearn, sklearn, ours, ...) after one untimed warm-up fit each; the
median per call is reported. Achieved GFLOP/s counts the products with the design matrices that our fit did
(`meta["flops"]`: 4 N d per probe per pass, 2 m d^2 per preconditioner): the bound is memory bandwidth in case
(b) and the machine's matmul peak in case (a) (`benchmarks/run.py` measures that peak in the same run).

Memory: case (b) holds P x N x d float32 values (2 GB at the default 100 x 20,000 x 256) plus a float64 copy
of one probe's matrix at a time for sklearn (made before that fit's clock starts). Usage:

    python benchmarks/bench_probes.py [--quick] [--threads T] [--p P] [--n N] [--d D] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import warnings

import numpy as np
import torch

from workbench import logistic
from workbench.metrics import auroc
from workbench.probes import fit_logistic

AUROC_TOLERANCE = 0.01
CASES = ("shared", "per_probe")
KINDS = ("white", "correlated")


def make_data(
    kind: str, case: str, n: int, d: int, p: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Standardised float32 train X, (N, d) for case "shared" else (P, N, d), labels (P, N), test Xt and labels.

    Train and test come from the same distribution; both are standardised with the train mean and std."""
    rng = np.random.default_rng(seed)
    n_test = max(n // 5, 200)
    mats = 1 if case == "shared" else p
    y = rng.integers(0, 2, size=(p, n))
    yt = rng.integers(0, 2, size=(p, n_test))
    mix = None
    if kind == "correlated":
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        mix = (q * np.sqrt(1.0 / np.arange(1, d + 1))).T.astype(np.float32)  # rows: scaled principal axes
    X = np.empty((mats, n, d), dtype=np.float32)
    Xt = np.empty((mats, n_test, d), dtype=np.float32)
    sep = 0.75 if kind == "white" else 0.05
    for m in range(mats):
        u = rng.standard_normal((p if case == "shared" else 1, d)).astype(np.float32)
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        scale, offset = rng.uniform(0.5, 2.0, d).astype(np.float32), rng.uniform(-1, 1, d).astype(np.float32)
        for arr, lab in ((X[m], y), (Xt[m], yt)):
            g = rng.standard_normal(arr.shape, dtype=np.float32)
            arr[:] = g if mix is None else g @ mix
            labs = lab if case == "shared" else lab[m : m + 1]
            arr += sep * (2 * labs.T.astype(np.float32) - 1) @ u
            arr *= scale
            arr += offset
        mean, std = X[m].mean(axis=0, dtype=np.float64), X[m].std(axis=0, dtype=np.float64)
        for arr in (X[m], Xt[m]):
            arr -= mean.astype(np.float32)
            arr /= std.astype(np.float32)
    if case == "shared":
        return X[0], y, Xt[0], yt
    return X, y, Xt, yt


def bench_logistic_vs_sklearn(
    case: str = "per_probe",
    kind: str = "white",
    n: int = 20_000,
    d: int = 256,
    p: int = 100,
    quick: bool = False,
    l2: float = 1e-2,
    max_iter: int = 100,
    threads: int = 1,
    seed: int = 0,
    tol: float = 1e-6,
    rounds: int = 3,
) -> dict:
    """Time P logistic probes, ours vs sklearn one at a time, interleaved; returns timings, ratio, AUROC agreement.

    quick=True uses n = 5_000, p = 10 and 2 rounds. Keys: case, kind, n, d, p, threads, time_ours_s,
    time_sklearn_s (medians), speedup (sklearn / ours), gflops_ours, flops_ours, passes_ours,
    max_abs_auroc_diff (held-out, over probes), mean AUROC of each, ours_n_iter (max over probes),
    sklearn_max_n_iter, ok (max_abs_auroc_diff <= 0.01).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if case not in CASES or kind not in KINDS:
        raise ValueError(f"case must be one of {CASES} and kind one of {KINDS}")
    if quick:
        n, p, rounds = 5_000, 10, 2
    X, y, Xt, yt = make_data(kind, case, n, d, p, seed)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    C = 1.0 / (l2 * n)
    shared64 = X.astype(np.float64) if case == "shared" else None

    def ours():
        start = time.perf_counter()
        probe = fit_logistic(X_t, y_t, l2=l2, max_iter=max_iter, tol=tol)
        return probe, time.perf_counter() - start

    def sklearn():
        """Fit each probe; the float64 copy of a per-probe matrix is made before its fit's clock starts."""
        fits, elapsed = [], 0.0
        for q in range(p):
            xq = shared64 if case == "shared" else X[q].astype(np.float64)
            start = time.perf_counter()
            fits.append(LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol).fit(xq, y[q]))
            elapsed += time.perf_counter() - start
        return fits, elapsed

    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {"ours": [], "sklearn": []}
    try:
        with threadpool_limits(limits=threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fit_logistic(X_t[..., :300, :], y_t[:, :300])  # warm-up, both sides
            LogisticRegression().fit(X[..., :300, :].reshape(-1, d)[:300].astype(np.float64), y[0, :300])
            order = [("ours", ours), ("sklearn", sklearn)]
            for r in range(rounds):
                for name, fn in order if r % 2 == 0 else order[::-1]:
                    result, elapsed = fn()
                    times[name].append(elapsed)
                    if name == "ours":
                        probe = result
                    else:
                        fits = result
        ours_scores = probe.scores(torch.from_numpy(Xt)).numpy()
    finally:
        torch.set_num_threads(old_threads)
    sk_scores = [fits[q].decision_function(Xt if case == "shared" else Xt[q]) for q in range(p)]
    auc_ours = np.array([auroc(yt[q], ours_scores[q]) for q in range(p)])
    auc_sk = np.array([auroc(yt[q], sk_scores[q]) for q in range(p)])
    diff = float(np.max(np.abs(auc_ours - auc_sk)))
    t_ours, t_sk = statistics.median(times["ours"]), statistics.median(times["sklearn"])
    matrix = n * d * 4  # bytes of one float32 design matrix
    if case == "per_probe":  # every probe reads its own matrix: mean/std, the staged copy (read + write), passes
        staged = 2 if (X_t.device.type == "cpu" and getattr(logistic, "_STAGE", False)) else 0
        bytes_ours = (probe.meta["reads"] + p * (1 + staged)) * matrix
    else:  # one matrix: mean/std, then one read per pass serving every probe still running
        bytes_ours = (probe.meta["passes"] + 1) * matrix
    sk_evals = sum(int(np.max(f.n_iter_)) + 1 for f in fits)  # at least one loss+gradient per iteration
    bytes_sk = 2 * sk_evals * 2 * matrix  # float64 (twice the bytes), two products per evaluation
    extra = {}
    with threadpool_limits(limits=threads):
        torch.set_num_threads(threads)
        try:
            extra["memory_gbs"] = memory_limits(X_t)
            if case == "per_probe":
                extra["profile_ms"] = per_probe_profile(X, y, l2=l2, tol=tol)
        finally:
            torch.set_num_threads(old_threads)
    return {
        **extra,
        "gbs_ours": bytes_ours / t_ours / 1e9,
        "gbs_sklearn_lower_bound": bytes_sk / t_sk / 1e9,
        "case": case,
        "kind": kind,
        "n": n,
        "d": d,
        "p": p,
        "threads": threads,
        "tol": tol,
        "rounds": rounds,
        "time_ours_s": t_ours,
        "time_sklearn_s": t_sk,
        "times_ours_s": times["ours"],
        "times_sklearn_s": times["sklearn"],
        "speedup": t_sk / t_ours,
        "flops_ours": probe.meta["flops"],
        "gflops_ours": probe.meta["flops"] / t_ours / 1e9,
        "passes_ours": probe.meta["passes"],
        "max_abs_auroc_diff": diff,
        "auroc_ours_mean": float(auc_ours.mean()),
        "auroc_sklearn_mean": float(auc_sk.mean()),
        "ours_n_iter": probe.meta["n_iter"],
        "ours_median_n_iter": float(np.median(probe.meta["n_iter_each"])),
        "sklearn_max_n_iter": max(int(np.max(f.n_iter_)) for f in fits),
        "sklearn_median_n_iter": float(np.median([int(np.max(f.n_iter_)) for f in fits])),
        "ok": diff <= AUROC_TOLERANCE,
    }


def memory_limits(X: torch.Tensor, reps: int = 5) -> dict:
    """What this machine's memory system allows for one probe's float32 matrix, measured now (same process and
    threads as the fits): GB/s of a plain read (sum) streamed from DRAM (a different matrix each time, as the
    sweep does) and from cache (the same ~20 MB matrix again), of the matrix-vector products a solver needs
    (scores X v and gradient r X) on the row-major matrix and on a column-major copy, and of the transposing
    copy that makes that copy. Medians over `reps`."""
    x3 = X if X.ndim == 3 else X[None]
    p, n, d = x3.shape
    one = x3[0]
    col = one.T.contiguous().T  # (N, d) column-major
    v, r = torch.randn(d), torch.randn(n)
    buf = torch.empty(d, n)
    nbytes = one.numel() * one.element_size()
    order = iter(range(1_000_000))

    def dram():
        x3[next(order) % p].sum()

    kernels = {
        "read, from DRAM (sum)": dram,
        "read, cache-resident (sum)": lambda: one.sum(),
        "X v, row-major": lambda: one @ v,
        "r X, row-major": lambda: r @ one,
        "X v, column-major": lambda: col @ v,
        "r X, column-major": lambda: r @ col,
        "transposing copy (read)": lambda: buf.copy_(one.T),
    }
    out = {}
    for name, fn in kernels.items():
        fn()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        out[name] = nbytes / statistics.median(times) / 1e9
    return out


def per_probe_profile(X: np.ndarray, y: np.ndarray, l2: float = 1e-2, tol: float = 1e-6, probes: int = 5) -> dict:
    """Where one probe's time goes in case (b): the first `probes` probes fitted one at a time through the
    solver's own steps, each step timed (ms per probe, medians): the transposing copy with the column moments
    taken off it (on a CPU; else the moments alone), standardising it in place, the preconditioner, and the
    L-BFGS passes (with their count), plus the rest of L-BFGS (Python and small algebra) as the remainder."""
    from workbench import logistic
    from workbench.probes import _inputs, _standardisation

    X_t, Y = _inputs(torch.from_numpy(X[:probes]), torch.from_numpy(y[:probes]), "logistic", keep_float32=True)
    n, d = X_t.shape[1:]
    stage = torch.empty(n * d, dtype=X_t.dtype)
    rows: dict[str, list[float]] = {k: [] for k in ("copy", "standardise", "preconditioner", "lbfgs", "passes")}
    evals = []
    for q in range(probes):
        xq, yq = X_t[q : q + 1], Y[q : q + 1]
        t0 = time.perf_counter()
        if logistic._STAGE:  # as `solve_per_matrix` does on a CPU
            zt, mean, sum_sq = logistic._transpose_moments(xq, stage)
            t1 = time.perf_counter()
            mean, std = _standardisation(xq, 1, True, (mean, sum_sq))
            design = logistic._Design(xq, mean, std, zt=logistic._standardise_staged(zt, xq, mean, std))
        else:
            mean, std = _standardisation(xq, 1, True)
            t1 = time.perf_counter()
            design = logistic._Design(xq, mean, std)
        t2 = time.perf_counter()
        chol, _ = logistic._preconditioner(design, l2, 8 * d)
        h0 = None if chol is None else torch.cholesky_inverse(chol)
        t3 = time.perf_counter()
        calls = []
        inner = design.loss_grad

        def timed(*args, _inner=inner, _calls=calls):
            s = time.perf_counter()
            out = _inner(*args)
            _calls.append(time.perf_counter() - s)
            return out

        design.loss_grad = timed
        prior = yq.mean(dim=1)
        st = logistic._new_state(1, d, torch.log(prior / (1 - prior)))
        logistic._lbfgs_one(design, yq, st, h0, l2=l2, max_iter=100, tol=tol)
        t4 = time.perf_counter()
        for k, v in zip(rows, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, sum(calls)), strict=True):
            rows[k].append(v * 1e3)
        evals.append(len(calls))
    out = {k: statistics.median(v) for k, v in rows.items()}
    out["lbfgs_rest"] = out.pop("lbfgs") - out["passes"]
    out["evaluations"] = statistics.median(evals)
    out["ms_per_pass"] = out["passes"] / out["evaluations"]
    return out


def bench_all(
    n: int = 20_000, d: int = 256, p: int = 100, quick: bool = False, threads: int = 1, rounds: int = 3
) -> list[dict]:
    """Every (case, kind) pair, in a fixed order."""
    return [
        bench_logistic_vs_sklearn(case, kind, n=n, d=d, p=p, quick=quick, threads=threads, rounds=rounds)
        for case in CASES
        for kind in KINDS
    ]


def describe(r: dict) -> str:
    shape = f"X {r['n']:,} x {r['d']}" if r["case"] == "shared" else f"{r['p']} x ({r['n']:,} x {r['d']})"
    what = "label sets on one matrix" if r["case"] == "shared" else "matrices, one label set each"
    return f"{r['p']} logistic probes, {what} ({shape}, {r['kind']})"


def _print_table(results: list[dict]) -> None:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.platform()} | cpus {os.cpu_count()} | threads {results[0]['threads']} | "
        f"load(1m) {load:.2f} | torch {torch.__version__}"
    )
    for r in results:
        print(describe(r))
        rows = [
            ("ours: fit_logistic", f"{r['time_ours_s']:.3f} s", f"iters median {r['ours_median_n_iter']:.0f}, "
             f"max {r['ours_n_iter']}; {r['passes_ours']} passes; {r['gflops_ours']:.1f} GFLOP/s"),
            (f"sklearn LogisticRegression(lbfgs) x {r['p']}", f"{r['time_sklearn_s']:.3f} s",
             f"iters median {r['sklearn_median_n_iter']:.0f}, max {r['sklearn_max_n_iter']}"),
            ("speedup (sklearn / ours)", f"{r['speedup']:.2f}x", f"median of {r['rounds']} interleaved rounds"),
            ("max |AUROC ours - sklearn| (held-out)", f"{r['max_abs_auroc_diff']:.1e}",
             f"{'pass' if r['ok'] else 'FAIL'} (<= {AUROC_TOLERANCE}); mean AUROC {r['auroc_ours_mean']:.4f}"),
        ]  # fmt: skip
        rows.append(
            (
                "design-matrix bytes / time",
                f"{r['gbs_ours']:.1f} GB/s",
                f"ours; sklearn >= {r['gbs_sklearn_lower_bound']:.1f} GB/s (2 float64 products per iteration + 1)",
            )
        )
        for name, gbs in r.get("memory_gbs", {}).items():
            rows.append((f"  machine: {name}", f"{gbs:.1f} GB/s", "one matrix, same threads, median of 5"))
        if "profile_ms" in r:
            pr = r["profile_ms"]
            rows.append(
                (
                    "  ours, one probe (ms)",
                    f"{sum(pr[k] for k in ('copy', 'standardise', 'preconditioner', 'passes', 'lbfgs_rest')):.1f}",
                    f"transposing copy + moments {pr['copy']:.1f}, standardise {pr['standardise']:.1f}, preconditioner "
                    f"{pr['preconditioner']:.1f}, {pr['evaluations']:.0f} passes x {pr['ms_per_pass']:.2f} = "
                    f"{pr['passes']:.1f}, rest of L-BFGS {pr['lbfgs_rest']:.1f}",
                )
            )
        width = max(len(a) for a, _, _ in rows)
        for a, b, c in rows:
            print(f"  {a:<{width}}  {b:>10}  {c}".rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 5_000, 10 probes, 2 rounds (smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="threads for both torch and sklearn's BLAS")
    parser.add_argument("--n", type=int, default=20_000, help="rows per design matrix")
    parser.add_argument("--d", type=int, default=256, help="features")
    parser.add_argument("--p", type=int, default=100, help="probes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    parser.add_argument("--case", choices=CASES, nargs="+", default=list(CASES))
    parser.add_argument("--kind", choices=KINDS, nargs="+", default=list(KINDS))
    args = parser.parse_args(argv)
    results = []
    for case in args.case:
        for kind in args.kind:
            results.append(
                bench_logistic_vs_sklearn(
                    case, kind, n=args.n, d=args.d, p=args.p, quick=args.quick, threads=args.threads, rounds=args.rounds
                )
            )
            r = results[-1]
            print(f"{describe(r)}: {r['speedup']:.2f}x", file=sys.stderr, flush=True)
    _print_table(results)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
