"""Behaviour-cloning data for colour versus shape: noisy rollouts of the shortest-path expert on a training split.

Why: cloning gives a competent navigator in seconds, and the goal ambiguity survives intact: on `train` levels the
expert walks to the object that has both the goal colour and the goal shape, so its demonstrations are explained
equally well by "go to the yellow thing" and "go to the gem". On `train-shape` levels the goal's colour is random, so
only the shape explains them. The behaviour policy acts randomly with probability `noise`, so the data covers states
off the shortest path (DAgger's point); every label is the expert's action there.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.rl.colour_shape.env import ColourShapeConfig, ColourShapeLevels, ColourShapeVecEnv, shortest_path_actions


def expert_actions(levels: ColourShapeLevels) -> np.ndarray:
    """(N,) the first action of the shortest path to the paying object (the goal shape on `ood` levels), around
    the other objects."""
    return shortest_path_actions(levels, levels.paying.argmax(axis=1))


def collect_expert_data(split: str, config: ColourShapeConfig, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 8, W, W) uint8 observations and (S,) expert actions from noisy expert rollouts on `split`.
    `cfg` is a `workbench.rl.imitation.BCConfig` (states, noise, num_envs, seed)."""
    from workbench.rl.imitation import noisy_expert_data

    return noisy_expert_data(ColourShapeVecEnv(cfg.num_envs, split, config), expert_actions, 4, cfg)
