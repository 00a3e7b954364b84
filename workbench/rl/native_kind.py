"""The parts every native RL kind's `kind.py` shares: its world built from an env config, agent loading, the
standard verb table, a world that plays through its rollout module, and lazy registry entries.

Why one module: maze, CoinRun, colour-shape and keys-chests each wrote the same `world(env_config, where)`, `load`,
`levels`/`run` (delegating to the kind's rollout module), the `world`/`eval`/`hooks` verbs and one small importing
function per `EnvKind` entry. A kind's `kind.py` now says only what is its own: names, observations, its verbs,
its policy shape and description.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from workbench.recipes import from_table


class RolloutWorld:
    """Mixin for a native world dataclass with a `config` field: `levels` and `run` are the kind's rollout module's
    `levels_for` and `run_episodes` (named by the class attribute `rollout`), `observe` the levels' own."""

    rollout: ClassVar[str]
    config: Any

    def _module(self) -> Any:
        return importlib.import_module(self.rollout)

    def levels(self, split: str, n: int, seed: int) -> Any:
        return self._module().levels_for(split, n, seed, self.config)

    def run(self, policy: nn.Module, levels: Any, *, seed: int = 0, fwd_hooks=(), greedy: bool = False) -> Any:
        return self._module().run_episodes(policy, levels, self.config, seed=seed, fwd_hooks=fwd_hooks, greedy=greedy)

    def observe(self, levels: Any) -> Any:
        return levels.observe()


def world_for(world_cls: Callable[[Any], Any], config_cls: type, env_config: Any = None, where: Any = None) -> Any:
    """`world_cls(config)` for an env config: a `config_cls`, a dict of its fields (an artifact's env section, checked
    by `workbench.recipes.from_table`), or None (the defaults)."""
    if env_config is None or isinstance(env_config, config_cls):
        return world_cls(env_config or config_cls())
    return world_cls(from_table(config_cls, dict(env_config), str(where or "env config")))


def load_folder(ref: str, world: Callable[..., Any]) -> Any:
    """An agent artifact folder, its world built by `world` (`workbench.rl.agent.load_agent_folder`)."""
    from workbench.rl.agent import load_agent_folder

    return load_agent_folder(Path(ref), world)


def rl_verbs(world: Callable[..., Any], own: dict[str, Callable[..., Any]]) -> dict:
    """The verb table of a native kind: `world`, the generic `eval` and `hooks` (`workbench.rl.verbs`), then the
    kind's `own` verbs (which may replace `eval`, keeping its place)."""
    from workbench.rl import verbs as generic

    return {"world": world, "eval": generic.evaluate_subject, "hooks": generic.hook_shapes, **own}


@dataclass(frozen=True)
class Lazy:
    """A registry entry that imports `target` ("module:attr") on its first call and calls it: kinds register their
    env, expert and features without importing them (and their dependencies) at registration."""

    target: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)(*args, **kwargs)
