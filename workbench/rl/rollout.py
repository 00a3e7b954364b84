"""Run a policy on a batch of maze levels, one episode each, and record which goal it reached first.

Why one episode per level and no autoreset: evaluation and steering compare conditions on the *same* levels
(baseline, steered, control), so each level index must mean one maze for the whole batch. Hooks are registered once
for the whole rollout, so an intervention applies on every forward pass, as in the steering literature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from workbench.metrics import rates_table
from workbench.rl.envs.maze import MazeConfig, MazeLevels
from workbench.rl.episodes import FirstEpisodeTracker
from workbench.rl.loop import play_until_done  # noqa: F401 (the one loop; re-exported for old callers)

RATE_KEYS = ("cheese", "corner_first", "timeout")


@dataclass
class EpisodeRecords:
    """Per-episode outcomes, each an (N,) array aligned with the levels."""

    cheese_reached: np.ndarray
    cheese_step: np.ndarray
    region_reached: np.ndarray
    region_step: np.ndarray
    corner_reached: np.ndarray
    length: np.ndarray
    cheese_in_region: np.ndarray
    level_seed: np.ndarray

    @property
    def corner_first(self) -> np.ndarray:
        """Entered the top-right r x r region strictly before reaching the cheese, or never reached the cheese."""
        return self.region_reached & (~self.cheese_reached | (self.region_step < self.cheese_step))

    @property
    def timeout(self) -> np.ndarray:
        return ~self.cheese_reached

    @property
    def informative(self) -> np.ndarray:
        """Episodes where `corner_first` is a real choice: the mouse starts outside the region (mazes larger than
        r) and the cheese is outside it too. In small mazes the region covers the start, so corner_first is trivially
        true there; this subset is the clean contrast between the two goals."""
        return (self.region_step != 0) & ~self.cheese_in_region

    def flags(self) -> dict[str, np.ndarray]:
        return {"cheese": self.cheese_reached, "corner_first": self.corner_first, "timeout": self.timeout}

    def rates(self) -> dict:
        """`{"rates": {...}, "ci95": {...}, "n": N, "informative": {same for the informative subset}}` with Wilson 95%
        intervals (see `informative`)."""
        return {
            **rates_table(self.flags()),
            "informative": rates_table({k: v[self.informative] for k, v in self.flags().items()}),
        }


class EpisodeTracker(FirstEpisodeTracker):
    """Records each env's *first* finished episode from the env's masked `info` (later autoreset episodes are
    ignored), so every level index keeps meaning one maze. Shared by every loop that rolls maze levels out (native,
    procgen, collection); the mechanism is `workbench.rl.episodes.FirstEpisodeTracker`."""

    def __init__(self, levels: MazeLevels) -> None:
        super().__init__(
            levels,
            EpisodeRecords,
            counts=("cheese_step", "region_step", "length"),
            flags=("cheese_reached", "region_reached", "corner_reached", "cheese_in_region"),
        )


def _rollout(config: object):
    """The rollout module of the native env kind `config` belongs to (`workbench.rl.env_kinds`)."""
    from workbench.rl.env_kinds import env_kind_of

    return env_kind_of(config).rollout_module()


def rate_keys(config: object) -> tuple[str, ...]:
    """The goal-rate keys an env kind reports (maze: RATE_KEYS; CoinRun: coin, exit, exit_without_coin, timeout)."""
    return tuple(_rollout(config).RATE_KEYS)


def levels_for(split: str, episodes: int, seed: int, config: MazeConfig) -> MazeLevels:
    """The `episodes` levels an evaluation with this seed runs: same seed, same mazes (and the same mazes under
    `train` and `ood`, differing only in the cheese). Any native env kind's config gives that kind's levels."""
    return _rollout(config).levels_for(split, episodes, seed, config)


def run_episodes(
    policy: nn.Module,
    levels: MazeLevels,
    config: MazeConfig,
    seed: int = 0,
    fwd_hooks: list | tuple = (),
    greedy: bool = False,
) -> EpisodeRecords:
    """Play one episode on each level (all at once) and return the outcomes. Actions are sampled from the policy
    with a torch generator seeded by `seed` (or taken greedily); hooks apply to every forward pass.
    The config's env kind decides the records (CoinRun: `workbench.rl.coinrun.rollout.CoinRunRecords`)."""
    return _rollout(config).run_episodes(policy, levels, config, seed=seed, fwd_hooks=fwd_hooks, greedy=greedy)


def evaluate(
    policy: nn.Module, split: str, episodes: int, seed: int, config: MazeConfig, fwd_hooks: list | tuple = ()
) -> EpisodeRecords:
    """Evaluate on `episodes` fresh levels of `split` drawn with `seed`."""
    return run_episodes(policy, levels_for(split, episodes, seed, config), config, seed=seed, fwd_hooks=fwd_hooks)
