"""The native CoinRun as a subject kind: its world (levels, egocentric observations, rollouts) and its verbs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from workbench.rl.coinrun.physics import SPLITS, CoinRunConfig, CoinRunLevels
from workbench.rl.env_kinds import EnvKind
from workbench.rl.native_kind import Lazy, RolloutWorld, load_folder, rl_verbs, world_for
from workbench.subjects import SubjectKind


@dataclass
class NativeCoinRunWorld(RolloutWorld):
    """The numpy-batched CoinRun (`workbench.rl.envs.coinrun`): (N, 5, 2v+1, 2v+1) planes, 6 actions."""

    config: CoinRunConfig
    kind: str = "coinrun"
    family: str = "coinrun"
    splits: tuple[str, ...] = SPLITS
    rate_keys: tuple[str, ...] = ("coin", "exit", "exit_without_coin", "timeout")
    rollout_states: bool = True
    rollout: ClassVar[str] = "workbench.rl.coinrun.rollout"

    def observe(self, levels: CoinRunLevels) -> np.ndarray:
        from workbench.rl.envs.coinrun import observe

        return observe(levels, self.config.view)


def world(env_config: Any = None, where: Any = None) -> NativeCoinRunWorld:
    return world_for(NativeCoinRunWorld, CoinRunConfig, env_config, where)


def load(ref: str) -> Any:
    return load_folder(ref, world)


def _verbs() -> dict:
    from workbench.rl import verbs
    from workbench.rl.coinrun.retarget import retarget_coinrun

    own = {"steer": verbs.steer_coinrun, "probe": verbs.probe_coinrun, "collect": verbs.collect_coinrun}
    return rl_verbs(world, {**own, "retarget": retarget_coinrun})


def coinrun_battery():
    """The battery adapter of every CoinRun kind (`workbench.rl.coinrun.battery`)."""
    from workbench.rl.coinrun.battery import adapter

    return adapter()


def coinrun_features():
    """The feature views of every CoinRun kind (`workbench.rl.coinrun.features`)."""
    from workbench.rl.coinrun.features import VIEWS

    return VIEWS


KIND = SubjectKind(
    name="coinrun",
    summary="native CoinRun agents (artifact folders; egocentric 5-plane observations, 6 actions)",
    load=load,
    verbs=_verbs(),
    battery=coinrun_battery(),
    features=coinrun_features(),
)


def _policy_shape(config: CoinRunConfig) -> dict[str, int]:
    from workbench.rl.envs.coinrun import N_ACTIONS, OBS_CHANNELS

    return {"in_channels": len(OBS_CHANNELS), "obs_size": config.window, "n_actions": N_ACTIONS}


def _describe(m: CoinRunConfig, split: str) -> str:
    return (
        f"Environment: native CoinRun, levels {m.min_length}..{m.max_length} columns x {m.height} rows, "
        f"egocentric {m.window}x{m.window} view, jump height {m.jump_height}, step limit {m.max_steps}, "
        f"random_coin_percent={m.random_coin_percent:g}; trained on split `{split}`."
    )


ENV = EnvKind(
    name="coinrun",
    config=CoinRunConfig,
    vec_env=Lazy("workbench.rl.envs.coinrun:CoinRunVecEnv"),
    policy_shape=_policy_shape,
    rollout=NativeCoinRunWorld.rollout,
    expert=Lazy("workbench.rl.coinrun.expert:collect_expert_data"),
    expert_phrase="the planner expert (shortest path to the coin when it is away from the exit, then to the exit)",
    describe=_describe,
    rate_notes="`coin`: collected the coin; `exit`: reached the exit; `exit_without_coin`: reached the exit without "
    "the coin (the exit goal where coin and exit differ); `timeout`: neither exit nor hazard within the step limit "
    "(the rest died on a hazard). `informative`: levels whose coin is away from the exit. "
    "Brackets: Wilson 95% intervals.",
    splits=SPLITS,
    proxy=("exit_without_coin", "ood.informative.exit_without_coin"),
    informative_rows=True,
)
"""Native CoinRun in the env-kind registry (`workbench.rl.env_kinds`): what recipe training needs."""
