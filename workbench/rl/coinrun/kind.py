"""The native CoinRun as a subject kind: its world (levels, egocentric observations, rollouts) and its verbs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from workbench.recipes import from_table
from workbench.rl.coinrun.physics import SPLITS, CoinRunConfig, CoinRunLevels
from workbench.subjects import SubjectKind


@dataclass
class NativeCoinRunWorld:
    """The numpy-batched CoinRun (`workbench.rl.envs.coinrun`): (N, 5, 2v+1, 2v+1) planes, 6 actions."""

    config: CoinRunConfig
    kind: str = "coinrun"
    family: str = "coinrun"
    splits: tuple[str, ...] = SPLITS
    rate_keys: tuple[str, ...] = ("coin", "exit", "exit_without_coin", "timeout")
    rollout_states: bool = True

    def levels(self, split: str, n: int, seed: int) -> CoinRunLevels:
        from workbench.rl.coinrun.rollout import levels_for

        return levels_for(split, n, seed, self.config)

    def run(self, policy: nn.Module, levels: CoinRunLevels, *, seed: int = 0, fwd_hooks=(), greedy: bool = False):
        from workbench.rl.coinrun.rollout import run_episodes

        return run_episodes(policy, levels, self.config, seed=seed, fwd_hooks=fwd_hooks, greedy=greedy)

    def observe(self, levels: CoinRunLevels) -> np.ndarray:
        from workbench.rl.envs.coinrun import observe

        return observe(levels, self.config.view)


def world(env_config: Any = None, where: Any = None) -> NativeCoinRunWorld:
    if env_config is None or isinstance(env_config, CoinRunConfig):
        return NativeCoinRunWorld(env_config or CoinRunConfig())
    return NativeCoinRunWorld(from_table(CoinRunConfig, dict(env_config), str(where or "env config")))


def load(ref: str) -> Any:
    from workbench.rl.agent import load_agent_folder

    return load_agent_folder(Path(ref), world)


def _verbs() -> dict:
    from workbench.rl import verbs

    return {
        "world": world,
        "eval": verbs.evaluate_subject,
        "hooks": verbs.hook_shapes,
        "steer": verbs.steer_coinrun,
        "probe": verbs.probe_coinrun,
        "collect": verbs.collect_coinrun,
    }


KIND = SubjectKind(
    name="coinrun",
    summary="native CoinRun agents (artifact folders; egocentric 5-plane observations, 6 actions)",
    load=load,
    verbs=_verbs(),
)
