"""What experiments need from an RL subject's world, as one protocol every env kind implements.

Why: evaluation, steering, probes, vector fields and collection are the same experiments on a native maze, a real
procgen maze or a user's env. They need levels per split (the same seed gives the same levels, so conditions are
compared on the same units), observations of those levels, and one episode per level with goal-outcome records.
Each kind's folder implements this once (`workbench/rl/maze/kind.py`, `coinrun/kind.py`, `procgen/kind.py`).

Levels objects carry their own `observe()` (the observation batch the policy sees) and `ACTION_GROUPS` (which
policy actions move up, down, left, right, for maze-like worlds), so maze analyses written against `MazeLevels`
run unchanged on procgen mazes, whose levels are `MazeLevels` with the procgen state kept alongside.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
from torch import nn


@runtime_checkable
class World(Protocol):
    """An env kind as experiments see it.

    Attributes:
        kind: the registry kind (`maze`, `coinrun`, `procgen-maze`, ...).
        family: which analyses apply (`maze`: grids with cheese and corner; `coinrun`: coin and exit).
        config: the env config dataclass (recorded with every dataset and result).
        splits: the distribution names (`train`, `ood`).
        rate_keys: the goal-outcome keys its records report.
        rollout_states: whether collectors can record every state of a rollout (native envs expose their state
            each step; procgen levels give start states only).
    """

    kind: str
    family: str
    config: Any
    splits: tuple[str, ...]
    rate_keys: tuple[str, ...]
    rollout_states: bool

    def levels(self, split: str, n: int, seed: int) -> Any:
        """`n` levels of `split`; the same seed gives the same levels (and the same terrain under every split)."""
        ...

    def run(self, policy: nn.Module, levels: Any, *, seed: int = 0, fwd_hooks=(), greedy: bool = False) -> Any:
        """One episode per level, all at once, hooks on every forward pass; records with `flags()` and `rates()`."""
        ...

    def observe(self, levels: Any) -> np.ndarray:
        """The (N, C, H, W) uint8 observation batch of the levels' current states."""
        ...


def check_split(world: World, split: str) -> None:
    """One line naming the valid splits when `split` is not one of the world's."""
    from workbench.errors import unknown

    if split not in world.splits:
        raise unknown("split", split, world.splits)
