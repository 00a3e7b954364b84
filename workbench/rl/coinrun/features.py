"""Feature views of CoinRun subjects (native and procgen CoinRun): the generic RL views with CoinRun's labels.

Why so little: a CoinRun latent is read on the states the agent visits (rollout states of OOD levels, where the coin
is away from the exit), its top states are named by where the coin is relative to the agent (`coin_visible`,
`coin_dx`, `coin_dy`), and steering with it is the generic RL comparison (`workbench.sae.views.steer_rl`): the
decoder direction added at every cell, coin / exit / exit-without-coin rates against the un-intervened run and an
equal-norm random direction, with Wilson and paired bootstrap intervals.

An SAE card (`workbench sae train`) adds goal alignment against the coin's cell of the egocentric view on rollout
states (at the start the coin is mostly out of view); fidelity scores the first goal rate (`coin`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.sae.views import CardAnalyses, GoalCells, align_goal_cells, rl_views

LABELS = ("level_seed", "step", "coin_visible", "coin_dx", "coin_dy", "exit_dx", "outcome_coin")
"""The label columns of the top-activating table (those the dataset has: procgen start states have fewer)."""


def coin_cell_labels(ds: Any, grid: tuple[int, int]) -> np.ndarray:
    """(N, H*W) bool: True at the layer cell that covers the coin in the agent's egocentric window (rows whose coin
    is gone or out of view are all False). The window is (2 * view + 1) cells wide, centred on the agent, so the
    coin sits at window cell (view + coin_dy, view + coin_dx)."""
    from workbench.probes import layer_cell_index

    h, w = grid
    if h != w:
        raise WorkbenchError(f"coin labels need a square layer grid, got {grid}")
    view = int((ds.meta.get("source") or {}).get("env_config", {}).get("view", 6))
    size = 2 * view + 1
    visible = ds.label("coin_visible").astype(bool)
    r = np.clip(view + ds.label("coin_dy").astype(np.int64), 0, size - 1)
    c = np.clip(view + ds.label("coin_dx").astype(np.int64), 0, size - 1)
    idx = layer_cell_index(r * size + c, size, h)
    labels = np.zeros((len(ds), h * w), dtype=bool)
    labels[np.arange(len(ds)), idx] = visible
    return labels


GOAL = GoalCells(coin_cell_labels, "coin at this position of the egocentric view (layer grid)")
"""CoinRun's goal cells: the coin's cell of the egocentric window mapped onto the layer grid."""


def card(
    sae: Any, subject: Any, hook: str, *, align_episodes: int, steer_episodes: int, seed: int, progress: bool
) -> CardAnalyses:
    """Position-layout SAE on a conv hook: goal alignment against the coin's cell on rollout states (the same cap
    per episode as the training data; `align_episodes` levels, half as many held out). `steer_episodes` is not
    used (the Features page steers CoinRun latents)."""
    got = align_goal_cells(
        sae, subject, hook, GOAL, states="rollout", align_episodes=align_episodes, seed=seed, progress=progress
    )
    if got is None:
        return CardAnalyses()
    ga = got[0]
    ga.pop("directions")
    return CardAnalyses(metrics={"goal_alignment": ga})


VIEWS = rl_views(states="rollout", label_columns=LABELS, card=card, goal_cells=GOAL)
"""The views of every CoinRun kind (`coinrun`, `procgen-coinrun`)."""
