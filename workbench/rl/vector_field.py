"""Vector fields: the policy's action distribution at every free cell of one maze, from one batched forward pass.

Why batched: a vector field is the picture researchers look at most (Turner et al. 2023). Putting the mouse on each
of the K free cells gives K observations that differ only in the mouse channel; one forward over all K is >= 10x
faster than K forwards (see benchmarks/), which is what lets the app redraw it interactively.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from workbench.errors import WorkbenchError
from workbench.hooks import hooks
from workbench.policy import direction_probs, policy_logits
from workbench.rl.envs.maze import ACTION_DELTAS, MazeLevels, render


@dataclass
class VectorField:
    """`probs[k]` (4,) is the policy's action distribution with the mouse at `cells[k]` (row, col) of `level`."""

    level: MazeLevels
    cells: np.ndarray  # (K, 2)
    probs: np.ndarray  # (K, 4) over up, down, left, right

    def arrows(self) -> np.ndarray:
        """(K, 2) expected displacement (d_row, d_col) = sum_a p(a) * delta(a)."""
        return self.probs @ ACTION_DELTAS.astype(np.float64)

    def at(self, cell: tuple[int, int]) -> np.ndarray:
        """(4,) the action distribution with the mouse at `cell`."""
        hit = np.flatnonzero(np.all(self.cells == np.asarray(cell), axis=1))
        if hit.size == 0:
            raise WorkbenchError(f"cell {tuple(cell)} is not a free cell of this maze")
        return self.probs[hit[0]]


def vector_field(policy: nn.Module, level: MazeLevels, fwd_hooks: list | tuple = ()) -> VectorField:
    """Compute the vector field of `level` (a batch of one maze) in one forward pass, under optional hooks."""
    if len(level) != 1:
        raise WorkbenchError(f"vector_field takes one maze, got {len(level)}")
    cells = level.free_cells(0)
    batch = level.select(np.zeros(len(cells), dtype=np.int64)).with_mouse(cells)
    # Channels-last: torch's CPU convolutions skip per-layer reorders on it (2-3x faster on procgen's 64x64 frames);
    # the numbers are unchanged to float precision. Hooks see the same values (use .reshape, not .view, on them).
    obs = torch.as_tensor(batch.observe()).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), hooks(policy, fwd_hooks):
        probs = direction_probs(policy_logits(policy, obs), level.ACTION_GROUPS)
    return VectorField(level=level, cells=cells, probs=probs.double().numpy())


def vector_field_loop(policy: nn.Module, level: MazeLevels) -> VectorField:
    """The same field with one forward per cell: the slow reference the benchmark compares against."""
    cells = level.free_cells(0)
    rows = []
    with torch.no_grad():
        for cell in cells:
            obs = torch.as_tensor(level.with_mouse(cell[None, :]).observe())
            rows.append(direction_probs(policy_logits(policy, obs), level.ACTION_GROUPS)[0])
    return VectorField(level=level, cells=cells, probs=torch.stack(rows).double().numpy())


def draw(
    fields: list[VectorField],
    titles: list[str],
    path: str | Path | None = None,
    cell_px: int = 24,
    marks: list[tuple[int, int] | None] | None = None,
):
    """Draw fields side by side as arrows over the maze render; save a PNG when `path` is given. Returns the figure.
    `marks[i]` outlines one cell (e.g. the decision square) in panel i."""
    import matplotlib.pyplot as plt  # no backend switch: inline in Jupyter, Agg on a headless machine

    fig, axes = plt.subplots(1, len(fields), figsize=(4.2 * len(fields), 4.4), squeeze=False)
    for i, (field, title) in enumerate(zip(fields, titles, strict=True)):
        ax = axes[0, i]
        img = render(field.level, cell_px=cell_px)[0]
        ax.imshow(img)
        arrows = field.arrows()
        x = (field.cells[:, 1] + 0.5) * cell_px
        y = (field.cells[:, 0] + 0.5) * cell_px
        ax.quiver(
            x,
            y,
            arrows[:, 1],
            -arrows[:, 0],
            color="#c0392b",
            scale=1.0 / (0.45 * cell_px),
            scale_units="xy",
            angles="xy",
            width=0.006,
        )
        mark = marks[i] if marks else None
        if mark is not None and mark[0] >= 0:
            ax.add_patch(
                plt.Rectangle(
                    (mark[1] * cell_px, mark[0] * cell_px),
                    cell_px,
                    cell_px,
                    fill=False,
                    edgecolor="#8e44ad",
                    linewidth=2.5,
                )
            )
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=80)
        plt.close(fig)
    return fig
