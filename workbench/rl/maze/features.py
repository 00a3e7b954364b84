"""Feature views of maze-family subjects (native and procgen maze): what an SAE latent does in a maze.

Why its own views: a maze latent is read where the maze analyses are strongest. The sample is start states (the
mouse at its start, the state the cheese-vector and probe results are about); top-activating states are drawn as maze
renders with the latent's map over them (`workbench.sae.analysis.draw_top_activating`; procgen frames get the label
table only); steering is the vector field of one OOD maze before and after the intervention, next to the same
intervention with a random direction (or a random other latent), so an arrow change can be told from any change.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.sae.views import Control, FeatureSample, SteerResult, decoder_direction, registered_subject, rl_views

MODES = ("ablate decoder direction", "add decoder direction", "clamp latent to 0 (SAE, error kept)")
"""The maze interventions: ablate or add the latent's decoder direction at every cell, or clamp it in the SAE."""
CELL_PX = 8  # the maze under the arrows at 8 px a cell, as the app's other vector fields

CONTROLS = (
    Control("mode", "feat_mode", "Intervention", "radio", MODES[0], options=MODES),
    Control("coef", "feat_coef", "Coefficient (add)", "slider", 3.0, low=-10.0, high=10.0, step=0.5),
    Control("seed", "feat_seed", "OOD maze", "int", 0, low=0, step=1),
)


def top_figure(sample: FeatureSample, latent: int, n: int) -> tuple[Any, str]:
    """Maze renders of the top start states with the latent's map; none for procgen frames (table only)."""
    ds = sample.data
    if (ds.meta.get("source") or {}).get("pixels"):
        return None, "The top-activating states are procgen frames; the table above names their levels."
    from workbench.sae.analysis import draw_top_activating

    fig = draw_top_activating(ds, sample.feats, latent, n=n)
    return fig, "Maze renders of the top-activating start states with the latent's map over the layer grid."


def _hooks(sae: Any, hook: str, latent: int, mode: str, coef: float, direction) -> list:
    from workbench.interventions import ablate_direction, add_vector, clamp_latent

    if mode == MODES[0]:
        return [(hook, ablate_direction(direction))]
    if mode == MODES[1]:
        return [(hook, add_vector(direction, coef))]
    return [(hook, clamp_latent(sae, latent, 0.0))]


def steer(
    sae: Any, subject: Any, latent: int, *, polarity: int = 1, mode: str = MODES[0], coef: float = 3.0, seed: int = 0
) -> SteerResult:
    """Vector fields of OOD maze `seed` (the maze `workbench vector-field SUBJECT --seed S` draws) without and with
    the intervention, and with its control: the same intervention on an equal-norm random direction (seeded by the
    maze), or for the clamp another latent chosen at random. `polarity` is not used."""
    from workbench.interventions import random_like
    from workbench.rl.vector_field import draw, vector_field
    from workbench.sae.train import sae_info

    if mode not in MODES:
        raise WorkbenchError(f"unknown maze intervention {mode!r}; choose one of {', '.join(MODES)}")
    agent = registered_subject(subject)
    info = sae_info(sae)
    hook, d_sae = info["hook"], int(info["d_sae"])
    direction = decoder_direction(sae, latent)
    level = agent.world.levels("ood", 1, int(seed))
    rng = np.random.default_rng(int(seed))
    other = int(rng.choice([i for i in range(d_sae) if i != int(latent)])) if d_sae > 1 else int(latent)
    if mode == MODES[2]:
        control_hooks = _hooks(sae, hook, other, mode, coef, direction)
        control_title = f"control: latent {other} clamped to 0"
    else:
        control_hooks = _hooks(sae, hook, latent, mode, coef, random_like(direction, seed=int(seed) + 1))
        control_title = "control: random direction"
    before = vector_field(agent.policy, level)
    after = vector_field(agent.policy, level, _hooks(sae, hook, latent, mode, float(coef), direction))
    control = vector_field(agent.policy, level, control_hooks)
    tag = f"{mode} (x{coef:+g})" if mode == MODES[1] else mode
    fig = draw([before, after, control], ["no intervention", f"latent {latent}: {tag}", control_title], cell_px=CELL_PX)
    moved = float(np.abs(after.arrows() - before.arrows()).sum(1).mean())
    moved_control = float(np.abs(control.arrows() - before.arrows()).sum(1).mean())
    caption = (
        f"OOD maze {seed}: the policy's expected move at every free cell without intervention, with latent {latent} "
        f"({tag}) at `{hook}`, and with the control: the same intervention on an equal-norm random direction (seed "
        f"{int(seed) + 1}), or for the clamp another latent drawn with seed {seed}. Arrow change: the mean over free "
        "cells of |delta row| + |delta col| of the expected move, against the un-intervened field."
    )
    return SteerResult(
        latent=int(latent),
        settings={"mode": mode, "coef": float(coef), "seed": int(seed)},
        figure=fig,
        metrics={
            "Mean arrow change per cell": f"{moved:.3f}",
            "Mean arrow change per cell (control)": f"{moved_control:.3f}",
        },
        caption=caption,
        data={
            "hook": hook,
            "cells": int(len(before.cells)),
            "arrow_change": moved,
            "arrow_change_control": moved_control,
        },
    )


VIEWS = rl_views(
    states="start",
    label_columns=("level_seed", "step", "cheese_cell"),
    top_figure=top_figure,
    controls=CONTROLS,
    steer=steer,
)
"""The views of every maze-family kind (`maze`, `procgen-maze`)."""
