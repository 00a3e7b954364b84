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
from workbench.hooks import hook_names, run_with_cache, run_with_hooks
from workbench.interventions import add_vector, random_like
from workbench.metrics import bootstrap_ci, paired_diff_ci
from workbench.policy import direction_probs, logits_of
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import MazeLevels, distances_to, greedy_actions
from workbench.rl.world import check_split

VECTORS = ("cheese", "top-right", "probe")
PROBE_METHODS = ("mass_mean", "logistic")
DEFAULT_LAYER = "embedder.block2.res1.resadd_out"


def check_layer(agent: Agent, layer: str) -> None:
    names = hook_names(agent.policy)
    if layer not in names:
        raise unknown("hook", layer, names)


def activations_at(agent: Agent, levels: MazeLevels, layer: str, batch: int = 1024) -> Tensor:
    """(N, ...) activations at `layer` for the levels' current states, in batches (only `layer` is cached)."""
    out = []
    for start in range(0, len(levels), batch):
        obs = torch.as_tensor(levels.select(slice(start, start + batch)).observe())
        with torch.no_grad():
            _, cache = run_with_cache(agent.policy, obs, names_filter=layer)
        out.append(cache[layer])
    return torch.cat(out)


def cheese_vectors(agent: Agent, levels: MazeLevels, layer: str) -> Tensor:
    """(N, ...) per-maze cheese vectors: act(with cheese) - act(cheese removed), mouse at its current cell."""
    return activations_at(agent, levels, layer) - activations_at(agent, levels.without_cheese(), layer)


def top_right_vectors(agent: Agent, levels: MazeLevels, layer: str) -> tuple[Tensor, int]:
    """(N, ...) per-maze top-right vectors (Turner et al.): act(maze with procgen-tools' top-right path cut) -
    act(maze), and how many mazes fill their world (no padding to cut through: their vector is zero)."""
    from workbench.rl.maze_parity import levels_top_right_path

    if levels.PIXELS:  # rendered levels draw cheese and mouse edits, not wall edits
        raise WorkbenchError(
            "the top-right vector needs wall edits rendered; these levels render only cheese/mouse edits"
        )
    base = activations_at(agent, levels, layer)
    out = torch.zeros_like(base)
    ok = np.flatnonzero(levels.offset > 0)
    if ok.size:
        sub = levels.select(ok)
        out[torch.as_tensor(ok)] = activations_at(agent, levels_top_right_path(sub), layer) - base[torch.as_tensor(ok)]
    return out, int(len(levels) - ok.size)


def decision_square_probs(
    agent: Agent,
    levels: MazeLevels,
    vectors: dict[str, Tensor | None],
    layer: str,
    coef: float,
    convention: str = "workbench",
) -> dict:
    """P(cheese-ward action) with the mouse on each maze's decision square (`convention`: workbench or
    procgen-tools, see `workbench.rl.maze_parity`), per condition (None: no hook)."""
    from workbench.rl.maze_parity import decision_squares_by

    ds = decision_squares_by(levels, convention)
    valid = np.flatnonzero(ds[:, 0] >= 0)
    if valid.size == 0:
        return {"n": 0}
    at_ds = levels.select(valid).with_mouse(ds[valid])
    cheese_action = greedy_actions(distances_to(at_ds, at_ds.cheese), at_ds.mouse)
    obs = torch.as_tensor(at_ds.observe())
    out: dict = {"n": int(valid.size)}
    for cond, vec in vectors.items():
        fwd = [] if vec is None else [(layer, add_vector(vec[valid], coef))]
        with torch.no_grad():
            logits = logits_of(run_with_hooks(agent.policy, obs, fwd_hooks=fwd), len(valid)).float().cpu()
        probs = direction_probs(logits, at_ds.ACTION_GROUPS)
        p = probs[torch.arange(len(valid)), torch.as_tensor(cheese_action)].double().numpy()
        out[cond] = {
            "mean": float(p.mean()),
            "ci95_mean": list(bootstrap_ci(p, seed=0)),
            "median": float(np.median(p)),
            "values": p,
        }
    return out


