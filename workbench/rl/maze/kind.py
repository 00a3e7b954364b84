"""The native maze as a subject kind: its world and the verbs every maze-family subject shares.

Maze-family verbs (cheese vector steering, cheese-location probes, vector fields, labelled collection) are written
against `MazeLevels` and the `World` protocol, so the procgen maze kind (`workbench.rl.procgen.kind`) maps the same
functions; only levels, observations and rollouts differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from workbench.recipes import from_table
from workbench.rl.envs.maze import SPLITS, MazeConfig, MazeLevels, generate_levels
from workbench.subjects import SubjectKind


@dataclass
class NativeMazeWorld:
    """The numpy-batched maze (`workbench.rl.envs.maze`): symbolic (N, 3, W, W) observations, 4 actions."""

    config: MazeConfig
    kind: str = "maze"
    family: str = "maze"
    splits: tuple[str, ...] = SPLITS
    rate_keys: tuple[str, ...] = ("cheese", "corner_first", "timeout")
    rollout_states: bool = True

    def levels(self, split: str, n: int, seed: int) -> MazeLevels:
        rng = np.random.default_rng(seed)
        return generate_levels(rng.integers(0, 2**31 - 1, size=n, dtype=np.int64), split, self.config)

    def run(self, policy: nn.Module, levels: MazeLevels, *, seed: int = 0, fwd_hooks=(), greedy: bool = False):
        from workbench.rl.envs.maze import MazeVecEnv
        from workbench.rl.rollout import EpisodeTracker, play_until_done

        env = MazeVecEnv(len(levels), split="ood", config=self.config)
        obs, _ = env.reset(options={"levels": levels})
        return play_until_done(policy, env, obs, EpisodeTracker(levels), self.config.max_steps, seed, fwd_hooks, greedy)

    def observe(self, levels: MazeLevels) -> np.ndarray:
        return levels.observe()


def world(env_config: Any = None, where: Any = None) -> NativeMazeWorld:
    """The world for an env config: a MazeConfig, a dict of its fields (an artifact's env section), or None."""
    if env_config is None or isinstance(env_config, MazeConfig):
        return NativeMazeWorld(env_config or MazeConfig())
    return NativeMazeWorld(from_table(MazeConfig, dict(env_config), str(where or "env config")))


def load(ref: str) -> Any:
    from workbench.rl.agent import load_agent_folder

    return load_agent_folder(Path(ref), world)


def maze_verbs() -> dict:
    """The verbs of every maze-family kind (native and procgen)."""
    from workbench.rl import retarget, verbs

    return {
        "world": world,
        "eval": verbs.evaluate_subject,
        "hooks": verbs.hook_shapes,
        "steer": verbs.steer_maze,
        "probe": verbs.probe_maze,
        "vector-field": verbs.vector_field_maze,
        "collect": verbs.collect_maze,
        "retarget": retarget.retarget_maze,
    }


KIND = SubjectKind(
    name="maze",
    summary="native maze agents (artifact folders; symbolic 3-plane observations, 4 actions)",
    load=load,
    verbs={**maze_verbs()},
)
