"""Where is the cheese represented? Spatial location probes at each layer of a maze policy.

For each layer: fit a 1x1 spatial probe (see `workbench.probes`) on activations at the start position of `n_fit`
mazes from one split, predict the cheese's cell on `n_test` held-out mazes (disjoint level seeds) from both splits,
and report top-1 accuracy with Wilson CIs. Two baselines keep it honest: chance (1 / number of cells on the layer's
grid that are ever free) and a control probe fitted on shuffled labels (cheese cells permuted across mazes): a probe
that only learned the cell *prior* scores well on the control too.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.probes import fit_spatial_probe, layer_cell_index, top1_accuracy
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import MazeLevels
from workbench.rl.steering import activations_at, check_layer

DEFAULT_LAYERS = (
    "embedder.block1.res1.resadd_out",
    "embedder.block1.res2.resadd_out",
    "embedder.block2.res1.resadd_out",
    "embedder.block2.res2.resadd_out",
    "embedder.block3.res2.resadd_out",
)


def _labels(levels: MazeLevels, grid: int) -> torch.Tensor:
    w = levels.world_size
    return torch.as_tensor(layer_cell_index(levels.cheese[:, 0] * w + levels.cheese[:, 1], w, grid, levels.PIXELS))


def cheese_location_probes(
    agent: Agent,
    layers: tuple[str, ...] | list[str] = DEFAULT_LAYERS,
    fit_split: str = "ood",
    n_fit: int = 2000,
    n_test: int = 500,
    seed: int = 0,
) -> list[dict]:
    """One row per (layer, test split): top-1 accuracy of the probe and of the shuffled-label control, with CIs."""
    for layer in layers:
        check_layer(agent, layer)
    if n_fit < 10 or n_test < 1:
        raise WorkbenchError(f"need n_fit >= 10 and n_test >= 1, got {n_fit}, {n_test}")
    world = agent.world
    fit_levels = world.levels(fit_split, n_fit, seed)
    # Held-out mazes: a different seed stream, and any level seed seen in fitting is dropped.
    test_levels = {s: world.levels(s, n_test, seed + 7_777_777) for s in world.splits}
    seen = set(fit_levels.seeds.tolist())
    test_levels = {s: lv.select(np.array([x not in seen for x in lv.seeds.tolist()])) for s, lv in test_levels.items()}
    rng = np.random.default_rng(seed)
    rows = []
    for layer in layers:
        acts = activations_at(agent, fit_levels, layer)
        if acts.ndim != 4:
            raise WorkbenchError(f"{layer} is not a spatial (C, H, W) layer")
        grid = acts.shape[-1]
        y = _labels(fit_levels, grid)
        probe = fit_spatial_probe(acts, y)
        control = fit_spatial_probe(acts, y[torch.as_tensor(rng.permutation(len(y)))])
        for split, lv in test_levels.items():
            test_acts = activations_at(agent, lv, layer)
            y_test = _labels(lv, grid)
            acc, ctrl = top1_accuracy(probe, test_acts, y_test), top1_accuracy(control, test_acts, y_test)
            rows.append(
                {
                    "layer": layer,
                    "grid": f"{grid}x{grid}",
                    "fit_split": fit_split,
                    "test_split": split,
                    "top1": acc["rate"],
                    "ci95": acc["ci95"],
                    "n": acc["n"],
                    "control_top1": ctrl["rate"],
                    "control_ci95": ctrl["ci95"],
                    "chance": 1.0 / max(1, int(np.unique(y.numpy()).size)),
                }
            )
    return rows
