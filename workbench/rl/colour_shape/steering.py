"""Colour and shape directions, and steering along each: does pushing the colour (shape) cue move colour_first?

Direction (difference of means, paired): on start states of `direction_episodes` `ood` levels (a seed stream disjoint
from the evaluation's), the colour direction is mean over levels of act(level) - act(the same level with the goal
colour replaced by another colour: `ColourShapeLevels.recoloured("colour")`); the shape direction likewise with the
goal shape replaced. Everything else -- cells, agent, the other attribute -- is equal in each pair.

Steering adds `coef * direction` at one hook on every forward pass during fresh `ood` rollouts and compares, on the
same levels and action seed, with the un-intervened run and a random Gaussian direction of equal norm
(`workbench.rl.steering.compare_interventions`): rates with Wilson intervals and paired differences with bootstrap
intervals. `data["effect"]` / `data["ci95"]` is the steered change in colour_first, `data["control_effect"]` the
control's, so a battery reads them by name.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.rl.agent import Agent
from workbench.rl.colour_shape.rollout import RATE_KEYS
from workbench.rl.steering import activations_at, check_layer
from workbench.rl.verbs import VerbResult
from workbench.rl.world import check_split

VECTORS = ("colour", "shape")
DEFAULT_LAYER = "embedder.block2.res1.resadd_out"
FIT_SEED_OFFSET = 1_000_003


def cue_direction(agent: Agent, which: str, layer: str, episodes: int = 500, seed: int = 0) -> tuple[Tensor, dict]:
    """The `which` ("colour" or "shape") direction at `layer` (one example's activation shape) and its record."""
    if which not in VECTORS:
        raise unknown("vector", which, VECTORS)
    levels = agent.world.levels("ood", episodes, seed)
    diff = activations_at(agent, levels, layer) - activations_at(agent, levels.recoloured(which), layer)
    vec = diff.mean(0)
    return vec, {"pairs": len(levels), "seed": seed, "norm": float(torch.linalg.vector_norm(vec))}


def steer(
    agent: Agent,
    *,
    vector: str = "colour",
    coef: float = 1.0,
    layer: str = DEFAULT_LAYER,
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    direction_episodes: int = 500,
) -> dict:
    """Baseline / steered / equal-norm random control on `episodes` levels of `split`; JSON-ready."""
    from workbench.rl.steering import compare_interventions

    if vector not in VECTORS:
        raise unknown("vector", vector, VECTORS)
    check_layer(agent, layer)
    check_split(agent.world, split)
    if episodes < 1 or direction_episodes < 1:
        raise WorkbenchError(f"episodes and direction episodes must be >= 1, got {episodes}, {direction_episodes}")
    vec, info = cue_direction(agent, vector, layer, direction_episodes, seed + FIT_SEED_OFFSET)
    levels = agent.world.levels(split, episodes, seed)
    result = compare_interventions(agent, levels, vec, coef, layer, per_level=False, seed=seed)
    steered, control = result["effects"]["steered"]["colour_first"], result["effects"]["control"]["colour_first"]
    return {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "vector": vector,
        "coef": coef,
        "layer": layer,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "direction": info,
        **result,
        "effect": steered["diff"],
        "ci95": steered["ci95"],
        "control_effect": control["diff"],
        "control_ci95": control["ci95"],
        "condition_ci95": result["ci95"],
    }


def steer_verb(
    agent: Agent,
    *,
    vector: str = "colour",
    probe_episodes: int = 500,
    coef: float = 1.0,
    layer: str = DEFAULT_LAYER,
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    **_: Any,
) -> VerbResult:
    """Steer along the colour or shape direction (`--vector colour|shape`; the CLI's maze default `cheese` means
    colour); the direction is fitted on `probe_episodes` levels disjoint from the evaluation's."""
    vector = "colour" if vector == "cheese" else vector
    r = steer(
        agent, vector=vector, coef=coef, layer=layer, split=split, episodes=episodes, seed=seed,
        direction_episodes=probe_episodes,
    )  # fmt: skip
    return VerbResult(r, steering_text(r))


def steering_text(r: dict) -> str:
    lines = [
        f"{r['artifact']}: {r['vector']} direction x {r['coef']:+g} at {r['layer']} on {r['episodes']} {r['split']} "
        f"levels (seed {r['seed']}); direction from {r['direction']['pairs']} paired levels, norm "
        f"{r['direction']['norm']:.3f}",
        f"{'condition':>10} " + " ".join(f"{k:>22}" for k in RATE_KEYS),
    ]
    for cond in ("baseline", "steered", "control"):
        c = r[cond]
        cells = [f"{c['rates'][k]:.3f} [{c['ci95'][k][0]:.2f},{c['ci95'][k][1]:.2f}]" for k in RATE_KEYS]
        lines.append(f"{cond:>10} " + " ".join(f"{x:>22}" for x in cells))
    for cond in ("steered", "control"):
        e = r["effects"][cond]
        cells = [f"{e[k]['diff']:+.3f} [{e[k]['ci95'][0]:+.2f},{e[k]['ci95'][1]:+.2f}]" for k in RATE_KEYS]
        lines.append(f"{'d ' + cond:>10} " + " ".join(f"{x:>22}" for x in cells))
    return "\n".join(lines)
