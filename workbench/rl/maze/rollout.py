"""The native maze's rollout contract for the env-kind registry: `RATE_KEYS`, `levels_for` and `run_episodes`.

The records and the tracker live in `workbench.rl.rollout` (every maze-family loop shares them); this module is the
maze's entry in `workbench.rl.env_kinds`, as `workbench.rl.coinrun.rollout` is CoinRun's.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from workbench.rl.envs.maze import MazeConfig, MazeLevels, MazeVecEnv, generate_levels
from workbench.rl.loop import play_until_done
from workbench.rl.rollout import RATE_KEYS, EpisodeRecords, EpisodeTracker

__all__ = ["RATE_KEYS", "levels_for", "run_episodes"]


def levels_for(split: str, episodes: int, seed: int, config: MazeConfig) -> MazeLevels:
    """The `episodes` mazes an evaluation with this seed runs (the same mazes under `train` and `ood`, differing
    only in the cheese)."""
    rng = np.random.default_rng(seed)
    return generate_levels(rng.integers(0, 2**31 - 1, size=episodes, dtype=np.int64), split, config)


def run_episodes(
    policy: nn.Module,
    levels: MazeLevels,
    config: MazeConfig,
    *,
    seed: int = 0,
    fwd_hooks: list | tuple = (),
    greedy: bool = False,
) -> EpisodeRecords:
    """One episode per maze, all at once; see `workbench.rl.rollout.run_episodes`."""
    env = MazeVecEnv(len(levels), split="ood", config=config)
    obs, _ = env.reset(options={"levels": levels})
    return play_until_done(policy, env, obs, EpisodeTracker(levels), config.max_steps, seed, fwd_hooks, greedy)
