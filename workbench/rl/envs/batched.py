"""What every numpy-batched native env does the same way at its episode boundaries: choose the levels a reset starts
from, and hand out a finished episode's record under Gymnasium's masked-info convention.

Why one module: the maze, CoinRun, colour-shape and keys-chests envs each wrote these lines again, and the trackers
(`workbench.rl.episodes.FirstEpisodeTracker`) read exactly this convention: `info[key][i]` is valid where
`info["_" + key][i]`. The envs differ in what they record and how they generate levels; those stay in each env.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError


def reset_levels(options: dict | None, num_envs: int, fresh: Callable[[int], Any]) -> Any:
    """The levels a reset starts from: `options["levels"]` (one per env) when given, else `fresh(num_envs)`."""
    levels = (options or {}).get("levels")
    if levels is None:
        return fresh(num_envs)
    if len(levels) != num_envs:
        raise WorkbenchError(f"reset got {len(levels)} levels for {num_envs} environments")
    return levels


def masked_info(record: dict[str, np.ndarray], done: np.ndarray) -> dict:
    """Each (N,) array of `record` under its key, valid where `done` (its mask, a copy, under `"_" + key`)."""
    info: dict = {}
    for key, value in record.items():
        info[key] = value
        info["_" + key] = done.copy()
    return info
