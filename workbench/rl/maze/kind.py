"""The native maze as a subject kind: its world and the verbs every maze-family subject shares.

Maze-family verbs (cheese vector steering, cheese-location probes, vector fields, labelled collection) are written
against `MazeLevels` and the `World` protocol, so the procgen maze kind (`workbench.rl.procgen.kind`) maps the same
functions; only levels, observations and rollouts differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from workbench.rl.env_kinds import EnvKind
from workbench.rl.envs.maze import SPLITS, MazeConfig, MazeLevels
from workbench.rl.native_kind import Lazy, RolloutWorld, load_folder, rl_verbs, world_for
from workbench.subjects import SubjectKind


@dataclass
class NativeMazeWorld(RolloutWorld):
    """The numpy-batched maze (`workbench.rl.envs.maze`): symbolic (N, 3, W, W) observations, 4 actions."""

    config: MazeConfig
    kind: str = "maze"
    family: str = "maze"
    splits: tuple[str, ...] = SPLITS
    rate_keys: tuple[str, ...] = ("cheese", "corner_first", "timeout")
    rollout_states: bool = True
    rollout: ClassVar[str] = "workbench.rl.maze.rollout"

    def run(self, policy: nn.Module, levels: MazeLevels, *, seed: int = 0, fwd_hooks=(), greedy: bool = False):
        """As `workbench.rl.maze.rollout.run_episodes`, through `workbench.rl.rollout.play_until_done` looked up at
        call time: the maze-family loop seam that reference tests replace (tests/test_speed_equal.py)."""
        from workbench.rl.envs.maze import MazeVecEnv
        from workbench.rl.rollout import EpisodeTracker, play_until_done

        env = MazeVecEnv(len(levels), split="ood", config=self.config)
        obs, _ = env.reset(options={"levels": levels})
        return play_until_done(policy, env, obs, EpisodeTracker(levels), self.config.max_steps, seed, fwd_hooks, greedy)


def world(env_config: Any = None, where: Any = None) -> NativeMazeWorld:
    """The world for an env config: a MazeConfig, a dict of its fields (an artifact's env section), or None."""
    return world_for(NativeMazeWorld, MazeConfig, env_config, where)


def load(ref: str) -> Any:
    return load_folder(ref, world)


def maze_verbs() -> dict:
    """The verbs of every maze-family kind (native and procgen)."""
    from workbench.rl import retarget, verbs

    return rl_verbs(
        world,
        {
            "steer": verbs.steer_maze,
            "probe": verbs.probe_maze,
            "vector-field": verbs.vector_field_maze,
            "collect": verbs.collect_maze,
            "retarget": retarget.retarget_maze,
        },
    )


def maze_battery():
    """The battery adapter of every maze-family kind (`workbench.rl.maze.battery`)."""
    from workbench.rl.maze.battery import adapter

    return adapter()


def maze_features():
    """The feature views of every maze-family kind (`workbench.rl.maze.features`)."""
    from workbench.rl.maze.features import VIEWS

    return VIEWS


KIND = SubjectKind(
    name="maze",
    summary="native maze agents (artifact folders; symbolic 3-plane observations, 4 actions)",
    load=load,
    verbs={**maze_verbs()},
    battery=maze_battery(),
    features=maze_features(),
)


def _policy_shape(config: MazeConfig) -> dict[str, int]:
    from workbench.rl.envs.maze import OBS_CHANNELS

    return {"in_channels": len(OBS_CHANNELS), "obs_size": config.world_size, "n_actions": 4}


def _describe(m: MazeConfig, split: str) -> str:
    return (
        f"Environment: native maze, world {m.world_size}x{m.world_size}, maze sides {m.min_size}..{m.max_size}, "
        f"training region r={m.region}, step limit {m.max_steps}; trained on split `{split}`."
    )


ENV = EnvKind(
    name="maze",
    config=MazeConfig,
    vec_env=Lazy("workbench.rl.envs.maze:MazeVecEnv"),
    policy_shape=_policy_shape,
    rollout=NativeMazeWorld.rollout,
    expert=Lazy("workbench.rl.imitation:maze_expert_data"),
    expert_phrase="the shortest-path-to-cheese expert",
    describe=_describe,
    rate_notes="`cheese`: reached the cheese within the step limit; `corner_first`: entered the top-right r x r region "
    "before the cheese (or never reached it); `timeout`: step limit hit. Brackets: Wilson 95% intervals.",
    splits=SPLITS,
    proxy=("corner_first", "ood.informative.corner_first"),
)
"""The native maze in the env-kind registry (`workbench.rl.env_kinds`): what recipe training needs."""
