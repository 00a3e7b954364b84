"""The verbs of RL subjects, written once against `Agent` and its `World`; kinds map verb names to these.

Why here and not in the CLI: the CLI, batteries, the app and notebooks all run the same experiments. Each verb
takes a loaded subject plus keyword options and returns a `VerbResult` (`to_json()` for machines, `text` for
people). Maze-family verbs serve native and procgen mazes alike; CoinRun verbs serve the native CoinRun.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.rl.agent import Agent
from workbench.rl.world import check_split


@dataclass
class VerbResult:
    """What a verb measured (`data`, JSON-ready), how to show it to a person (`text`), and the Python object it
    made where there is one (`value`: e.g. the `ActivationDataset` of `collect`)."""

    data: dict
    text: str
    value: Any = None

    def to_json(self) -> dict:
        return self.data


def _check_n(name: str, value: int, low: int = 1) -> None:
    if int(value) < low:
        raise WorkbenchError(f"{name} must be >= {low}, got {value}")


# ----------------------------------------------------------------------------------------------------------- eval
def evaluate_subject(agent: Agent, *, split: str = "ood", episodes: int = 500, seed: int = 0) -> VerbResult:
    """Goal rates with Wilson 95% intervals on `episodes` fresh levels of `split` (and on the informative subset,
    where the two goals differ)."""
    check_split(agent.world, split)
    _check_n("episodes", episodes)
    summary = agent.world.run(agent.policy, agent.world.levels(split, episodes, seed), seed=seed).rates()
    out = {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "env": agent.kind,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "rates": summary["rates"],
        "ci95": summary["ci95"],
        "informative": summary["informative"],
    }
    if "died" in summary:
        out["died"] = summary["died"]
    width = max(len(k) for k in out["rates"]) + 4
    lines = [
        f"{k:>{width}}: {v:.3f}  [{out['ci95'][k][0]:.3f}, {out['ci95'][k][1]:.3f}]" for k, v in out["rates"].items()
    ]
    if "died" in out:
        lo, hi = out["died"]["ci95"]
        lines.append(f"{'died':>{width}}: {out['died']['rate']:.3f}  [{lo:.3f}, {hi:.3f}]")
    inf = out["informative"]
    for key in [k for k in inf["rates"] if k not in ("timeout", "exit") and inf["n"] > 0]:
        lo, hi = inf["ci95"][key]
        lines.append(
            f"{key} on informative levels (the two goals differ; n={inf['n']}): {inf['rates'][key]:.3f}  "
            f"[{lo:.3f}, {hi:.3f}]"
        )
    return VerbResult(out, "\n".join(lines))


# ---------------------------------------------------------------------------------------------------------- hooks
def hook_shapes(agent: Agent) -> VerbResult:
    """Every hook name of the policy with its activation shape on one `ood` observation."""
    from workbench.hooks import hook_names, run_with_cache

    names = hook_names(agent.policy)
    obs = torch.as_tensor(agent.world.observe(agent.world.levels("ood", 1, 0)))
    with torch.no_grad():
        _, cache = run_with_cache(agent.policy, obs, names_filter=names)
    rows = [{"hook": n, "shape": list(cache[n].shape[1:]) if n in cache else None} for n in names]
    text = "\n".join(f"{r['hook']:45s} {tuple(r['shape']) if r['shape'] else '-'}" for r in rows)
    return VerbResult({"artifact": agent.name, "subject_kind": agent.kind, "hooks": rows}, text)


# ---------------------------------------------------------------------------------------------------------- steer
def _steer_text(result: dict) -> str:
    if "decision_square" in result:
        from workbench.report import steering_table

        return steering_table(result)
    from workbench.rl.coinrun.steering import steering_text

    return steering_text(result)


def steer_maze(agent: Agent, **options: Any) -> VerbResult:
    """Cheese vector (per maze) or probe direction; see `workbench.rl.steering.steer_maze`."""
    from workbench.rl.steering import steer_maze as run

    result = run(agent, **options)
    return VerbResult(result, _steer_text(result))


def steer_coinrun(agent: Agent, *, vector: str = "coin", probe_episodes: int = 300, **options: Any) -> VerbResult:
    """Coin vector from paired rollout states; see `workbench.rl.coinrun.steering.steer_coinrun`."""
    from workbench.rl.coinrun.steering import steer_coinrun as run

    vector = "coin" if vector == "cheese" else vector  # the CLI's default names the maze's vector
    keep = {k: options[k] for k in ("coef", "layer", "split", "episodes", "seed") if k in options}
    result = run(agent, vector, direction_episodes=probe_episodes, **keep)
    return VerbResult(result, _steer_text(result))


def steer_contrast(
    agent: Agent,
    *,
    vector: str = "coin",
    coef: float = -1.0,
    layer: str = "embedder.block2.res1.resadd_out",
    split: str = "ood",
    episodes: int = 200,
    seed: int = 0,
    **_: Any,
) -> VerbResult:
    """Per-level goal vector act(level) - act(level with the goal object removed) at the start state, added on every
    forward pass; baseline / steered / equal-norm control on the same levels (procgen CoinRun)."""
    from workbench.rl.steering import activations_at, check_layer, compare_interventions

    vector = "coin" if vector == "cheese" else vector
    if vector != "coin":
        from workbench.errors import unknown

        raise unknown("vector", vector, ["coin"])
    check_layer(agent, layer)
    check_split(agent.world, split)
    _check_n("episodes", episodes)
    levels = agent.world.levels(split, episodes, seed)
    vecs = activations_at(agent, levels, layer) - activations_at(agent, levels.without_coin(), layer)
    head = {"artifact": agent.name, "subject_kind": agent.kind, "vector": vector, "coef": coef, "layer": layer}
    result = {
        **head,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "direction": {
            "kind": "per-level start-state pairs (coin present - coin removed)",
            "pairs": len(levels),
            "episodes": episodes,
            "seed": seed,
            "norm": float(torch.linalg.vector_norm(vecs.flatten(1), dim=1).mean()),
        },
        **compare_interventions(agent, levels, vecs, coef, layer, per_level=True, seed=seed),
    }
    return VerbResult(result, _steer_text(result))


# ---------------------------------------------------------------------------------------------------------- probe
def probe_maze(
    agent: Agent,
    *,
    layers: list[str] | None = None,
    fit_split: str = "ood",
    n_fit: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> VerbResult:
    """Cheese-location spatial probes per layer, held out on both splits, with a shuffled-label control."""
    from workbench.report import probe_table
    from workbench.rl.cheese_probe import DEFAULT_LAYERS, cheese_location_probes

    check_split(agent.world, fit_split)
    rows = cheese_location_probes(agent, layers or list(DEFAULT_LAYERS), fit_split, n_fit or 2000, n_test or 500, seed)
    return VerbResult({"artifact": agent.name, "subject_kind": agent.kind, "rows": rows}, probe_table(rows))


def probe_coinrun(
    agent: Agent,
    *,
    layers: list[str] | None = None,
    fit_split: str = "ood",
    n_fit: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> VerbResult:
    """Coin/exit probes per layer (coin_visible, coin_right, exit_visible, coin_at_exit, coin_dx, exit_dx)."""
    from workbench.rl.coinrun.probes import coin_exit_probes, probes_text
    from workbench.rl.steering import DEFAULT_LAYER, check_layer

    if fit_split != "ood":
        raise WorkbenchError(
            "CoinRun coin/exit probes fit on ood levels (train pooled in for coin_at_exit); drop --fit-split"
        )
    names = layers or [DEFAULT_LAYER]
    for name in names:
        check_layer(agent, name)
    found = {
        name: coin_exit_probes(agent, name, fit_episodes=n_fit or 300, test_episodes=n_test or 200, seed=seed)
        for name in names
    }
    data = {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "rows": [{"layer": k, **r} for k, v in found.items() for r in v],
    }
    return VerbResult(data, "\n\n".join(probes_text(rows, name) for name, rows in found.items()))


# ---------------------------------------------------------------------------------------------------- vector field
def vector_field_maze(
    agent: Agent,
    *,
    out: Path,
    split: str = "ood",
    seed: int = 0,
    coef: float | None = None,
    layer: str = "embedder.block2.res1.resadd_out",
    convention: str = "workbench",
) -> VerbResult:
    """The policy's vector field over level `seed` of `split` (and, with `coef`, beside the field steered by that
    maze's cheese vector), drawn to the PNG `out`, with the decision square outlined."""
    from workbench.interventions import add_vector
    from workbench.rl.steering import check_layer, cheese_vectors
    from workbench.rl.vector_field import draw, vector_field

    check_split(agent.world, split)
    level = agent.world.levels(split, 1, seed)
    fields, titles = [vector_field(agent.policy, level)], [f"{agent.name} ({split} level, seed {seed})"]
    if coef is not None:
        check_layer(agent, layer)
        vec = cheese_vectors(agent, level, layer)[0]
        fields.append(vector_field(agent.policy, level, [(layer, add_vector(vec, coef))]))
        titles.append(f"cheese vector x {coef:+g} at {layer.split('embedder.')[-1]}")
    ds = tuple(int(v) for v in _decision_squares(level, convention)[0])
    out = Path(out)
    draw(fields, titles, out, marks=[ds] * len(fields))
    data = {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "out": str(out),
        "cells": int(len(fields[0].cells)),
        "decision_square": list(ds),
        "convention": convention,
    }
    return VerbResult(data, f"wrote {out}")


