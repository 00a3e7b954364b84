"""Golden trajectories of the native envs: a fixed seed and action sequence must give the same observations, rewards,
dones and episode records as the code the hashes were recorded from (before the envs were optimised for speed).

Why hashes: the speed work rewrote stepping, observation and level generation; any change in behaviour, however
small, changes a trajectory's digest. The digests were recorded from commit 6d2543f (pre-optimisation). If a change
is meant to alter the dynamics, re-record them and say so in the commit.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from workbench.rl.envs.coinrun import N_ACTIONS, CoinRunConfig, CoinRunVecEnv
from workbench.rl.envs.coinrun import generate_levels as coinrun_levels
from workbench.rl.envs.maze import MazeConfig, MazeVecEnv
from workbench.rl.envs.maze import generate_levels as maze_levels


def _digest(env, n_actions: int, steps: int, seed: int) -> str:
    """sha256 over every step's obs, reward, terminated, truncated and (sorted) info arrays."""
    h = hashlib.sha256()
    obs, info = env.reset(seed=seed)
    h.update(np.ascontiguousarray(obs).tobytes())
    h.update(np.asarray(info["level_seed"], dtype=np.int64).tobytes())
    actions = np.random.default_rng(seed + 1).integers(0, n_actions, size=(steps, env.num_envs))
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        for arr in (obs, reward, terminated, truncated):
            h.update(str(arr.dtype).encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        for key in sorted(info):
            h.update(key.encode())
            h.update(np.ascontiguousarray(np.asarray(info[key])).tobytes())
    return h.hexdigest()[:16]


def _levels_digest(levels) -> str:
    h = hashlib.sha256()
    for name, value in sorted(vars(levels).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(value)).tobytes())
    return h.hexdigest()[:16]


MAZE_CASES = {
    "train-15": ("train", MazeConfig(), "40e2c4fa66e17e2a"),
    "ood-15": ("ood", MazeConfig(), "15063f8ef40424ad"),
    "train-25": ("train", MazeConfig(world_size=25, max_size=25, max_steps=60), "924935518e98935f"),
}
COINRUN_CASES = {
    "train": ("train", CoinRunConfig(), "f28416cdaaa4fe17"),
    "ood": ("ood", CoinRunConfig(), "c3992818e063769a"),
    "random-coin": ("train", CoinRunConfig(random_coin_percent=30.0, max_steps=40), "5efdf54b231453af"),
}
LEVEL_DIGESTS = {
    "maze-train": "191579ebf077563c",
    "maze-ood-25": "aebeb83154e5f42f",
    "coinrun-train": "0664a4ca688d9e8f",
    "coinrun-ood": "725b55f636906f9e",
}


def _maze_digest(case: str) -> str:
    split, cfg, _ = MAZE_CASES[case]
    return _digest(MazeVecEnv(16, split, cfg), 4, 300, seed=3)


def _coinrun_digest(case: str) -> str:
    split, cfg, _ = COINRUN_CASES[case]
    return _digest(CoinRunVecEnv(16, split, cfg), N_ACTIONS, 300, seed=3)


def _level_digest(case: str) -> str:
    seeds = np.arange(40) * 7919 + 11
    return {
        "maze-train": lambda: _levels_digest(maze_levels(seeds, "train")),
        "maze-ood-25": lambda: _levels_digest(maze_levels(seeds, "ood", MazeConfig(world_size=25, max_size=25))),
        "coinrun-train": lambda: _levels_digest(coinrun_levels(seeds, "train")),
        "coinrun-ood": lambda: _levels_digest(coinrun_levels(seeds, "ood")),
    }[case]()


@pytest.mark.parametrize("case", sorted(MAZE_CASES))
def test_maze_trajectory_is_unchanged(case: str) -> None:
    assert _maze_digest(case) == MAZE_CASES[case][2]


@pytest.mark.parametrize("case", sorted(COINRUN_CASES))
def test_coinrun_trajectory_is_unchanged(case: str) -> None:
    assert _coinrun_digest(case) == COINRUN_CASES[case][2]


@pytest.mark.parametrize("case", sorted(LEVEL_DIGESTS))
def test_generated_levels_are_unchanged(case: str) -> None:
    assert _level_digest(case) == LEVEL_DIGESTS[case]


def test_digest_sees_a_one_step_change() -> None:
    """The control: the digest is sensitive (another seed gives another trajectory)."""
    env = MazeVecEnv(16, "train", MazeConfig())
    assert _digest(env, 4, 50, seed=3) != _digest(env, 4, 50, seed=4)


if __name__ == "__main__":  # print the digests of the current code (to record them)
    for c in sorted(MAZE_CASES):
        print("maze", c, _maze_digest(c))
    for c in sorted(COINRUN_CASES):
        print("coinrun", c, _coinrun_digest(c))
    for c in sorted(LEVEL_DIGESTS):
        print("levels", c, _level_digest(c))


def test_level_queue_hands_out_the_seeds_of_one_draw_per_autoreset() -> None:
    """LevelQueue draws the seed stream in chunks; numpy gives the same seeds as one `integers` call per autoreset
    (the pre-queue behaviour), whatever the sizes asked for, including chunk boundaries and a reseed."""
    from workbench.rl.envs.maze import LevelQueue

    sizes = [3, 0, 1, 7, 2, 5, 1, 1, 9, 4]
    queue = LevelQueue(lambda seeds: maze_levels(seeds, "train"), num_envs=2, chunk=8)
    queue.seed(11)
    rng = np.random.default_rng(11)
    for k in sizes:
        got = queue.take(k)
        assert np.array_equal(got.seeds, rng.integers(0, 2**31 - 1, size=k, dtype=np.int64))
        if k:
            assert np.array_equal(got.walls, maze_levels(got.seeds, "train").walls)
    queue.seed(11)
    assert np.array_equal(queue.take(4).seeds, np.random.default_rng(11).integers(0, 2**31 - 1, size=4))
