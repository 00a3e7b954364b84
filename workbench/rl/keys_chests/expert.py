"""The keys-and-chests expert and its behaviour-cloning data.

The expert walks the shortest path to the nearest useful object: a key while one is needed (it holds fewer keys than
there are closed chests), a chest while it holds a key. Keys that are not needed are walked around where possible.
On the `train` split a key is always needed (keys never outnumber chests), so its demonstrations are explained
equally well by "collect keys" and by "open chests": the ambiguity the organism is for. On `mixed` levels it meets
surplus keys and demonstrates leaving them, which the control twin learns from.

States come from a noisy behaviour policy (the expert's action, replaced by a random one with probability `noise`),
so the data covers states off the expert's path; every label is the expert's action there.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.rl.envs.maze import greedy_actions
from workbench.rl.keys_chests.env import N_ACTIONS, KeysChestsConfig, KeysChestsLevels, KeysChestsVecEnv

UNREACHABLE = -1


def distance_to_any(free: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """(N, W, W) int64 steps from every free cell to the nearest source cell (multi-source BFS by relaxation over
    the batch); UNREACHABLE (-1) on blocked cells and where no source can be reached."""
    n, w = free.shape[0], free.shape[-1]
    big = np.iinfo(np.int64).max // 4
    dist = np.full((n, w + 2, w + 2), big, dtype=np.int64)
    dist[:, 1:-1, 1:-1] = np.where(sources & free, 0, big)
    for _ in range(w * w):
        inner = dist[:, 1:-1, 1:-1]
        nb = np.minimum.reduce([dist[:, :-2, 1:-1], dist[:, 2:, 1:-1], dist[:, 1:-1, :-2], dist[:, 1:-1, 2:]])
        new = np.where(free, np.minimum(inner, nb + 1), big)
        if np.array_equal(new, inner):
            break
        dist[:, 1:-1, 1:-1] = new
    out = dist[:, 1:-1, 1:-1]
    return np.where(out >= big, UNREACHABLE, out)


def expert_targets(levels: KeysChestsLevels) -> np.ndarray:
    """(N, W, W) bool: the cells the expert heads for (needed keys; chests while a key is held)."""
    needed = levels.key_needed()
    return (levels.keys & needed[:, None, None]) | (levels.chests & (levels.inventory > 0)[:, None, None])


def expert_actions(levels: KeysChestsLevels) -> np.ndarray:
    """(N,) the expert's action: a shortest-path step to the nearest target, around unneeded keys where a path exists
    without them (through them otherwise). Where there is no target (a finished episode) it moves up."""
    targets = expert_targets(levels)
    avoid = levels.keys & ~levels.key_needed()[:, None, None]
    free = ~levels.walls
    dist = distance_to_any(free & ~avoid, targets)
    rows = np.arange(len(levels))
    stuck = dist[rows, levels.agent[:, 0], levels.agent[:, 1]] == UNREACHABLE
    if stuck.any():  # an unneeded key walls the way: walk through it
        dist[stuck] = distance_to_any(free[stuck], targets[stuck])
    # the agent's own cell may be an avoided one (it cannot be: it would have been picked up), so greedy is safe
    action = greedy_actions(np.where(dist < 0, -1, dist), levels.agent)
    return np.where(action < 0, 0, action)


def collect_expert_data(split: str, env_config: KeysChestsConfig, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 5, W, W) uint8 observations and (S,) expert actions from noisy expert rollouts on `split` (autoreset
    episodes). `cfg` is a `workbench.rl.imitation.BCConfig` (states, noise, num_envs, seed)."""
    from workbench.rl.imitation import noisy_expert_data

    return noisy_expert_data(KeysChestsVecEnv(cfg.num_envs, split, env_config), expert_actions, N_ACTIONS, cfg)
