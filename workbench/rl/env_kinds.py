"""Native trainable env kinds: the one registry between recipe training, evaluation, agent loading and the envs.

Why a registry: `workbench train`, `evaluate`, `run_episodes`, behaviour cloning, the card writer and the agent checks
all need per-env facts (the config class, the batched env, the policy shape, the expert, the goal-rate keys). Before,
each of them branched on the config's type. Now each native env declares one `EnvKind` in its own package (next to its
subject kind, e.g. `workbench/rl/maze/kind.py: ENV`), and generic code asks this module. A new native env is a
package plus one line in `_BUILTIN` (or `register_env_kind` from Python).

Real procgen kinds are not here: they are played through procgen itself and trained by `workbench.rl.procgen.train`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError, unknown


@dataclass(frozen=True)
class EnvKind:
    """Everything generic RL code needs to know about one native env."""

    name: str
    """The env kind as recipes and artifact configs name it (`[env] kind = ...`)."""
    config: type
    """The env's config dataclass, built from a recipe's `[env]` table (unknown keys are refused by name)."""
    vec_env: Callable[..., Any]
    """`vec_env(num_envs, split, config)`: the Gymnasium-style batched env PPO and behaviour cloning step."""
    policy_shape: Callable[[Any], dict[str, int]]
    """`policy_shape(config)`: the `in_channels`, `obs_size` and `n_actions` a policy for this env must have."""
    rollout: str
    """Module with `RATE_KEYS`, `levels_for(split, n, seed, config)` and
    `run_episodes(policy, levels, config, seed=, fwd_hooks=, greedy=)` returning records with `.rates()`."""
    expert: Callable[..., Any]
    """`expert(split, config, bc_config) -> (obs uint8 (S, C, H, W), actions (S,))`: behaviour-cloning data."""
    expert_phrase: str
    """The expert in words, for the card ("the shortest-path-to-cheese expert")."""
    describe: Callable[[Any, str], str]
    """`describe(config, split)`: the card's one-sentence environment description."""
    rate_notes: str
    """The card's note defining each goal-rate key."""
    splits: tuple[str, ...] = ("train", "ood")
    """The splits a recipe may train on and the card evaluates."""
    informative_rows: bool = False
    """The card adds, per split, a row for the records' `informative` subset (levels where the goals part)."""
    proxy: tuple[str, str] | None = None
    """(rate key, store metric) of proxy-goal pursuit out of distribution on informative levels, e.g.
    `("corner_first", "ood.informative.corner_first")`: what a population of seeds (`workbench.sweep`) stores per run
    and the goal audit (`workbench.audit`) labels seeds by. None: the kind has no proxy measure (no sweep audit)."""

    def rollout_module(self) -> Any:
        return importlib.import_module(self.rollout)

    @property
    def rate_keys(self) -> tuple[str, ...]:
        return tuple(self.rollout_module().RATE_KEYS)


_BUILTIN: dict[str, str] = {
    "maze": "workbench.rl.maze.kind:ENV",
    "coinrun": "workbench.rl.coinrun.kind:ENV",
    "keys-chests": "workbench.rl.keys_chests.kind:ENV",
    "colour-shape": "workbench.rl.colour_shape.kind:ENV",
}
_KINDS: dict[str, EnvKind] = {}


def register_env_kind(kind: EnvKind) -> EnvKind:
    """Add (or replace) a native env kind from Python."""
    if not isinstance(kind, EnvKind):
        raise WorkbenchError(f"register_env_kind takes an EnvKind, got {type(kind).__name__}")
    _KINDS[kind.name] = kind
    return kind


def env_kind_names() -> list[str]:
    """Every native env kind, built-ins first in their registration order."""
    return list(dict.fromkeys([*_BUILTIN, *_KINDS]))


def env_kind(name: str) -> EnvKind:
    """The native env kind `name` (built-ins import on first use); unknown -> the nearest names."""
    if name not in _KINDS:
        if name not in _BUILTIN:
            raise WorkbenchError(unknown("env kind", str(name), env_kind_names()))
        module, _, attr = _BUILTIN[name].partition(":")
        _KINDS[name] = getattr(importlib.import_module(module), attr)
    return _KINDS[name]


def env_kind_of(config: Any) -> EnvKind:
    """The native env kind whose config class `config` is an instance of."""
    for name in env_kind_names():
        kind = env_kind(name)
        if isinstance(config, kind.config):
            return kind
    raise WorkbenchError(
        f"{type(config).__name__} is not the config of a native env kind (valid: {', '.join(env_kind_names())})"
    )


def env_configs() -> dict[str, type]:
    """Env kind -> config dataclass, for every native kind."""
    return {name: env_kind(name).config for name in env_kind_names()}
