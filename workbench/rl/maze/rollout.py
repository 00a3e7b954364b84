"""The native maze's rollout contract for the env-kind registry: `RATE_KEYS`, `levels_for` and `run_episodes`.

The records and the tracker live in `workbench.rl.rollout` (every maze-family loop shares them); this module is the
maze's entry in `workbench.rl.env_kinds`, as `workbench.rl.coinrun.rollout` is CoinRun's.
"""

from __future__ import annotations

from torch import nn

from workbench.rl.envs.maze import MazeConfig, MazeLevels, MazeVecEnv, generate_levels
from workbench.rl.episodes import play_levels, seeded_levels
from workbench.rl.rollout import RATE_KEYS, EpisodeRecords, EpisodeTracker

__all__ = ["RATE_KEYS", "levels_for", "run_episodes"]


def levels_for(split: str, episodes: int, seed: int, config: MazeConfig) -> MazeLevels:
    """The `episodes` mazes an evaluation with this seed runs (the same mazes under `train` and `ood`, differing
    only in the cheese)."""
    return seeded_levels(generate_levels, split, episodes, seed, config)


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
    tracker = EpisodeTracker(levels)
    return play_levels(
        policy, env, levels, tracker, max_steps=config.max_steps, seed=seed, fwd_hooks=fwd_hooks, greedy=greedy
    )
