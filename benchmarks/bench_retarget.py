"""The retargeting sweep batched against a loop of one rollout per pair: same (maze, target) pairs, same numbers.

What is compared: `workbench.rl.retarget.run_pairs` on 200 `ood` (maze, target) pairs of the shipped
`maze-cheese-corner` agent (a seeded random policy of the same shape if the artifact is absent), with the top-4
discovered channels of `embedder.block2.res1.resadd_out` clamped at each pair's target (4 std) on every forward pass:

- ours: all 200 pairs as ONE batch through `agent.world.run`, the hook editing row i at pair i's target cell, and
  rows whose episode has ended (cheese reached) leaving the forward pass;
- peer: the obvious loop, one `run_pairs` call (one env, one hook, batch 1) per pair, each with the pair's own action
  stream key, which is what makes the two comparable: actions are drawn per pair from a counter-based stream keyed by
  (seed, pair), not from one generator shared by the batch.

Both must give the same numbers: the per-pair first step on the target, the step the cheese was reached and the
final cell are compared exactly (a mismatch raises, so `benchmarks/run.py` fails loudly). Discovery runs once, untimed.
Timing: one warm-up call each, then rounds of (ours, peer) interleaved, median per side; ratio loop / batched, target
>= 10x (measured 10.6x: 5.8 s vs 60.9 s on a shared 2-core machine, one thread). `--quick`: 40 pairs, one round
(about 4x: the batch advantage grows with the number of pairs). Torch on `--threads` threads (default 1).

Usage: python benchmarks/bench_retarget.py [--quick] [--threads T] [--pairs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

AGENT_NAME = "maze-cheese-corner"
LAYER = "embedder.block2.res1.resadd_out"
SET_SIZE = 4
MAGNITUDE = 4.0
TARGET = 10.0


def _agent():
    from workbench import artifacts
    from workbench.rl.agent import load_agent, make_agent

    if AGENT_NAME in artifacts.available("agents"):
        return load_agent(AGENT_NAME), f"trained agent {AGENT_NAME!r}"
    from workbench.rl.policies import ImpalaPolicy, PolicyConfig

    torch.manual_seed(0)
    cfg = PolicyConfig(channels=(8, 16, 32), pool=(False, True, True), hidden=128)
    return make_agent(ImpalaPolicy(cfg), env="maze"), f"random-init ImpalaPolicy{cfg.channels}"


def setup(pairs: int, seed: int = 0):
    """(agent, source, pairs, edit) for the sweep: discovery on fit mazes disjoint from the evaluated ones."""
    from workbench.rl.goal_channels import discover_goal_channels, fit_levels
    from workbench.rl.retarget import sample_pairs, set_edit, target_layer_cells

    agent, source = _agent()
    grid = 8
    levels = agent.world.levels("ood", pairs + pairs // 2 + 10, seed)
    batch = sample_pairs(levels, pairs, seed, grid)
    found = discover_goal_channels(agent, LAYER, levels=fit_levels(agent, 200, seed, levels.seeds.tolist()))
    edit = set_edit(found, found.top(SET_SIZE), MAGNITUDE, target_layer_cells(batch, grid))
    return agent, source, batch, edit


def batched(agent, pairs, edit, seed: int = 0):
    from workbench.rl.retarget import run_pairs

    return run_pairs(agent, pairs, edit, LAYER, seed=seed)


def looped(agent, pairs, edit, seed: int = 0):
    """One rollout per pair (batch 1), stitched into the batched result's arrays."""
    from workbench.rl.retarget import run_pairs

    out = {"target_step": [], "cheese_step": [], "final": []}
    for i in range(len(pairs)):
        idx = np.array([i])
        r = run_pairs(agent, pairs.select(idx), edit.take(idx), LAYER, seed=seed, keys=idx)
        out["target_step"].append(r.target_step[0])
        out["cheese_step"].append(r.cheese_step[0])
        out["final"].append(r.final[0])
    return {k: np.array(v) for k, v in out.items()}


def same_numbers(a, b: dict) -> dict:
    """Exact agreement of the per-pair outcomes; raises when any pair differs."""
    checks = {k: np.array_equal(getattr(a, k), b[k]) for k in ("target_step", "cheese_step", "final")}
    if not all(checks.values()):
        bad = [k for k, ok in checks.items() if not ok]
        raise RuntimeError(f"batched and looped retargeting disagree on {', '.join(bad)}")
    return checks


def retarget_rows(quick: bool = False, threads: int = 1, pairs: int | None = None) -> list[dict]:
    """Table rows for `benchmarks/run.py` (name, unit, ours, peer, ratio, target as (op, value), details)."""
    torch.set_num_threads(threads)
    n = pairs or (40 if quick else 200)
    rounds = 1 if quick else 2
    agent, source, batch, edit = setup(n)
    warm = batch.select(np.arange(2))
    batched(agent, warm, edit.take(np.arange(2)))
    looped(agent, warm, edit.take(np.arange(2)))
    t_ours, t_peer = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ours = batched(agent, batch, edit)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        peer = looped(agent, batch, edit)
        t_peer.append(time.perf_counter() - t0)
    same_numbers(ours, peer)
    ours_s, peer_s = statistics.median(t_ours), statistics.median(t_peer)
    return [
        {
            "name": f"retarget sweep, {len(batch)} (maze, target) pairs, top-{SET_SIZE} clamp",
            "unit": "s",
            "ours": ours_s,
            "peer": peer_s,
            "peer_label": "one rollout per pair",
            "ratio": peer_s / ours_s,
            "ratio_label": "loop / batched",
            "target": (">=", TARGET),
            "details": {
                "policy": source,
                "pairs": len(batch),
                "rounds": rounds,
                "same_numbers": True,
                "success_rate": float(ours.success.mean()),
                "batched_s": t_ours,
                "looped_s": t_peer,
            },
        }
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        (row,) = retarget_rows(args.quick, args.threads, args.pairs)
    except RuntimeError as err:
        print(f"FAIL: {err}", file=sys.stderr)
        return 1
    d = row["details"]
    print(f"{row['name']} ({d['policy']}, {args.threads} thread(s))")
    print(f"  batched: {row['ours']:.2f} s   looped: {row['peer']:.2f} s   loop / batched: {row['ratio']:.1f}x")
    print(f"  same numbers: yes (target step, cheese step, final cell of every pair); success {d['success_rate']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