def _decision_squares(levels, convention: str) -> np.ndarray:
    from workbench.rl.maze_parity import decision_squares_by

    return decision_squares_by(levels, convention)


# -------------------------------------------------------------------------------------------------------- collect
def _collect_with(name: str):
    """A collect verb over `workbench.rl.collect.<name>` (maze family or CoinRun); the dataset rides in `.value`."""

    def verb(
        agent: Agent,
        *,
        hooks: list[str],
        split: str = "ood",
        episodes: int = 500,
        seed: int = 0,
        states: str = "start",
        out: Path | None = None,
        **options: Any,
    ) -> VerbResult:
        from workbench.rl import collect as collectors

        options.setdefault("progress", False)
        run = getattr(collectors, name)
        ds = run(agent, hooks, split=split, episodes=episodes, seed=seed, states=states, out=out, **options)
        return _collected(agent, ds, out)

    verb.__name__ = name
    verb.__doc__ = f"Labelled activations of an agent (`workbench.rl.collect.{name}`)."
    return verb


collect_maze = _collect_with("collect_maze")
collect_coinrun = _collect_with("collect_coinrun")


def collect(agent: Agent, hooks: str | list[str], **options: Any):
    """`workbench.collect`: the labelled `ActivationDataset` of any RL subject, through its kind's `collect` verb
    (maze family: `collect_maze`'s labels; CoinRun: `collect_coinrun`'s). Options as those functions take them."""
    from workbench.subjects import verb

    return verb(agent, "collect")(agent, hooks=[hooks] if isinstance(hooks, str) else list(hooks), **options).value


def _collected(agent: Agent, ds, out: Path | None) -> VerbResult:
    data = {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "rows": len(ds),
        "hooks": {h: list(ds.shapes[h]) for h in ds.hooks},
        "labels": list(ds.labels.columns),
        "out": None if out is None else str(out),
    }
    where = f" to {out}" if out is not None else ""
    return VerbResult(data, f"collected {len(ds)} rows at {', '.join(ds.hooks)}{where}", ds)
