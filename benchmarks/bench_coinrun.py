"""Native CoinRun env throughput: env transitions per second (summed over envs) for `CoinRunVecEnv`.

Random actions are drawn up front from a seeded numpy rng, so the timed region is stepping only (physics,
observation rendering, same-step autoreset with fresh level generation). Random play dies often on hazards, so
autoreset (level generation) is exercised heavily. The `train` split is the default (coin on the exit, as PPO trains);
`ood` additionally plans the coin's placement for every new level and is much slower per reset.

`bench_native_coinrun(n_envs, steps)` is the function to call for a side-by-side with procgen's CoinRun.

`vs_procgen_rows()` (`python benchmarks/bench_coinrun.py --vs-procgen`) is that side-by-side for both native envs
(maze as `bench_procgen.py` builds it, 25x25 world; CoinRun train split) against procgen's gym3 env at the same N,
interleaved round by round, and reports each side's rate per CPU second of this process next to the wall-clock rate.
Why CPU seconds: on a shared, loaded machine the wall clock mostly measures the other tenants (we saw procgen's own
rate move 3x between rounds); the process's CPU time is what each side costs, and the ratio of CPU rates is what
"N times faster" means. procgen runs with one worker thread; its CPU time is counted too (same process).
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


def _native_env(game: str, n: int):
    if game == "maze":
        from workbench.rl.envs.maze import MazeConfig, MazeVecEnv

        env, n_actions = MazeVecEnv(n, "train", MazeConfig(world_size=25, max_size=25)), 4
    else:
        env, n_actions = CoinRunVecEnv(n, "train", CoinRunConfig()), N_ACTIONS
    env.reset(seed=0)
    return env.step, n_actions


def _procgen_env(game: str, n: int):
    from procgen import ProcgenGym3Env

    env = ProcgenGym3Env(num=n, env_name=game, distribution_mode="hard", rand_seed=0, num_threads=1)

    def step(a: np.ndarray) -> None:
        env.act(a.astype(np.int32))
        env.observe()

    return step, 15


def vs_procgen_rows(n_envs: int = 64, rounds: int = 5, steps: int = 200, procgen_steps: int = 40) -> list[dict]:
    """Native vs procgen steps per CPU second (and per wall second) at `n_envs`, rounds interleaved, medians."""
    import os

    rows = []
    for game in ("maze", "coinrun"):
        sides = {"native": _native_env(game, n_envs), "procgen": _procgen_env(game, n_envs)}
        count = {"native": steps, "procgen": procgen_steps}
        rng = np.random.default_rng(0)
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        wall: dict[str, list[float]] = {k: [] for k in sides}
        load = os.getloadavg()[0]
        for _ in range(rounds + 1):  # the first round warms up and is dropped
            for name, (step, n_act) in sides.items():
                actions = rng.integers(0, n_act, size=(count[name], n_envs), dtype=np.int64)
                c, w = time.process_time(), time.perf_counter()
                for a in actions:
                    step(a)
                cpu[name].append(n_envs * count[name] / (time.process_time() - c))
                wall[name].append(n_envs * count[name] / (time.perf_counter() - w))
        med = {k: float(statistics.median(v[1:])) for k, v in cpu.items()}
        med_wall = {k: float(statistics.median(v[1:])) for k, v in wall.items()}
        rows.append(
            {
                "name": f"{game} env steps per CPU second, {n_envs} envs: native vs procgen",
                "unit": "steps/s",
                "ours": med["native"],
                "peer": med["procgen"],
                "peer_label": f"procgen {game} (gym3, 1 thread)",
                "ratio": med["native"] / med["procgen"],
                "ratio_label": "native / procgen (CPU time)",
                "target": (">=", 20.0),
                "details": {
                    "rounds": rounds,
                    "native_steps": steps,
                    "procgen_steps": procgen_steps,
                    "wall_steps_per_s": med_wall,
                    "wall_ratio": med_wall["native"] / med_wall["procgen"],
                    "load_avg_1m_start": round(load, 2),
                    "load_avg_1m_end": round(os.getloadavg()[0], 2),
                },
            }
        )
    return rows


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
    import sys

    if "--vs-procgen" in sys.argv:
        import warnings

        warnings.filterwarnings("ignore")
        import workbench

        print(f"workbench from {workbench.__file__}")
        for row in vs_procgen_rows():
            d = row["details"]
            print(
                f"{row['name']}: native {row['ours']:,.0f}  procgen {row['peer']:,.0f}  ratio {row['ratio']:.1f}x "
                f"(target >= 20x); wall: ratio {d['wall_ratio']:.1f}x; load {d['load_avg_1m_start']}"
                f"->{d['load_avg_1m_end']}"
            )
    else:
        for row in coinrun_rows(quick=False):
            print(f"{row['name']}: {row['ours']:,.0f} steps/s")
