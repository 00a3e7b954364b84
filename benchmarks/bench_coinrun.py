"""Native CoinRun env throughput: env transitions per second (summed over envs) for `CoinRunVecEnv`.

Random actions are drawn up front from a seeded numpy rng, so the timed region is stepping only (physics,
observation rendering, same-step autoreset with fresh level generation). Random play dies often on hazards, so
autoreset (level generation) is exercised heavily. The `train` split is the default (coin on the exit, as PPO trains);
`ood` additionally plans the coin's placement for every new level and is much slower per reset.

`bench_native_coinrun(n_envs, steps)` is the function to call for a side-by-side with procgen's CoinRun.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from workbench.rl.envs.coinrun import N_ACTIONS, CoinRunConfig, CoinRunVecEnv

SIZES = (64, 1024)


def bench_native_coinrun(
    n_envs: int,
    steps: int,
    split: str = "train",
    config: CoinRunConfig | None = None,
    seed: int = 0,
    rounds: int = 3,
    warmup_steps: int = 5,
) -> float:
    """Median over `rounds` of env transitions per second for `n_envs` CoinRun envs stepping `steps` times each."""
    env = CoinRunVecEnv(n_envs, split, config or CoinRunConfig())
    env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, N_ACTIONS, size=(rounds, steps, n_envs), dtype=np.int64)
    for a in rng.integers(0, N_ACTIONS, size=(warmup_steps, n_envs), dtype=np.int64):
        env.step(a)
    rates = []
    for r in range(rounds):
        start = time.perf_counter()
        for a in actions[r]:
            env.step(a)
        rates.append(n_envs * steps / (time.perf_counter() - start))
    return float(statistics.median(rates))


def coinrun_rows(quick: bool = False) -> list[dict]:
    """Table rows (name, unit, ours, details) for `benchmarks/run.py`: train split at 64 and 1024 envs."""
    rows = []
    for n in SIZES:
        steps = (20 if n == 1024 else 100) if quick else (100 if n == 1024 else 500)
        rate = bench_native_coinrun(n, steps, rounds=1 if quick else 3)
        rows.append(
            {
                "name": f"native CoinRun env, num_envs={n} (train split, random actions)",
                "unit": "steps/s",
                "ours": rate,
                "details": {"steps": steps, "split": "train"},
            }
        )
    return rows


if __name__ == "__main__":
    for row in coinrun_rows(quick=False):
        print(f"{row['name']}: {row['ours']:,.0f} steps/s")
