"""The colour-shape rollout contract for the env-kind registry: `RATE_KEYS`, `levels_for`, `run_episodes`, records.

One episode per level, no autoreset, actions sampled with a seeded torch generator, hooks on every forward pass
(`workbench.rl.loop.play_until_done`, through `workbench.rl.episodes`), so steering conditions compare on the same
levels and action seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from workbench.metrics import rates_table
from workbench.rl.colour_shape.env import ColourShapeConfig, ColourShapeLevels, ColourShapeVecEnv, generate_levels
from workbench.rl.episodes import FirstEpisodeTracker, play_levels, seeded_levels

RATE_KEYS = ("goal", "colour_first", "shape_first", "neither", "timeout")
"""`goal`: reached an object with the goal colour and shape (train only); `colour_first` / `shape_first`: the object
reached had the goal colour / the goal shape (on `ood` levels they exclude each other; reaching ends the episode, so
"first" is "only"); `neither`: reached an object with neither; `timeout`: reached nothing within the step limit."""


@dataclass
class ColourShapeRecords:
    """Per-episode outcomes, each an (N,) array aligned with the levels."""

    reached_any: np.ndarray
    reached_colour: np.ndarray
    reached_shape: np.ndarray
    paid: np.ndarray
    informative: np.ndarray
    length: np.ndarray
    level_seed: np.ndarray

    def flags(self) -> dict[str, np.ndarray]:
        return {
            "goal": self.reached_colour & self.reached_shape,
            "colour_first": self.reached_colour,
            "shape_first": self.reached_shape,
            "neither": self.reached_any & ~self.reached_colour & ~self.reached_shape,
            "timeout": ~self.reached_any,
        }

    def rates(self) -> dict:
        """`{"rates", "ci95", "n", "informative"}`: Wilson 95% intervals for RATE_KEYS, on all levels and on the
        informative ones (goal colour and goal shape on different objects: every `ood` level, no `train` level)."""
        return {
            **rates_table(self.flags()),
            "informative": rates_table({k: v[self.informative] for k, v in self.flags().items()}),
        }


class ColourShapeTracker(FirstEpisodeTracker):
    """Records each env's *first* finished episode from the env's masked `info` (autoreset episodes are ignored)."""

    def __init__(self, levels: ColourShapeLevels) -> None:
        super().__init__(
            levels,
            ColourShapeRecords,
            counts=("length",),
            flags=("reached_any", "reached_colour", "reached_shape", "paid", "informative"),
        )


def levels_for(split: str, episodes: int, seed: int, config: ColourShapeConfig) -> ColourShapeLevels:
    """The `episodes` levels an evaluation with this seed runs (the same layouts under every split)."""
    return seeded_levels(generate_levels, split, episodes, seed, config)


def run_episodes(
    policy: nn.Module,
    levels: ColourShapeLevels,
    config: ColourShapeConfig,
    *,
    seed: int = 0,
    fwd_hooks: list | tuple = (),
    greedy: bool = False,
) -> ColourShapeRecords:
    """One episode per level, all at once; hooks apply on every forward pass."""
    env = ColourShapeVecEnv(len(levels), split="ood", config=config)
    tracker = ColourShapeTracker(levels)
    return play_levels(
        policy, env, levels, tracker, max_steps=config.max_steps, seed=seed, fwd_hooks=fwd_hooks, greedy=greedy
    )


def preference_by_distance(records: ColourShapeRecords, levels: ColourShapeLevels) -> dict:
    """colour_first / shape_first / timeout rates (Wilson 95%) on the levels where the colour object is strictly nearer
    the start than the shape object (Manhattan distance), where the shape object is nearer, and where they tie: does
    an agent that reaches one of the split objects pick a feature, or the nearer object?"""
    near_c = np.abs(levels.cue_cell("colour") - levels.agent).sum(1)
    near_s = np.abs(levels.cue_cell("shape") - levels.agent).sum(1)
    flags = records.flags()
    keys = ("colour_first", "shape_first", "timeout")
    groups = {"colour_nearer": near_c < near_s, "shape_nearer": near_s < near_c, "tie": near_c == near_s}
    return {name: rates_table({k: flags[k][mask] for k in keys}) for name, mask in groups.items()}
