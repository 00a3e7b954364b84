"""Feature views of maze-family subjects (native and procgen maze): what an SAE latent does in a maze.

Why its own views: a maze latent is read where the maze analyses are strongest. The sample is start states (the
mouse at its start, the state the cheese-vector and probe results are about); top-activating states are drawn as maze
renders with the latent's map over them (`workbench.sae.analysis.draw_top_activating`; procgen frames get the label
table only); steering is the vector field of one OOD maze before and after the intervention, next to the same
intervention with a random direction (or a random other latent), so an arrow change can be told from any change.

The same views carry the maze's part of an SAE card (`workbench sae train`): goal alignment against the cheese's
cell on start states, the steering comparison of the best cheese latent against the cheese vector, the probe, the
difference of means and a random direction, and the top-activating figure; fidelity's score is the discounted return
of reaching the cheese and its mean ablation the mean over the very levels' start states. Procgen Maze shares all
of it (its frames get no figure).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.sae.views import (
    CardAnalyses,
    Control,
    FeatureSample,
    GoalCells,
    SteerResult,
    align_goal_cells,
    decoder_direction,
    first_goal_score,
    registered_subject,
    rl_views,
)

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


# ------------------------------------------------------------------------------------------------- the SAE card
def cheese_cell_labels(ds: Any, grid: tuple[int, int]) -> np.ndarray:
    """(N, H*W) bool: True at the layer cell holding the cheese (rows without cheese are all False)."""
    from workbench.probes import layer_cell_index

    h, w = grid
    if h != w:
        raise WorkbenchError(f"cheese labels need a square layer grid, got {grid}")
    source = ds.meta.get("source") or {}
    world = int(source.get("world_size") or source.get("env_config", {}).get("world_size", 15))
    cells = ds.label("cheese_cell").astype(np.int64)
    idx = layer_cell_index(np.maximum(cells, 0), world, h, bool(source.get("pixels", False)))
    labels = np.zeros((len(ds), h * w), dtype=bool)
    labels[np.arange(len(ds)), idx] = cells >= 0
    return labels


GOAL = GoalCells(cheese_cell_labels, "cheese at this position (layer grid)")
"""The maze's goal cells: the cheese's cell mapped onto the layer grid (`workbench.probes.layer_cell_index`)."""


def card(
    sae: Any, subject: Any, hook: str, *, align_episodes: int, steer_episodes: int, seed: int, progress: bool
) -> CardAnalyses:
    """Position-layout SAE on a conv hook: goal alignment on start states (`align_episodes` levels, half as many
    held out), the steering comparison of the best latent (`steer_episodes` OOD levels) and `top_latent.png`
    (native mazes only: it redraws them from their labels). Nothing for another layout."""
    import tempfile
    from pathlib import Path

    from workbench.sae.analysis import draw_top_activating, latent_acts, steering_comparison, steering_table

    agent = registered_subject(subject)
    got = align_goal_cells(
        sae, subject, hook, GOAL, states="start", align_episodes=align_episodes, seed=seed, progress=progress
    )
    if got is None:
        return CardAnalyses()
    ga, _, test = got
    directions = ga.pop("directions")
    latent = ga["best_latent"]
    steer_result = steering_comparison(
        agent,
        sae,
        hook,
        latent,
        {
            "SAE decoder": directions["sae_decoder"],
            "probe": directions["probe"],
            "diff-of-means": directions["diff_of_means"],
        },
        episodes=steer_episodes,
        seed=seed,
    )
    table = steering_table(steer_result)
    files: dict[str, str | bytes] = {}
    if not (test.meta.get("source") or {}).get("pixels"):  # the figure redraws native mazes from their labels
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "top_latent.png"
            draw_top_activating(test, latent_acts(sae, test[hook]), latent, n=6, path=png)
            files["top_latent.png"] = png.read_bytes()
    return CardAnalyses(
        metrics={"goal_alignment": ga, "steering": steer_result, "steering_table": table},
        sections=("## Steering with the cheese latent vs the cheese vector and the probe\n\n" + table,),
        files=files,
    )


def score(records: Any, gamma: float) -> tuple[str, np.ndarray]:
    """`return`: gamma ** (steps - 1) when the mouse reached the cheese, else 0; records without `cheese_reached`
    put their first goal flag in that column."""
    if not hasattr(records, "cheese_reached"):
        return "return", first_goal_score(records, gamma)[1]
    return "return", np.where(records.cheese_reached, gamma ** (records.length - 1.0), 0.0)


def ablation_mean(subject: Any, levels: Any, hook: str, *, split: str, seed: int):
    """The mean activation at `hook` over the start states of exactly `levels` (`split` and `seed` not used)."""
    from workbench.rl.steering import activations_at

    return activations_at(registered_subject(subject), levels, hook).mean(0, keepdim=True)


VIEWS = rl_views(
    states="start",
    label_columns=("level_seed", "step", "cheese_cell"),
    top_figure=top_figure,
    controls=CONTROLS,
    steer=steer,
    card=card,
    goal_cells=GOAL,
    score=score,
    ablation_mean=ablation_mean,
)
"""The views of every maze-family kind (`maze`, `procgen-maze`)."""
