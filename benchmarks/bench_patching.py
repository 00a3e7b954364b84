"""Batched activation patching (`workbench.patching`) against TransformerLens's patching functions, and the cost of
caching one activation against caching every activation.

What is compared, and why:

(a) Patching sweeps. TransformerLens's `get_act_patch_resid_pre` and `get_act_patch_attn_head_out_all_pos` run one
    full forward per index (layer x position: n_layers * T forwards; layer x head: n_layers * n_heads). Ours,
    `patch_sweep` (engine "lean": a hook-free forward on the same parameters), computes only the (variant, pair)
    rows a patch can change, each from the patched block and its first changed position, the last block at the
    answer position only. Same model, same (clean, corrupt) pairs, same metric (normalised mean logit difference),
    denoising. Correctness: the max |difference| of the effect grids (and of the raw mean logit differences) must
    be <= 1e-4, else the script exits 1. TL's per-index tqdm bar is disabled so it costs neither side anything.
    Where the time goes, printed under each row: matmul FLOPs of each side (ours counted by the lean forward, TL's
    from its shapes), GFLOP/s against this machine's matmul peak measured in the same run (benchmarks/run.py
    `matmul_peak_gflops`), the rate ours would need for 5x, and a torch.profiler split of one call (matmul,
    attention, MLP activation, layer norm, other ops, Python and framework) for ours and, on the head sweep, TL.
(b) Caching. `workbench.hooks.run_with_cache(model, tokens, names_filter="blocks.2.hook_resid_post")` against
    TransformerLens `model.run_with_cache(tokens)` (every hook point), next to a plain `model(tokens)`: time per call
    and memory. Memory is reported two ways, both honest for CPU tensors (tracemalloc is not: it only sees Python's
    allocator, and torch allocates tensor storage in C++):
    - retained: the exact bytes of the tensors the cache holds afterwards (sum of `nbytes`);
    - peak: how far one call (plain forward, ours, TL) raises the process's resident set size above the loaded
      model and inputs, sampled every 0.2 ms from /proc/self/statm by a thread while the call runs, each variant the
      first call in a fresh subprocess. It includes transient tensors and allocator slack, and sampling can miss a
      spike shorter than the interval, so read it as approximate; it is the number the operating system sees.

Model: a seeded random `HookedTransformer` (4 layers, d_model 128, 4 heads of 32, d_mlp 512, d_vocab 80 -- about
the persona LM's 77-word vocabulary -- n_ctx 64, LayerNorm, GELU). Inputs: 20 prompt pairs of T = 48 random
tokens; the corrupt prompt differs at 3 positions; the answer / wrong tokens are the clean / corrupt argmax at the
last position. `--quick`: 8 pairs of T = 24, one round.

Timing: each pair of sides is measured interleaved (ours, TL, ours, TL, ...) after one warm-up call each, and
summarised by the median over rounds; one torch thread for both sides. Informational: exits 0 whatever the ratios.

Usage: python benchmarks/bench_patching.py [--quick] [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # TL's per-index loop shows a tqdm bar; keep it out of the timing

import torch  # noqa: E402

CACHE_HOOK = "blocks.2.hook_resid_post"
MODEL = dict(
    n_layers=4, d_model=128, n_heads=4, d_head=32, d_mlp=512, d_vocab=80, n_ctx=64, act_fn="gelu",
    normalization_type="LN", seed=0, initializer_range=0.1,
)  # fmt: skip
FULL = {"pairs": 20, "seq_len": 48, "rounds": 3, "cache_rounds": 10}
QUICK = {"pairs": 8, "seq_len": 24, "rounds": 1, "cache_rounds": 3}
MAX_DIFF = 1e-4


def build(pairs: int, seq_len: int, seed: int = 0, answers: bool = True):
    """The seeded model and (clean, corrupt, answer, wrong) inputs; identical in every process.

    answers=False skips the two forwards that pick the answer tokens (answer, wrong are then None), so a memory probe
    measures the first forward of a fresh process."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    model = HookedTransformer(HookedTransformerConfig(**MODEL)).eval()
    g = torch.Generator().manual_seed(seed)
    vocab = MODEL["d_vocab"]
    clean = torch.randint(0, vocab, (pairs, seq_len), generator=g)
    corrupt = clean.clone()
    where = [seq_len // 8, seq_len // 2, seq_len - 8]
    corrupt[:, where] = torch.randint(0, vocab, (pairs, len(where)), generator=g)
    if not answers:
        return model, clean, corrupt, None, None
    with torch.no_grad():
        answer = model(clean)[:, -1].argmax(-1)
        wrong = model(corrupt)[:, -1].argmax(-1)
    wrong = torch.where(wrong == answer, (answer + 1) % vocab, wrong)
    return model, clean, corrupt, answer, wrong


def tl_forward_flops(cfg, n: int, t: int) -> int:
    """Matmul FLOPs (2 x multiply-adds) of one TransformerLens forward on (n, t) tokens: q/k/v/o projections,
    attention over every key (TL computes the full t x t scores, then masks), MLP, unembedding of every position."""
    hd = cfg.n_heads * cfg.d_head
    per_layer = 2 * n * t * cfg.d_model * 4 * hd + 4 * n * t * t * hd
    if not cfg.attn_only:
        per_layer += 4 * n * t * cfg.d_model * cfg.d_mlp
    return cfg.n_layers * per_layer + 2 * n * t * cfg.d_model * cfg.d_vocab


def matmul_peak() -> dict:
    """This machine's dense float32 matmul rate now (benchmarks/run.py's `matmul_peak_gflops`, same thread count)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import matmul_peak_gflops

    return matmul_peak_gflops()


CATEGORIES = {  # torch.profiler op name -> where the time goes
    "matmul": ("aten::addmm", "aten::mm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm"),
    "attention": ("aten::_scaled_dot_product", "aten::scaled_dot_product", "aten::softmax", "aten::_softmax",
                  "aten::masked_fill", "aten::where", "aten::einsum", "aten::_flash_attention"),
    "mlp activation": ("aten::gelu", "aten::relu", "aten::silu", "aten::tanh", "aten::erf"),
    "layer norm": ("aten::layer_norm", "aten::native_layer_norm", "aten::mean", "aten::pow", "aten::sqrt",
                   "aten::rsqrt", "aten::div", "aten::var"),
}  # fmt: skip


def op_profile(call: Callable[[], object]) -> dict:
    """One call under torch.profiler (CPU): seconds of op self-time per category (matmul, attention, MLP activation,
    layer norm, copies and other ops) and the rest of the wall time (Python, hooks, module calls, the profiler's
    own cost), as fractions of the profiled wall time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        call()
        wall = time.perf_counter() - start
    spent = {name: 0.0 for name in (*CATEGORIES, "other ops")}
    for ev in prof.key_averages():
        kind = next((k for k, names in CATEGORIES.items() if ev.key.startswith(names)), "other ops")
        spent[kind] += ev.self_cpu_time_total / 1e6
    ops = sum(spent.values())
    spent["python and framework"] = max(wall - ops, 0.0)
    return {"wall_s": wall, "fraction": {k: v / wall for k, v in spent.items()}}


def interleaved(cases: list[Callable[[], object]], rounds: int) -> list[list[float]]:
    """Seconds per call of each case in each round, A, B, A, B, ... after one untimed warm-up call each."""
    for case in cases:
        case()
    out: list[list[float]] = [[] for _ in cases]
    for _ in range(rounds):
        for case, times in zip(cases, out, strict=True):
            start = time.perf_counter()
            case()
            times.append(time.perf_counter() - start)
    return out


def bench_sweeps(size: dict, quick: bool = False) -> list[dict]:
    import transformer_lens.patching as tlp

    # TQDM_DISABLE only works if set before tqdm is first imported (benchmarks/run.py imports it earlier), so also
    # silence the per-index progress bar of TL's loop directly: its cost would otherwise count against TL
    tlp.tqdm = functools.partial(tlp.tqdm, disable=True)

    from workbench.patching import patch_sweep

    model, clean, corrupt, answer, wrong = build(size["pairs"], size["seq_len"])
    rows = torch.arange(clean.shape[0])

    def mean_ld(logits: torch.Tensor) -> torch.Tensor:
        return (logits[rows, -1, answer] - logits[rows, -1, wrong]).mean()

    with torch.no_grad():
        cl, co = mean_ld(model(clean)), mean_ld(model(corrupt))

    def tl_metric(logits: torch.Tensor) -> torch.Tensor:
        return (mean_ld(logits) - co) / (cl - co)

    out = []
    peak = matmul_peak()["gflops"]
    cases = [
        ("resid_pre", "pos", "get_act_patch_resid_pre", "layer x position"),
        ("z", "head", "get_act_patch_attn_head_out_all_pos", "layer x head (all positions)"),
    ]
    for activation, per, tl_name, label in cases:
        tl_fn = getattr(tlp, tl_name)
        results: dict[str, object] = {}

        def ours(activation: str = activation, per: str = per, results: dict = results) -> None:
            with torch.no_grad():
                results["ours"] = patch_sweep(
                    model, clean, corrupt, activation, per=per, answer_tokens=answer, wrong_tokens=wrong, n_boot=0
                )

        def theirs(tl_fn: Callable = tl_fn, results: dict = results) -> None:
            with torch.no_grad():
                _, cache = model.run_with_cache(clean)
                results["tl"] = tl_fn(model, corrupt, cache, tl_metric)

        t_ours, t_tl = interleaved([ours, theirs], size["rounds"])
        mine, ref = results["ours"], results["tl"]
        max_diff = float((mine.effect - ref.float()).abs().max())
        raw_ref = ref.double() * (cl - co).double() + co.double()  # undo TL-side normalisation
        raw_diff = float((mine.per_pair.double().mean(-1) - raw_ref).abs().max())
        n_idx = ref.numel()
        ours_s, tl_s = statistics.median(t_ours), statistics.median(t_tl)
        n_pairs, seq_len = clean.shape
        tl_flops = (n_idx + 1) * tl_forward_flops(model.cfg, n_pairs, seq_len)  # + the clean run_with_cache
        our_flops = mine.notes.get("matmul_flops")
        prof_ours = op_profile(ours)
        prof_tl = op_profile(theirs) if per == "head" else None  # TL runs the same full forward per index in both
        bound = {
            "matmul_peak_gflops": peak,
            "tl_gflops": tl_flops / tl_s / 1e9,
            "tl_fraction_of_peak": tl_flops / tl_s / 1e9 / peak,
            "tl_flops": tl_flops,
        }
        if our_flops:
            bound |= {
                "ours_flops": our_flops,
                "ours_gflops": our_flops / ours_s / 1e9,
                "ours_fraction_of_peak": our_flops / ours_s / 1e9 / peak,
                "flop_ratio": tl_flops / our_flops,  # the speed-up at equal GFLOP/s on both sides
                "ratio_if_ours_at_peak": tl_s / (our_flops / (peak * 1e9)),  # the most this work can give
                "gflops_needed_for_5x": 5.0 * our_flops / tl_s / 1e9,
            }
        out.append(
            {
                "name": f"patching sweep {activation} {label}: {model.cfg.n_layers} layers, "
                f"{clean.shape[0]} pairs x T={clean.shape[1]} (max |d effect| {max_diff:.1e})",
                "unit": "s",
                "ours": ours_s,
                "peer": tl_s,
                "peer_label": f"transformer_lens.patching.{tl_name}, one forward per index ({n_idx})",
                "ratio": tl_s / ours_s,
                "ratio_label": "TL / ours",
                "target": (">=", 5.0),
                "details": {
                    "ours_s": t_ours,
                    "tl_s": t_tl,
                    "ours_forwards": mine.forwards,
                    "tl_forwards": n_idx + 1,
                    "max_batch": mine.notes["max_batch"],
                    "max_abs_effect_diff": max_diff,
                    "max_abs_raw_logit_diff_diff": raw_diff,
                    "clean_minus_corrupt": float(cl - co),
                    "engine": mine.notes.get("engine"),
                    "rows_skipped": mine.notes.get("rows_skipped"),
                    "rows_total": mine.notes.get("rows_total"),
                    "bound": bound,
                    "profile_ours": prof_ours,
                    "profile_tl": prof_tl,
                },
                "_check": max(max_diff, raw_diff),
            }
        )
    return out


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _memory_child(variant: str, pairs: int, seq_len: int) -> None:
    """Run in a fresh process: peak RSS above the loaded model during the first call of `variant` (JSON on stdout).

    A thread samples the resident set size every 0.2 ms while the call runs (torch ops release the GIL, so it gets
    to run); the first call in a fresh process is measured so no earlier forward has left freed memory to reuse.
    """
    from workbench.hooks import run_with_cache

    torch.set_num_threads(1)
    model, clean, *_ = build(pairs, seq_len, answers=False)
    calls = {
        "plain": lambda: model(clean),
        "ours_one_hook": lambda: run_with_cache(model, clean, names_filter=CACHE_HOOK),
        "tl_all": lambda: model.run_with_cache(clean),
    }
    state = {"peak": 0, "done": False}

    def sample() -> None:
        while not state["done"]:
            state["peak"] = max(state["peak"], _rss_bytes())
            time.sleep(0.0002)

    before = _rss_bytes()
    sampler = threading.Thread(target=sample)
    sampler.start()
    with torch.no_grad():
        kept = calls[variant]()
    after = _rss_bytes()
    state["done"] = True
    sampler.join()
    retained = sum(t.nbytes for t in kept[1].values()) if isinstance(kept, tuple) else 0
    peak = max(state["peak"], after) - before
    print(json.dumps({"variant": variant, "peak_rss_increase_bytes": peak, "retained": retained}))


def _memory(variant: str, size: dict) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", variant, "--pairs", str(size["pairs"])]
    cmd += ["--seq-len", str(size["seq_len"])]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe {variant} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_cache(size: dict) -> list[dict]:
    from workbench.hooks import run_with_cache

    model, clean, *_ = build(size["pairs"], size["seq_len"])
    with torch.no_grad():
        _, one = run_with_cache(model, clean, names_filter=CACHE_HOOK)
        _, everything = model.run_with_cache(clean)
        if not torch.equal(one[CACHE_HOOK], everything[CACHE_HOOK]):
            raise AssertionError(f"workbench and TransformerLens caches disagree at {CACHE_HOOK}")
        t_plain, t_ours, t_tl = interleaved(
            [
                lambda: model(clean),
                lambda: run_with_cache(model, clean, names_filter=CACHE_HOOK),
                lambda: model.run_with_cache(clean),
            ],
            size["cache_rounds"],
        )
    mem = {v: _memory(v, size) for v in ("plain", "ours_one_hook", "tl_all")}
    plain_s, ours_s, tl_s = (statistics.median(t) for t in (t_plain, t_ours, t_tl))
    retained_ours = sum(t.nbytes for t in one.values())
    retained_tl = sum(t.nbytes for t in everything.values())
    mib = 2**20
    name = f"cached forward, {clean.shape[0]} x {clean.shape[1]} tokens"
    return [
        {
            "name": f"{name}: time (plain forward {plain_s * 1e3:.1f} ms)",
            "unit": "s/call",
            "ours": ours_s,
            "peer": tl_s,
            "peer_label": f"TL run_with_cache() of all {len(everything)} hooks",
            "ratio": tl_s / ours_s,
            "ratio_label": "TL all / ours one hook",
            "details": {"plain_s": t_plain, "ours_s": t_ours, "tl_s": t_tl, "hook": CACHE_HOOK},
        },
        {
            "name": f"{name}: retained cache (exact tensor bytes)",
            "unit": "MiB",
            "ours": retained_ours / mib,
            "peer": retained_tl / mib,
            "peer_label": "TL run_with_cache() of every hook",
            "ratio": retained_tl / max(retained_ours, 1),
            "ratio_label": "TL all / ours one hook",
            "details": {"ours_bytes": retained_ours, "tl_bytes": retained_tl},
        },
        {
            "name": f"{name}: peak RSS increase of one call (sampled, fresh process each; plain forward "
            f"{mem['plain']['peak_rss_increase_bytes'] / mib:.1f} MiB)",
            "unit": "MiB",
            "ours": mem["ours_one_hook"]["peak_rss_increase_bytes"] / mib,
            "peer": mem["tl_all"]["peak_rss_increase_bytes"] / mib,
            "peer_label": "TL run_with_cache() of every hook",
            "ratio": mem["tl_all"]["peak_rss_increase_bytes"] / max(mem["ours_one_hook"]["peak_rss_increase_bytes"], 1),
            "ratio_label": "TL all / ours one hook",
            "details": mem,
        },
    ]


def bench_patching(quick: bool = False, threads: int = 1) -> dict:
    """All rows (plain dicts with `Row` fields; `target` as (op, value)) and whether the correctness checks held."""
    torch.set_num_threads(threads)
    size = QUICK if quick else FULL
    rows = bench_sweeps(size, quick) + bench_cache(size)
    worst = max(r.pop("_check", 0.0) for r in rows)
    return {"rows": rows, "ok": worst <= MAX_DIFF, "max_abs_diff": worst, "size": size, "model": MODEL}


def describe_bound(d: dict) -> str:
    """The profile lines of one sweep row: work, rate against the matmul peak, where the time goes."""
    b = d["bound"]
    done = d["rows_total"] - d["rows_skipped"]
    lines = [
        f"    engine {d['engine']}; rows (variant x pair) computed {done} of {d['rows_total']} "
        "(the rest are exact no-ops: identical patched values, or a patch after the answer position)"
    ]
    if "ours_flops" in b:
        need = b["gflops_needed_for_5x"]
        lines += [
            f"    matmul work: TL {b['tl_flops'] / 1e9:.1f} GFLOP, ours {b['ours_flops'] / 1e9:.2f} GFLOP "
            f"(TL / ours {b['flop_ratio']:.2f}x = the speed-up at equal GFLOP/s)",
            f"    rate: TL {b['tl_gflops']:.1f} GFLOP/s ({b['tl_fraction_of_peak']:.0%} of the "
            f"{b['matmul_peak_gflops']:.0f} GFLOP/s matmul peak), ours {b['ours_gflops']:.1f} GFLOP/s "
            f"({b['ours_fraction_of_peak']:.0%})",
            f"    5x TL needs ours at {need:.1f} GFLOP/s = {need / b['tl_gflops']:.2f}x TL's rate, "
            f"{need / b['matmul_peak_gflops']:.0%} of the peak",
        ]
    for side in ("ours", "tl"):
        prof = d.get(f"profile_{side}")
        if prof:
            parts = ", ".join(f"{k} {v:.0%}" for k, v in prof["fraction"].items())
            lines.append(f"    time ({side}, torch.profiler, {prof['wall_s']:.2f} s profiled): {parts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 pairs of T = 24, one round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, metavar="PATH")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", type=int, default=FULL["pairs"], help=argparse.SUPPRESS)
    parser.add_argument("--seq-len", type=int, default=FULL["seq_len"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        _memory_child(args.memory_child, args.pairs, args.seq_len)
        return 0
    result = bench_patching(args.quick, args.threads)
    for r in result["rows"]:
        ratio = f"{r['ratio']:.2f}x ({r['ratio_label']})" if r["ratio"] is not None else "-"
        print(f"{r['name']}\n    ours {r['ours']:.4g} {r['unit']} | peer {r['peer']:.4g} {r['unit']} | {ratio}")
        details = r.get("details", {})
        if "bound" in details:
            print(describe_bound(details))
    print(f"correctness: max |difference| {result['max_abs_diff']:.2e} (<= {MAX_DIFF:g}: {result['ok']})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
