"""Env throughput side by side: real procgen (C++ games, 64x64 pixels) vs our native numpy envs at the same N.

Why: the native envs exist because procgen is too slow for the thousands of paired levels and CPU training the
workbench needs. This measures by how much, in one run: procgen Maze vs `workbench.rl.envs.maze.MazeVecEnv`, and
procgen CoinRun vs the native CoinRun (`bench_coinrun.bench_native_coinrun`, when present), at 64 and 256 envs,
random actions drawn up front, rounds interleaved (procgen, native, procgen, ...), median per side. procgen runs
with `num_threads` worker threads (default 1, the same single core the native side gets). Our procgen wrapper
(`ProcgenVecEnv`: bookkeeping, edits on reset) is timed too, to show its overhead over the raw gym3 env.

Usage (needs the procgen extra): python benchmarks/bench_procgen.py [--quick] [--threads 1]
"""

from __future__ import annotations

import statistics
import time

import numpy as np

SIZES = (64, 256)
TARGET = 20.0  # native >= 20x procgen


def _rate(step, n_envs: int, steps: int, actions: np.ndarray) -> float:
    start = time.perf_counter()
    for a in actions[:steps]:
        step(a)
    return n_envs * steps / (time.perf_counter() - start)


def _procgen_raw(game: str, n: int, threads: int):
    from procgen import ProcgenGym3Env

    env = ProcgenGym3Env(num=n, env_name=game, distribution_mode="hard", rand_seed=0, num_threads=threads)

    def step(a):
        env.act(a.astype(np.int32))
        env.observe()

    return step, 15


def _procgen_wrapped(game: str, n: int, threads: int):
    from workbench.rl.envs.procgen import ProcgenConfig, ProcgenVecEnv

    env = ProcgenVecEnv(n, "ood", ProcgenConfig(game=game, num_threads=threads))
    env.reset(seed=0)
    return env.step, 15


def _native(game: str, n: int):
    if game == "maze":
        from workbench.rl.envs.maze import MazeConfig, MazeVecEnv

        env = MazeVecEnv(n, "train", MazeConfig(world_size=25, max_size=25))
        env.reset(seed=0)
        return env.step, 4
    from workbench.rl.envs.coinrun import N_ACTIONS, CoinRunConfig, CoinRunVecEnv

    env = CoinRunVecEnv(n, "train", CoinRunConfig())
    env.reset(seed=0)
    return env.step, N_ACTIONS


def _has_native_coinrun() -> bool:
    try:
        from bench_coinrun import bench_native_coinrun  # noqa: F401
    except ImportError:
        return False
    return True


def procgen_rows(quick: bool = False, threads: int = 1) -> list[dict]:
    """Rows for benchmarks/run.py: per game and N, native steps/s (ours) vs raw procgen steps/s (peer), ratio
    native / procgen with the >= 20x target, and our procgen wrapper's rate in the details."""
    games = ["maze"] + (["coinrun"] if _has_native_coinrun() else [])
    rounds = 1 if quick else 3
    rows = []
    for game in games:
        for n in SIZES:
            steps = 20 if quick else (50 if n == 256 else 100)
            rng = np.random.default_rng(0)
            sides = {
                "procgen": _procgen_raw(game, n, threads),
                "wrapper": _procgen_wrapped(game, n, threads),
                "native": _native(game, n),
            }
            rates: dict[str, list[float]] = {k: [] for k in sides}
            for _ in range(rounds):
                for name, (step, n_act) in sides.items():
                    actions = rng.integers(0, n_act, size=(steps, n), dtype=np.int64)
                    step(actions[0])  # warm-up
                    rates[name].append(_rate(step, n, steps, actions))
            med = {k: float(statistics.median(v)) for k, v in rates.items()}
            rows.append(
                {
                    "name": f"{game} env steps/s, {n} envs: native vs procgen",
                    "unit": "steps/s",
                    "ours": med["native"],
                    "peer": med["procgen"],
                    "peer_label": f"procgen {game} (gym3, {threads} thread)",
                    "ratio": med["native"] / med["procgen"],
                    "ratio_label": "native / procgen",
                    "target": (">=", TARGET),
                    "details": {
                        "steps": steps,
                        "rounds": rounds,
                        "procgen_threads": threads,
                        "procgen_wrapper_steps_per_s": med["wrapper"],
                        "native_split": "train",
                        "procgen_wrapper_split": "ood",
                    },
                }
            )
    return rows


if __name__ == "__main__":
    import argparse
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    for row in procgen_rows(quick=args.quick, threads=args.threads):
        print(
            f"{row['name']}: native {row['ours']:,.0f}  procgen {row['peer']:,.0f}  "
            f"ratio {row['ratio']:.1f}x (target >= {TARGET:g}x)  "
            f"our procgen wrapper {row['details']['procgen_wrapper_steps_per_s']:,.0f}"
        )
