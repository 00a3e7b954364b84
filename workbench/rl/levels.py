"""Batches of levels as dataclasses of per-level arrays, and the one way to take a sub-batch of them.

Why: every env's levels (`MazeLevels`, `CoinRunLevels`, `ColourShapeLevels`, `KeysChestsLevels`) hold one array per
field with the level on the first axis, plus scalar settings (the maze's region). A sub-batch indexes every array field
and keeps the rest; written once here instead of a field list per class that must track every new field.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import TypeVar

import numpy as np

L = TypeVar("L")


def select_rows(levels: L, index: np.ndarray | slice) -> L:
    """A sub-batch (copies) of `levels`: every ndarray field indexed on its first axis, other fields kept."""
    rows = {}
    for f in fields(levels):  # type: ignore[arg-type]
        value = getattr(levels, f.name)
        if isinstance(value, np.ndarray):
            rows[f.name] = value[index].copy()
    return replace(levels, **rows)  # type: ignore[type-var]
