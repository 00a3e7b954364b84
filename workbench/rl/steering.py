"""The cheese-vector experiment (Turner et al. 2023), with the controls and intervals the original lacked.

For each OOD maze: cheese vector = activation(maze with cheese) - activation(same maze, cheese removed), both at the
start position, at one hook. During that maze's rollout, `coef * vector` is added on every forward pass
(coef = -1 subtracts it). Compared on the same mazes and the same action-sampling seed:
- baseline: no intervention;
- steered: the cheese vector;
- control: a random Gaussian vector with the same norm per maze (does *any* perturbation of that size do this?).
Reported: goal rates with Wilson CIs, paired differences vs baseline with bootstrap CIs, and P(cheese-ward action at
the decision square) under each condition.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.hooks import hook_names, run_with_cache
from workbench.interventions import add_vector, random_like
from workbench.metrics import bootstrap_ci, paired_diff_ci
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import MazeLevels, decision_squares, distances_to, greedy_actions, observe
from workbench.rl.rollout import RATE_KEYS, levels_for, run_episodes

VECTORS = ("cheese",)
DEFAULT_LAYER = "embedder.block2.res1.resadd_out"


def check_layer(agent: Agent, layer: str) -> None:
    names = hook_names(agent.policy)
    if layer not in names:
        raise unknown("hook", layer, names)


def activations_at(agent: Agent, levels: MazeLevels, layer: str, batch: int = 1024) -> Tensor:
    """(N, ...) activations at `layer` for the levels' current states, in batches (only `layer` is cached)."""
    out = []
    for start in range(0, len(levels), batch):
        obs = torch.as_tensor(observe(levels.select(slice(start, start + batch))))
        with torch.no_grad():
            _, cache = run_with_cache(agent.policy, obs, names_filter=layer)
        out.append(cache[layer])
    return torch.cat(out)


def cheese_vectors(agent: Agent, levels: MazeLevels, layer: str) -> Tensor:
    """(N, ...) per-maze cheese vectors: act(with cheese) - act(cheese removed), mouse at its current cell."""
    return activations_at(agent, levels, layer) - activations_at(agent, levels.without_cheese(), layer)


def decision_square_probs(
    agent: Agent, levels: MazeLevels, vectors: dict[str, Tensor | None], layer: str, coef: float
) -> dict:
    """P(cheese-ward action) with the mouse on each maze's decision square, per condition (None: no hook)."""
    ds = decision_squares(levels)
    valid = np.flatnonzero(ds[:, 0] >= 0)
    if valid.size == 0:
        return {"n": 0}
    at_ds = levels.select(valid).with_mouse(ds[valid])
    cheese_action = greedy_actions(distances_to(at_ds, at_ds.cheese), at_ds.mouse)
    obs = torch.as_tensor(observe(at_ds))
    out: dict = {"n": int(valid.size)}
    for cond, vec in vectors.items():
        fwd = [] if vec is None else [(layer, add_vector(vec[valid], coef))]
        with torch.no_grad():
            from workbench.hooks import run_with_hooks

            logits, _ = run_with_hooks(agent.policy, obs, fwd_hooks=fwd)
        p = torch.softmax(logits, -1)[torch.arange(len(valid)), torch.as_tensor(cheese_action)].double().numpy()
        out[cond] = {
            "mean": float(p.mean()),
            "ci95_mean": list(bootstrap_ci(p, seed=0)),
            "median": float(np.median(p)),
            "values": p,
        }
    return out


def steer_experiment(
    agent: Agent,
    vector: str = "cheese",
    coef: float = -1.0,
    layer: str = DEFAULT_LAYER,
    split: str = "ood",
    episodes: int = 200,
    seed: int = 0,
) -> dict:
    """Run baseline / steered / control rollouts on the same `episodes` levels and return a JSON-ready summary."""
    if vector not in VECTORS:
        raise unknown("vector", vector, VECTORS)
    check_layer(agent, layer)
    if episodes < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    cfg = agent.env_config
    levels = levels_for(split, episodes, seed, cfg)
    vecs = cheese_vectors(agent, levels, layer)
    ctrl = random_like(vecs, seed=seed + 1)
    conditions = {"baseline": None, "steered": vecs, "control": ctrl}
    records = {
        name: run_episodes(
            agent.policy, levels, cfg, seed=seed, fwd_hooks=[] if vec is None else [(layer, add_vector(vec, coef))]
        )
        for name, vec in conditions.items()
    }
    result: dict = {
        "artifact": agent.name,
        "vector": vector,
        "coef": coef,
        "layer": layer,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "vector_norm_mean": float(torch.linalg.vector_norm(vecs.flatten(1), dim=1).mean()),
    }
    for name, rec in records.items():
        result[name] = rec.rates()
    result["ci95"] = {name: result[name]["ci95"] for name in records}
    result["effects"] = {
        name: {
            key: {
                k: v
                for k, v in paired_diff_ci(
                    records["baseline"].flags()[key], records[name].flags()[key], seed=seed
                ).items()
                if k in ("diff", "ci95")
            }
            for key in RATE_KEYS
        }
        for name in ("steered", "control")
    }
    ds = decision_square_probs(agent, levels, conditions, layer, coef)
    for name in ("steered", "control"):
        if name in ds:
            diff = ds[name]["values"] - ds["baseline"]["values"]
            ds[name]["diff_vs_baseline"] = {"mean": float(diff.mean()), "ci95": list(bootstrap_ci(diff, seed=seed))}
    for name in conditions:
        if name in ds:
            ds[name].pop("values")
    result["decision_square"] = ds
    return result
