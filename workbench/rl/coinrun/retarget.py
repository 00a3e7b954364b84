"""CoinRun retargeting: push the discovered coin channels where a coin could be, with no coin there, and see whether
the agent goes to that place instead of the exit.

Why: the maze experiment (`workbench.rl.retarget`) edits a fixed cell of a world-sized grid. CoinRun's observation is
egocentric: the view moves with the agent, so a place in the level is a different view cell at every step. The edit
is therefore defined in the view's coordinates relative to the target: at each step, where the target lies inside the
(2v+1)^2 window, the discovered channels are pushed at the layer cell under it; where it is out of view nothing is
pushed (a real coin out of view is not seen either).

How the target is tracked without touching the physics: the level keeps a real coin at the target cell, and a thin
wrapper blanks the coin plane of every observation before the policy sees it (the *invisible coin*). The wrapper
reads the coin's view cell from the plane it blanks, so the push lands exactly where the coin would have been drawn,
and the world's own records say whether the agent stepped on the target (`coin_collected`) and whether it went to the
exit without doing so (`exit_without_coin`).

Targets are the `ood` split's own coin positions (the coin moved away from the exit, as in Langosco et al.), on levels
where it is away from the exit. Conditions, run as one batch on the same levels:
- discovered: the top channels by correlation with the coin's view cell and spatial-probe weight on fit states;
  set size and magnitude chosen by retarget success on fit levels (disjoint seeds), never on evaluated ones;
- random: per level a random channel set of the same size and magnitude; single_best: the highest-correlation channel;
- baseline: the invisible coin and no push (how often the agent passes through the target anyway);
- visible_coin: the real coin, shown (the reference: what an actual coin at the target does).
Channels are scored by correlation and the probe only: the attribution score of the maze needs a decision square,
which CoinRun has no analogue of.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from workbench.errors import WorkbenchError, unknown
from workbench.hooks import hooks
from workbench.metrics import paired_diff_ci, rate
from workbench.probes import downsample_cells
from workbench.rl.agent import Agent
from workbench.rl.goal_channels import (
    GoalChannels,
    combine_scores,
    correlation_scores,
    probe_scores,
    ranking_stability,
    set_sizes,
)
from workbench.rl.retarget import MODES, random_sets, set_edit

__all__ = [
    "COINRUN_CONDITIONS",
    "DEFAULT_COINRUN_LAYER",
    "coinrun_goal_channels",
    "coinrun_retarget_experiment",
    "retarget_coinrun",
    "run_invisible_coin",
]

DEFAULT_COINRUN_LAYER = "embedder.block1.res2.resadd_out"
COINRUN_CONDITIONS = ("discovered", "random", "single_best", "baseline", "visible_coin")
FIT_STREAM = 9_000_017
_COIN = 2  # the coin plane of the observation (workbench.rl.envs.coinrun.OBS_CHANNELS)


def _informative(agent: Agent, n: int, seed: int):
    """`n` ood levels (seed `seed`) whose coin is away from the exit; fewer only if a generous draw runs out."""
    levels = agent.world.levels("ood", int(n * 3) + 20, seed)
    keep = np.flatnonzero(levels.has_coin() & ~levels.coin_at_exit())[:n]
    return levels.select(keep)


def _layer_shape(agent: Agent, layer: str) -> tuple[int, int, int]:
    from workbench.hooks import hook_names, run_with_cache

    names = hook_names(agent.policy)
    if layer not in names:
        raise unknown("hook", layer, names)
    obs = torch.as_tensor(agent.world.observe(agent.world.levels("ood", 1, 0)))
    with torch.no_grad():
        _, cache = run_with_cache(agent.policy, obs, names_filter=[layer])
    act = cache[layer]
    if act.ndim != 4 or act.shape[-1] != act.shape[-2]:
        spatial = [n for n in names if n.endswith("resadd_out")]
        raise WorkbenchError(
            f"layer {layer!r} has activations of shape {tuple(act.shape[1:])}, not spatial channels (C, H, W); "
            f"spatial layers of this policy include: {', '.join(spatial[:6])}"
        )
    return int(act.shape[1]), int(act.shape[2]), int(act.shape[3])


def _view_cells(levels, view: int, grid: int) -> np.ndarray:
    """(N, 2) the layer cell under each level's coin, in the agent's view."""
    rel = levels.coin - levels.agent + view
    return downsample_cells(rel, 2 * view + 1, grid)


def coinrun_goal_channels(agent: Agent, layer: str, *, n_fit: int, seed: int, l2: float = 1e-3) -> GoalChannels:
    """Rank the channels of `layer` by how well they track the coin's view cell, on states with the coin in view
    from rollouts of fit levels (ood, coin away from the exit; seeds disjoint from evaluation's)."""
    from workbench.rl.coinrun.steering import activations, coin_in_view, rollout_states

    c, grid, _ = _layer_shape(agent, layer)
    view = agent.env_config.view
    fit = _informative(agent, n_fit, seed + FIT_STREAM)
    states = rollout_states(agent, fit, seed, keep=lambda lv: coin_in_view(lv, view), max_states=20 * n_fit)
    if len(states) < 10:
        raise WorkbenchError(f"only {len(states)} fit states with the coin in view; raise n_fit (got {n_fit})")
    acts = activations(agent, states, layer).float()
    cells = _view_cells(states, view, grid)
    goal = cells[:, 0] * grid + cells[:, 1]
    scores = {"correlation": correlation_scores(acts, goal), "probe": probe_scores(acts, goal, l2)}
    ranking, mean_rank = combine_scores(scores)
    flat = acts.double().transpose(0, 1).reshape(c, -1)
    return GoalChannels(
        layer=layer,
        shape=(c, grid, grid),
        scores={**scores, "attribution": np.zeros(c)},
        ranking=ranking,
        mean_rank=mean_rank,
        sign=np.where(scores["correlation"] >= 0, 1, -1).astype(np.int64),
        mean=flat.mean(1).numpy(),
        std=flat.std(1, correction=0).clamp_min(1e-6).numpy(),
        n_fit=len(states),
        n_decision=0,
        fit_seeds=fit.seeds.copy(),
        _acts=acts,
        _goal=goal,
        _attr_rows=np.zeros((0, c)),
        _attr_mazes=np.zeros(0, dtype=np.int64),
        l2=l2,
    )


class _InvisibleCoin(nn.Module):
    """Blanks the coin plane of rows `hide` before the policy sees it, and remembers where the coin was in each
    row's view (`visible`, `cell`) for the push hook."""

    needs_full_batch = True  # row i is level i: the rollout loop must not drop finished rows (`workbench.rl.loop`)

    def __init__(self, policy: nn.Module, hide: np.ndarray, view: int, grid: int) -> None:
        super().__init__()
        self.policy = policy
        self.hide = torch.as_tensor(hide, dtype=torch.bool)
        self.view, self.grid = view, grid
        self.visible = torch.zeros(len(hide), dtype=torch.bool)
        self.cell = torch.zeros(len(hide), 2, dtype=torch.long)

    def forward(self, obs: Tensor) -> Tensor:
        x = torch.as_tensor(obs).clone()
        plane = x[:, _COIN].flatten(1)
        side = x.shape[-1]
        self.visible = plane.amax(1) > 0
        idx = plane.argmax(1).numpy()
        rc = np.stack([idx // side, idx % side], axis=1)
        self.cell = torch.as_tensor(downsample_cells(rc, side, self.grid), dtype=torch.long)
        x[self.hide, _COIN] = 0
        return self.policy(x)


def run_invisible_coin(
    agent: Agent,
    levels,
    *,
    layer: str,
    mask: Tensor,
    values: Tensor,
    hide: np.ndarray,
    mode: str = "add",
    seed: int = 0,
    greedy: bool = False,
):
    """One episode per level (one batch): row i's coin is hidden from the policy where `hide[i]`, and wherever the
    coin is in row i's view, channels `mask[i]` of `layer` at its layer cell are set to (clamp) or raised by (add)
    `values[i]`. Returns the world's records (coin_collected = the target was reached)."""
    from workbench.rl.coinrun.rollout import run_episodes

    c, grid, _ = _layer_shape(agent, layer)
    wrapper = _InvisibleCoin(agent.policy, hide, agent.env_config.view, grid)
    add = mode == "add"

    def push(act: Tensor, hook) -> Tensor:
        rows = torch.nonzero(wrapper.visible & mask.any(1), as_tuple=True)[0]
        if rows.numel() == 0:
            return act
        out = act.clone()
        r, cc = wrapper.cell[rows, 0], wrapper.cell[rows, 1]
        here = out[rows, :, r, cc]
        m, v = mask[rows], values[rows].to(act)
        out[rows, :, r, cc] = torch.where(m, here + v, here) if add else torch.where(m, v, here)
        return out

    with hooks(agent.policy, [(layer, push)]):
        return run_episodes(wrapper, levels, agent.env_config, seed=seed, greedy=greedy)


def _paired(a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    r = paired_diff_ci(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), seed=seed)
    return {"diff": r["diff"], "ci95": r["ci95"], "n": r["n"]}


def coinrun_retarget_experiment(
    agent: Agent,
    *,
    layer: str = DEFAULT_COINRUN_LAYER,
    episodes: int = 200,
    seed: int = 0,
    n_fit: int = 200,
    n_select: int = 100,
    mode: str | None = None,
    channels: Sequence[int] | None = None,
    size: int | None = None,
    magnitude: float | None = None,
    magnitudes: Sequence[float] = (2.0, 4.0, 8.0, 16.0),
    n_boot: int = 10,
    greedy: bool = False,
) -> dict:
    """Discover the coin channels on fit levels, choose the set there, and retarget on `episodes` evaluated ood
    levels with controls (see the module docstring). JSON-ready."""
    t0 = time.time()
    mode = mode or "add"
    if mode not in MODES:
        raise unknown("retarget mode", mode, MODES)
    if int(episodes) < 1 or int(n_fit) < 10 or int(n_select) < 5:
        raise WorkbenchError(f"need episodes >= 1, n_fit >= 10, n_select >= 5; got {episodes}, {n_fit}, {n_select}")
    if not magnitudes or any(not (math.isfinite(float(x)) and float(x) > 0) for x in magnitudes):
        raise WorkbenchError(f"magnitudes must be positive numbers of standard deviations, got {list(magnitudes)}")
    c, grid, _ = _layer_shape(agent, layer)
    if channels is not None:
        chans = [int(ch) for ch in channels]
        if not chans:
            raise WorkbenchError("the channel set is empty; name at least one channel or omit it to discover the set")
        if any(not 0 <= ch < c for ch in chans):
            raise WorkbenchError(f"channel {chans} out of range for {layer} ({c} channels: 0..{c - 1})")
    if size is not None and not 1 <= int(size) <= c:
        raise WorkbenchError(f"set size must be in 1..{c} for {layer}, got {size}")
    found = coinrun_goal_channels(agent, layer, n_fit=n_fit, seed=seed)
    # --- choose the set on fit levels (seeds disjoint from the evaluated ones)
    sel_levels = _informative(agent, n_select, seed + FIT_STREAM + 1)
    sizes = [len(channels)] if channels is not None else ([int(size)] if size is not None else set_sizes(c))
    mags = [float(magnitude)] if magnitude is not None else [float(m) for m in magnitudes]
    grid_cands = [(k, m) for k in sizes for m in mags]
    ns = len(sel_levels)
    masks, values = [], []
    for k, m in grid_cands:
        chans = list(channels) if channels is not None else found.top(k)
        e = set_edit(found, chans, m, np.zeros((ns, 2), dtype=np.int64), mode)
        masks.append(e.mask)
        values.append(e.values)
    sel_all = sel_levels.select(np.tile(np.arange(ns), len(grid_cands)))
    rec = run_invisible_coin(
        agent,
        sel_all,
        layer=layer,
        mask=torch.cat(masks),
        values=torch.cat(values),
        hide=np.ones(len(sel_all), dtype=bool),
        mode=mode,
        seed=seed,
        greedy=greedy,
    )
    hit = np.asarray(rec.coin_collected, dtype=np.float64).reshape(len(grid_cands), ns).mean(1)
    best = int(np.argmax(hit))  # ties: the first, i.e. the smaller set, then the smaller magnitude
    k, m = grid_cands[best]
    chosen = [int(ch) for ch in channels] if channels is not None else found.top(k)
    selection = {
        "size": k,
        "magnitude": m,
        "channels": chosen,
        "score": float(hit[best]),
        "given": channels is not None,
        "table": [
            {"size": kk, "magnitude": mm, "success": float(s)} for (kk, mm), s in zip(grid_cands, hit, strict=True)
        ],
    }
    stability = ranking_stability(found, k, n_boot=n_boot, seed=seed) if n_boot >= 2 else None
    single = found.best_by_correlation()
    # --- evaluated levels, every condition in one batch
    levels = _informative(agent, int(episodes), seed)
    n = len(levels)
    if n == 0:
        raise WorkbenchError("no evaluated level has its coin away from the exit")
    blocks = {
        "discovered": set_edit(found, chosen, m, np.zeros((n, 2), dtype=np.int64), mode),
        "random": set_edit(found, random_sets(n, c, k, seed), m, np.zeros((n, 2), dtype=np.int64), mode),
        "single_best": set_edit(found, [single], m, np.zeros((n, 2), dtype=np.int64), mode),
    }
    none = torch.zeros(n, c, dtype=torch.bool), torch.zeros(n, c)
    mask = torch.cat([*(b.mask for b in blocks.values()), none[0], none[0]])
    vals = torch.cat([*(b.values for b in blocks.values()), none[1], none[1]])
    hide = np.concatenate([np.ones(4 * n, dtype=bool), np.zeros(n, dtype=bool)])
    rec = run_invisible_coin(
        agent,
        levels.select(np.tile(np.arange(n), len(COINRUN_CONDITIONS))),
        layer=layer,
        mask=mask,
        values=vals,
        hide=hide,
        mode=mode,
        seed=seed,
        greedy=greedy,
    )
    reached = {name: np.asarray(rec.coin_collected)[b * n : (b + 1) * n] for b, name in enumerate(COINRUN_CONDITIONS)}
    exit_first = {
        name: np.asarray(rec.exit_without_coin)[b * n : (b + 1) * n] for b, name in enumerate(COINRUN_CONDITIONS)
    }
    conditions = {
        name: {"success": rate(reached[name]), "exit_without_target": rate(exit_first[name])}
        for name in COINRUN_CONDITIONS
    }
    effects = {
        f"{b}_vs_{a}": {
            "success": _paired(reached[a], reached[b], seed),
            "exit_without_target": _paired(exit_first[a], exit_first[b], seed),
        }
        for a, b in (("random", "discovered"), ("baseline", "discovered"), ("baseline", "single_best"))
    }
    effects["visible_coin_vs_baseline"] = {
        "success": _paired(reached["baseline"], reached["visible_coin"], seed),
        "exit_without_target": _paired(exit_first["baseline"], exit_first["visible_coin"], seed),
    }
    return {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "layer": layer,
        "shape": [c, grid, grid],
        "split": "ood",
        "episodes": int(episodes),
        "pairs": n,
        "seed": seed,
        "mode": mode,
        "greedy": greedy,
        "step_limit": int(agent.env_config.max_steps),
        "fit": {
            "states": found.n_fit,
            "selection_levels": ns,
            "disjoint_from_eval": not (set(found.fit_seeds.tolist()) & set(levels.seeds.tolist())),
        },
        "discovery": found.to_json(),
        "selection": selection,
        "stability": stability,
        "set": chosen,
        "magnitude": m,
        "single_best": single,
        "conditions": conditions,
        "effects": effects,
        "uniform_offset": [],
        "seconds": round(time.time() - t0, 1),
    }


def coinrun_retarget_text(r: dict) -> str:
    def fr(x: dict) -> str:
        return f"{x['rate']:.3f} [{x['ci95'][0]:.3f}, {x['ci95'][1]:.3f}]"

    def fd(x: dict) -> str:
        return f"{x['diff']:+.3f} [{x['ci95'][0]:+.3f}, {x['ci95'][1]:+.3f}]"

    lines = [
        f"{r['artifact']} @ {r['layer']} {tuple(r['shape'])}: {r['mode']} set {r['set']} at {r['magnitude']:g} std "
        f"(chosen on {r['fit']['selection_levels']} fit levels); single best by correlation: {r['single_best']}",
        f"{r['pairs']} ood levels with the coin away from the exit (the target: the coin's cell, coin hidden), seed "
        f"{r['seed']}, step limit {r['step_limit']}",
        "",
        f"{'condition':<13} {'reached the target':<24} {'exit without target':<24}",
    ]
    for name, row in r["conditions"].items():
        lines.append(f"{name:<13} {fr(row['success']):<24} {fr(row['exit_without_target']):<24}")
    lines += ["", f"{'paired effect':<26} {'reached the target':<24} {'exit without target':<24}"]
    for name, row in r["effects"].items():
        lines.append(f"{name:<26} {fd(row['success']):<24} {fd(row['exit_without_target']):<24}")
    return "\n".join(lines)


def retarget_coinrun(agent: Agent, **options: Any):
    """The `retarget` verb of CoinRun subjects: `coinrun_retarget_experiment` as a VerbResult. Takes the maze verb's
    options; `target`, `sae` and a split other than ood have no CoinRun meaning and are refused; uniform offsets are
    not run (the JSON's `uniform_offset` is empty)."""
    from workbench.rl.verbs import VerbResult

    if options.pop("target", None) is not None:
        raise WorkbenchError("--target is a maze cell; CoinRun targets are the ood split's own coin positions")
    if options.pop("sae", None) is not None:
        raise WorkbenchError("--sae is for maze subjects; CoinRun retargeting ranks channels")
    split = options.pop("split", "ood")
    if split != "ood":
        raise WorkbenchError(f"CoinRun retargeting runs on ood levels (the coin away from the exit), not {split!r}")
    options.pop("offsets", None)
    allowed = {"layer", "episodes", "seed", "n_fit", "mode", "channels", "size", "magnitude", "magnitudes", "n_boot"}
    allowed |= {"greedy", "n_select"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise unknown("CoinRun retarget option", bad[0], sorted(allowed))
    result = coinrun_retarget_experiment(agent, **options)
    return VerbResult(result, coinrun_retarget_text(result))
