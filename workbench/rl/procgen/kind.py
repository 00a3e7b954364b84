"""Published-format procgen checkpoints as subjects: `procgen-maze` and `procgen-coinrun` kinds.

A reference is a `.pth` file (the published goal-misgeneralization format, read by
`workbench.rl.published.load_published` with `weights_only=True`) plus the env kind, or an agent artifact folder whose
config.json names this kind (the shipped procgen organisms; `workbench.rl.agent.load_agent_folder`). Levels are
procgen's own, drawn by seed and edited by split (`workbench.rl.envs.procgen`); rollouts replay exactly those levels
(`ProcgenVecEnv.reset(options={"states": ...})`) so baseline, steered and control runs meet the same levels.
Maze subjects get every maze verb; CoinRun subjects get eval, hooks and coin-vector steering from start-state pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from workbench.errors import WorkbenchError
from workbench.recipes import from_table
from workbench.rl.coinrun.battery import adapter as coinrun_battery
from workbench.rl.coinrun.kind import coinrun_features
from workbench.rl.envs.procgen import SPLITS, ProcgenConfig
from workbench.rl.maze.kind import maze_battery, maze_features, maze_verbs
from workbench.subjects import SubjectKind


class _Shim:
    """What the episode trackers read from a level batch: its length and level seeds."""

    def __init__(self, seeds: np.ndarray) -> None:
        self.seeds = np.asarray(seeds, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.seeds)


@dataclass
class ProcgenWorld:
    """Real procgen maze or CoinRun: (N, 3, 64, 64) uint8 frames, 15 actions."""

    config: ProcgenConfig = field(default_factory=ProcgenConfig)
    splits: tuple[str, ...] = SPLITS
    rollout_states: bool = False  # collectors get start states (rollouts step procgen's C++ state)

    @property
    def kind(self) -> str:
        return f"procgen-{self.config.game}"

    @property
    def family(self) -> str:
        return self.config.game

    @property
    def rate_keys(self) -> tuple[str, ...]:
        if self.config.game == "maze":
            return ("cheese", "corner_first", "timeout")
        return ("coin", "exit", "exit_without_coin", "timeout")

    def levels(self, split: str, n: int, seed: int) -> Any:
        """`n` procgen levels of `split` (env seed `seed`; the split's edit applied to each start state)."""
        from workbench.rl.envs.procgen import ProcgenVecEnv
        from workbench.rl.procgen.levels import ProcgenCoinRunLevels, ProcgenMazeLevels
        from workbench.rl.world import check_split

        check_split(self, split)
        if n < 1:
            raise WorkbenchError(f"need at least one level, got {n}")
        env = ProcgenVecEnv(n, split, self.config)
        env.reset(seed=seed)
        states = env.start_states()
        env.close()
        if self.config.game == "maze":
            return ProcgenMazeLevels.from_states(states, self.config.region, self.config.distribution_mode)
        return ProcgenCoinRunLevels(states, self.config.distribution_mode)

    def run(self, policy: nn.Module, levels: Any, *, seed: int = 0, fwd_hooks=(), greedy: bool = False):
        """One episode per level, all at once (one procgen env per level, so per-level hooks line up)."""
        from workbench.rl.coinrun.rollout import CoinRunTracker
        from workbench.rl.envs.procgen import ProcgenVecEnv
        from workbench.rl.loop import play_until_done
        from workbench.rl.procgen_run import procgen_records
        from workbench.rl.rollout import EpisodeTracker

        env = ProcgenVecEnv(len(levels), "ood", self.config)
        obs, info = env.reset(seed=seed, options={"states": levels.current_states()})
        shim = _Shim(info["level_seed"])
        tracker = EpisodeTracker(shim) if self.config.game == "maze" else CoinRunTracker(shim)
        rec = play_until_done(policy, env, obs, tracker, self.config.max_steps, seed, fwd_hooks, greedy)
        env.close()
        return procgen_records(self.config.game, rec)

    def observe(self, levels: Any) -> np.ndarray:
        return levels.observe()


def _world(game: str):
    def world(env_config: Any = None, where: Any = None) -> ProcgenWorld:
        if env_config is None:
            return ProcgenWorld(ProcgenConfig(game=game))
        if isinstance(env_config, ProcgenConfig):
            return ProcgenWorld(env_config)
        table = {k: v for k, v in dict(env_config).items() if k != "game"}
        return ProcgenWorld(from_table(ProcgenConfig, {"game": game, **table}, str(where or "procgen env config")))

    return world


def _load(game: str):
    def load(ref: str) -> Any:
        """A published-format `.pth` checkpoint, or an agent artifact folder (weights.safetensors + config.json
        whose env kind is this one, e.g. the shipped `procgen-maze-cheese-corner`)."""
        from workbench.rl.agent import Agent, load_agent_folder
        from workbench.rl.published import load_published

        if Path(ref).is_dir():
            agent = load_agent_folder(Path(ref), _world(game))
            if agent.kind != f"procgen-{game}":
                raise WorkbenchError(f"{ref!r}: a {agent.kind} artifact, not procgen-{game}")
            return agent
        policy = load_published(ref)
        return Agent(
            name=Path(ref).name,
            path=Path(ref),
            policy=policy,
            kind=f"procgen-{game}",
            world=_world(game)(None),
            train_split=None,
            config={},
        )

    return load


def _coinrun_verbs() -> dict:
    from workbench.rl import verbs

    return {
        "world": _world("coinrun"),
        "eval": verbs.evaluate_subject,
        "hooks": verbs.hook_shapes,
        "steer": verbs.steer_contrast,
    }


MAZE = SubjectKind(
    name="procgen-maze",
    summary="published-format IMPALA checkpoints (.pth) or agent folders on real procgen Maze (64x64 RGB, 15 actions)",
    load=_load("maze"),
    verbs={**maze_verbs(), "world": _world("maze")},
    file_suffixes=(".pth", ".pt"),
    battery=maze_battery(),
    features=maze_features(),
)
COINRUN = SubjectKind(
    name="procgen-coinrun",
    summary="published-format IMPALA checkpoints (.pth) on real procgen CoinRun (64x64 RGB, 15 actions)",
    load=_load("coinrun"),
    verbs=_coinrun_verbs(),
    file_suffixes=(".pth", ".pt"),
    battery=coinrun_battery(),
    features=coinrun_features(),
)
