"""Where a subject kind's goal sits on a conv layer's grid (`GoalCells`), for goal alignment by position.

Why a module of its own: `workbench.sae.analysis.goal_alignment` reads a kind's goal cells and the kinds' feature
views (`workbench.sae.views`) call `goal_alignment`; both import this small module, which imports neither, so the
two stay free of an import cycle. A kind's cells come from its views (`FeatureViews.goal_cells`, in its package)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class GoalCells:
    """Per-token goal labels on a conv hook: where the goal is on the layer grid, for `goal_alignment`.

    Attributes:
        labels: `labels(ds, (H, W)) -> (N, H*W) bool`: True at the layer cell holding the goal in each dataset row
            (rows without the goal in view are all False).
        text: what a positive token means, for the card (`cheese at this position (layer grid)`).
    """

    labels: Callable[[Any, tuple[int, int]], Any]
    text: str


def goal_cells_of(kind: str) -> GoalCells:
    """The goal labels of registered kind `kind` (its views' `goal_cells`); a kind without any is one line naming
    the kinds that have them."""
    from workbench.subjects import get_kind, kinds

    views = get_kind(kind).features
    if views is None or views.goal_cells is None:
        have = [k for k in kinds() if getattr(get_kind(k).features, "goal_cells", None) is not None]
        raise WorkbenchError(
            f"{kind} subjects have no goal cells for goal alignment (kinds with them: {', '.join(have) or 'none'}); "
            "pass goal=GoalCells(labels, text) or register the kind with FeatureViews(goal_cells=...)"
        )
    return views.goal_cells
