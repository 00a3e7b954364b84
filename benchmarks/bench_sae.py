"""SAE training throughput (activations/s) and peak memory: our shards -> SAELens trainer vs SAELens's own pipeline.

What is compared, and why:
- LM hook (`blocks.0.hook_resid_post` of a seeded random 2-layer HookedTransformer, d_model 64, n_ctx 32, standing in
  for persona-lm until that artifact exists): SAELens's `ActivationsStore` (runs the model on a pre-tokenized
  in-memory dataset, keeps a mixing buffer, serves batches) feeding `SAETrainer`, against ours: `collect_prompts`
  writes safetensors shards once, then `ShardTokens` feeds the same `SAETrainer` with the same SAE spec. Ours is
  reported twice: training from existing shards (the common case: one collection, many SAEs) and collection +
  training (the one-off cost).
- Maze hook (`embedder.block2.res1.resadd_out` of `maze-cheese-corner`, each spatial position a token): ours only.
  SAELens's activation pipeline cannot run there: `ActivationsStore` needs a TransformerLens `HookedRootModule` fed
  token sequences from a text dataset; a conv policy fed maze observations is neither.
Each side runs in its own subprocess, so its peak resident memory (ru_maxrss) is its own. Same thread count for both.
Timings are single runs on a shared CPU: read the ratio, not the seconds.

Usage: python benchmarks/bench_sae.py [--quick] [--threads T] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

D_MODEL, N_CTX, VOCAB, WIDTH, K, BATCH = 64, 32, 100, 256, 8, 1024
LM_HOOK, MAZE_HOOK = "blocks.0.hook_resid_post", "embedder.block2.res1.resadd_out"
MAZE_D_IN = 16  # channels of MAZE_HOOK in maze-cheese-corner


def train_flops(d_in: int) -> float:
    """FLOPs per training activation, counted analytically: encoder (d_in x WIDTH) and decoder (WIDTH x d_in) as
    dense products, 2 FLOPs per multiply-add, forward + backward = 3 x forward (TopK's sparsity is not exploited by
    a dense decoder, and elementwise work and the optimiser step are not counted)."""
    return 3 * 2 * 2 * d_in * WIDTH


def _lm():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(
        n_layers=2, d_model=D_MODEL, n_ctx=N_CTX, d_head=16, n_heads=4, d_vocab=VOCAB, act_fn="relu", seed=0
    )
    return HookedTransformer(cfg).eval()


def _tokens(n: int):
    import torch

    return torch.randint(1, VOCAB, (n, N_CTX), generator=torch.Generator().manual_seed(0))


def _train(provider, d_in: int, tokens: int) -> float:
    from workbench.sae.train import SAESpec, _trainer, training_sae

    spec = SAESpec(arch="topk", width=WIDTH, k=K, tokens=tokens, batch_size=BATCH, lr=1e-3)
    trainer = _trainer(spec, training_sae(spec, d_in), provider)
    start = time.perf_counter()
    for _ in range(spec.steps):
        trainer.step(next(provider))
        trainer.n_training_steps += 1
    return time.perf_counter() - start


def side(name: str, tokens: int) -> dict:
    import torch

    torch.manual_seed(0)
    out: dict = {"side": name, "tokens": tokens}
    if name == "saelens_lm":
        from datasets import Dataset
        from sae_lens.training.activations_store import ActivationsStore

        model = _lm()
        seqs = tokens // N_CTX + 64
        ds = Dataset.from_dict({"input_ids": _tokens(seqs).tolist()})
        start = time.perf_counter()
        store = ActivationsStore(
            model=model,
            dataset=ds,
            streaming=False,
            hook_name=LM_HOOK,
            hook_head_index=None,
            context_size=N_CTX,
            d_in=D_MODEL,
            n_batches_in_buffer=128,
            total_training_tokens=tokens,
            store_batch_size_prompts=32,
            train_batch_size_tokens=BATCH,
            prepend_bos=False,
            normalize_activations="none",
            device=torch.device("cpu"),
            dtype="float32",
        )
        train_s = _train(store, D_MODEL, tokens)
        out["seconds"] = time.perf_counter() - start
        out["train_seconds"] = train_s
    elif name == "ours_lm":
        from workbench.activations import ActivationDataset, collect_prompts
        from workbench.sae.data import ShardTokens

        model = _lm()
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            collect_prompts(
                model,
                _tokens(tokens // N_CTX + 1),
                None,
                [LM_HOOK],
                positions="all",
                out=Path(tmp) / "d",
                progress=False,
            )
            collect_s = time.perf_counter() - start
            ds = ActivationDataset.load(Path(tmp) / "d")
            train_s = _train(ShardTokens(ds, LM_HOOK, BATCH, seed=0), D_MODEL, tokens)
        out.update(collect_seconds=collect_s, train_seconds=train_s, seconds=collect_s + train_s)
    elif name == "ours_maze":
        from workbench.activations import ActivationDataset, collect_maze
        from workbench.rl.agent import load_agent
        from workbench.sae.data import ShardTokens

        agent = load_agent("maze-cheese-corner")
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            ds = collect_maze(
                agent, [MAZE_HOOK], "ood", episodes=60, seed=0, states="rollout", out=Path(tmp) / "d", progress=False
            )
            collect_s = time.perf_counter() - start
            ds = ActivationDataset.load(Path(tmp) / "d")
            train_s = _train(ShardTokens(ds, MAZE_HOOK, BATCH, seed=0), MAZE_D_IN, tokens)
        out.update(collect_seconds=collect_s, train_seconds=train_s, seconds=collect_s + train_s, rows=len(ds))
    else:
        raise SystemExit(f"unknown side {name!r}")
    out["activations_per_s_train"] = tokens / out["train_seconds"]
    out["activations_per_s_total"] = tokens / out["seconds"]
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_sides(tokens: int, threads: int = 1) -> list[dict]:
    """Run every side in its own subprocess (own peak RSS); a side that fails is reported on stderr and skipped."""
    rows = []
    for name in ("saelens_lm", "ours_lm", "ours_maze"):
        cmd = [sys.executable, __file__, "--side", name, "--tokens", str(tokens), "--threads", str(threads)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            print(f"{name}: failed\n{res.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    return rows


def table_rows(sides: list[dict]) -> list[dict]:
    """Rows for benchmarks/run.py: the LM comparison (end to end, ours / SAELens) and the maze row (ours only)."""
    by = {r["side"]: r for r in sides}
    out = []
    if "ours_lm" in by and "saelens_lm" in by:
        ours, peer = by["ours_lm"], by["saelens_lm"]
        out.append(
            {
                "name": f"SAE training end to end, LM resid d={D_MODEL} ({ours['tokens']:,} tokens, peak RSS "
                f"{ours['peak_rss_mb']:.0f} vs {peer['peak_rss_mb']:.0f} MB)",
                "ours": ours["activations_per_s_total"],
                "peer": peer["activations_per_s_total"],
                "peer_label": "SAELens ActivationsStore -> SAETrainer",
                "ratio": ours["activations_per_s_total"] / peer["activations_per_s_total"],
                "ratio_label": "ours / SAELens",
                "details": {"ours": ours, "saelens": peer},
            }
        )
        out.append(
            {
                "name": "SAE training from existing shards, LM resid",
                "ours": ours["activations_per_s_train"],
                "gflops": ours["activations_per_s_train"] * train_flops(D_MODEL) / 1e9,
            }
        )
    if "ours_maze" in by:
        m = by["ours_maze"]
        out.append(
            {
                "name": f"SAE training from shards, maze block2.res1 per position (peak RSS {m['peak_rss_mb']:.0f} MB; "
                "SAELens's pipeline cannot run a conv policy)",
                "ours": m["activations_per_s_train"],
                "details": m,
                "gflops": m["activations_per_s_train"] * train_flops(MAZE_D_IN) / 1e9,
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--side", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, default=None)
    args = parser.parse_args(argv)
    tokens = args.tokens or (BATCH * 50 if args.quick else BATCH * 400)
    if args.side:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(side(args.side, tokens)))
        return 0
    rows = run_sides(tokens, args.threads)
    print("| pipeline | tokens | train activations/s | end-to-end activations/s | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['side']} | {r['tokens']:,} | {r['activations_per_s_train']:,.0f} | "
            f"{r['activations_per_s_total']:,.0f} | {r['peak_rss_mb']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