def probe_direction(
    agent: Agent,
    layer: str,
    target: str,
    method: str = "mass_mean",
    split: str = "ood",
    episodes: int = 600,
    seed: int = 0,
) -> Tensor:
    """A steering vector from a probe: the unit probe direction (raw activation space) at `layer`, scaled by the
    projection of the class-mean difference onto it, i.e. "one class's worth" of movement along the probe.

    Fitted on start-state activations of `episodes` levels (`workbench.collect`); returns one example's shape."""
    from workbench.probes import fit_logistic, fit_mass_mean
    from workbench.rl.collect import collect_maze

    if method not in PROBE_METHODS:
        raise unknown("probe method", method, PROBE_METHODS)
    ds = collect_maze(agent, [layer], split=split, episodes=episodes, seed=seed, progress=False)
    x = ds[layer].flatten(1).double()
    y = torch.as_tensor(ds.label(target).astype(np.int64))
    probe = (fit_logistic if method == "logistic" else fit_mass_mean)(x, y)
    d = probe.direction()[0]
    d = d / torch.linalg.vector_norm(d)
    gap = (x[y == 1].mean(0) - x[y == 0].mean(0)) @ d
    return (d * gap).float().view(ds[layer].shape[1:])


def compare_interventions(
    agent: Agent,
    levels: MazeLevels,
    vectors: Tensor,
    coef: float,
    layer: str,
    per_level: bool,
    seed: int = 0,
    convention: str = "workbench",
) -> dict:
    """Baseline / steered (`coef * vectors`) / control (random vectors of equal norm) on the same levels and action
    seed: rates with Wilson CIs, paired effects with bootstrap CIs, and P(cheese-ward) at decision squares.
    `per_level`: `vectors` is (N, ...) with one vector per level (cheese vectors); otherwise one shared vector."""
    batch = vectors if per_level else vectors.unsqueeze(0)
    ctrl_batch = random_like(batch, seed=seed + 1)  # norms matched per level (or once for a shared vector)
    ctrl = ctrl_batch if per_level else ctrl_batch[0]
    conditions = {"baseline": None, "steered": vectors, "control": ctrl}
    records = {
        name: agent.world.run(
            agent.policy, levels, seed=seed, fwd_hooks=[] if vec is None else [(layer, add_vector(vec, coef))]
        )
        for name, vec in conditions.items()
    }
    result: dict = {"vector_norm_mean": float(torch.linalg.vector_norm(batch.flatten(1), dim=1).mean())}
    for name, rec in records.items():
        result[name] = rec.rates()
    result["ci95"] = {name: result[name]["ci95"] for name in records}
    keys = tuple(records["baseline"].flags())  # RATE_KEYS for the maze; coin/exit/... for CoinRun
    result["effects"] = {
        name: {
            key: {
                k: v
                for k, v in paired_diff_ci(
                    records["baseline"].flags()[key], records[name].flags()[key], seed=seed
                ).items()
                if k in ("diff", "ci95")
            }
            for key in keys
        }
        for name in ("steered", "control")
    }
    if not isinstance(levels, MazeLevels):  # decision squares are a maze notion
        return result
    expand = {
        k: None if v is None else (v if per_level else v.expand(len(levels), *v.shape)) for k, v in conditions.items()
    }
    ds = decision_square_probs(agent, levels, expand, layer, coef, convention)
    ds["convention"] = convention
    for name in ("steered", "control"):
        if name in ds:
            diff = ds[name]["values"] - ds["baseline"]["values"]
            ds[name]["diff_vs_baseline"] = {"mean": float(diff.mean()), "ci95": list(bootstrap_ci(diff, seed=seed))}
    for name in conditions:
        if name in ds:
            ds[name].pop("values")
    result["decision_square"] = ds
    return result


def steer_maze(
    agent: Agent,
    *,
    vector: str = "cheese",
    coef: float = -1.0,
    layer: str = DEFAULT_LAYER,
    split: str = "ood",
    episodes: int = 200,
    seed: int = 0,
    probe_target: str = "outcome_corner_first",
    probe_method: str = "mass_mean",
    probe_episodes: int = 600,
    convention: str = "workbench",
) -> dict:
    """Steer a maze-family agent (native or procgen) with the per-maze cheese vector (`vector="cheese"`) or a probe
    direction (`vector="probe"`: see `probe_direction`, fitted on levels disjoint from the evaluation's) and compare
    with the un-intervened run and a random equal-norm control on the same `episodes` levels. JSON-ready summary."""
    if vector not in VECTORS:
        raise unknown("vector", vector, VECTORS)
    check_layer(agent, layer)
    check_split(agent.world, split)
    if episodes < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    levels = agent.world.levels(split, episodes, seed)
    extra: dict = {}
    if vector == "cheese":
        vecs = cheese_vectors(agent, levels, layer)
    elif vector == "top-right":
        vecs, full = top_right_vectors(agent, levels, layer)
        extra["top_right"] = {"mazes_filling_the_world": full, "note": "their vector is zero (no path to cut)"}
    else:
        vecs = probe_direction(agent, layer, probe_target, probe_method, "ood", probe_episodes, seed + 1_000_003)
    result = {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "vector": vector,
        "coef": coef,
        "layer": layer,
        "split": split,
        "episodes": episodes,
        "seed": seed,
    }
    if vector == "probe":
        result["probe"] = {"target": probe_target, "method": probe_method, "episodes": probe_episodes}
    return {
        **result,
        **extra,
        **compare_interventions(
            agent, levels, vecs, coef, layer, per_level=vector != "probe", seed=seed, convention=convention
        ),
    }


def steer_experiment(
    agent: Agent,
    vector: str = "cheese",
    coef: float = -1.0,
    layer: str = DEFAULT_LAYER,
    split: str = "ood",
    episodes: int = 200,
    seed: int = 0,
    probe_target: str = "outcome_corner_first",
    probe_method: str = "mass_mean",
    probe_episodes: int = 600,
) -> dict:
    """The steering experiment of any RL subject, through its kind's `steer` verb (maze family: `steer_maze`;
    CoinRun: `workbench.rl.coinrun.steering.steer_coinrun`, whose default vector is `coin`)."""
    from workbench.subjects import verb

    return verb(agent, "steer")(
        agent,
        vector=vector,
        coef=coef,
        layer=layer,
        split=split,
        episodes=episodes,
        seed=seed,
        probe_target=probe_target,
        probe_method=probe_method,
        probe_episodes=probe_episodes,
    ).to_json()


def comparison_rows(res: dict) -> list[dict]:
    """Conditions x outcomes of a `compare_interventions` result (or a steer verb's JSON), as table rows: rate,
    Wilson 95% interval, n, and the paired difference vs the un-intervened run with its bootstrap 95% interval (NaN
    for the baseline itself). One reading for the app's tables and the feature views."""
    rows = []
    for cond in ("baseline", "steered", "control"):
        for key, value in res[cond]["rates"].items():
            lo, hi = res[cond]["ci95"][key]
            eff = (res.get("effects") or {}).get(cond, {}).get(key)
            rows.append(
                {
                    "condition": cond,
                    "outcome": key,
                    "rate": value,
                    "ci95 low": lo,
                    "ci95 high": hi,
                    "n": res[cond].get("n"),
                    "diff vs baseline": float("nan") if eff is None else eff["diff"],
                    "diff ci95 low": float("nan") if eff is None else eff["ci95"][0],
                    "diff ci95 high": float("nan") if eff is None else eff["ci95"][1],
                }
            )
    return rows
