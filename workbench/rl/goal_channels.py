"""Goal channels: which channels of a conv layer track where the goal is, found automatically, with their stability.

Why: Turner et al. (2023) hand-picked 11 "cheese channels" of the maze policy by looking at heatmaps, and reviewers
asked how one would find them without a person in the loop and whether the choice is stable. Here each channel of a
spatial layer is scored three independent ways on *fit* mazes (never the mazes an experiment evaluates):

- correlation: the Pearson correlation, over mazes and layer cells, between the channel's activation map and the goal
  map (1 at the layer cell under the cheese, 0 elsewhere): what a person scanning heatmaps looks for;
- probe: the channel's weight in a 1x1 spatial probe that predicts the goal's layer cell (as
  `workbench.probes.fit_spatial_probe`, on standardised channels so weights compare, plus a per-cell prior that
  absorbs where goals can be at all, so a wall channel does not win by saying "not on a wall");
- attribution: with the mouse on each maze's decision square (Turner et al.), the first-order effect of the channel's
  goal response on log P(goal-ward move): sum over cells of grad * (act(goal present) - act(goal removed))
  (attribution patching; Heimersheim & Nanda 2024).

The ranking is the mean of a channel's three rank positions by |score|, so each method votes equally and a channel
strong under one method only lands mid-table. The sign of a channel (does it rise or fall at the goal?) is its
correlation's. `choose_set` picks how many top channels to use, and how hard to push them, with a criterion the
caller evaluates on fit mazes (`workbench.rl.retarget` uses the normalised path probability to held-out targets);
`ranking_stability` bootstraps the fit mazes and reports how often each channel makes the set and how well the
rankings agree.

Layers must be spatial: (C, H, W) activations whose H x W grid is the maze grid, a max-pooled version of it, or a
rendered frame's grid (`workbench.probes.downsample_cells`). Anything else is one WorkbenchError naming the spatial
layers the policy has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.hooks import hook_names, hooks, run_with_cache
from workbench.policy import direction_probs, logits_of, policy_device
from workbench.probes import downsample_cells, layer_cell_index
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import MazeLevels, decision_squares, distances_to, greedy_actions
from workbench.rl.steering import DEFAULT_LAYER, activations_at, check_layer

__all__ = [
    "DEFAULT_LAYER",
    "METHODS",
    "GoalChannels",
    "choose_set",
    "combine_scores",
    "correlation_scores",
    "discover_goal_channels",
    "discover_goal_latents",
    "fit_levels",
    "probe_scores",
    "goal_cells",
    "ranking_stability",
    "set_sizes",
    "spatial_layer",
]

METHODS = ("correlation", "probe", "attribution")
FIT_STREAM = 9_000_011
"""Fit mazes are drawn with seed + FIT_STREAM, and any level seed the evaluation uses is dropped from them."""


# ---------------------------------------------------------------------------------------------------- the layer
def _split(world, preferred: str = "ood") -> str:
    return preferred if preferred in world.splits else world.splits[-1]


def spatial_layer(agent: Agent, layer: str) -> tuple[int, int, int]:
    """(C, H, W) of `layer` when it has spatial channels that map onto the maze grid; else one WorkbenchError that
    names the spatial layers of this policy."""
    check_layer(agent, layer)
    level = agent.world.levels(_split(agent.world), 1, 0)
    obs = torch.as_tensor(agent.world.observe(level))
    names = hook_names(agent.policy)
    with torch.no_grad():
        _, cache = run_with_cache(agent.policy, obs, names_filter=names)
    act = cache[layer]
    if act.ndim != 4 or act.shape[-1] != act.shape[-2]:
        spatial = [n for n in names if n in cache and cache[n].ndim == 4 and cache[n].shape[-1] == cache[n].shape[-2]]
        shown = ", ".join(spatial[:6]) + (" ..." if len(spatial) > 6 else "")
        raise WorkbenchError(
            f"layer {layer!r} has activations of shape {tuple(act.shape[1:])}, not spatial channels (C, H, W); "
            f"spatial layers of this policy: {shown or 'none'}"
        )
    grid = int(act.shape[-1])
    try:
        downsample_cells(np.zeros((1, 2), dtype=np.int64), level.world_size, grid, level.PIXELS)
    except WorkbenchError:
        raise WorkbenchError(
            f"layer {layer!r}: its {grid}x{grid} grid is not the {level.world_size}x{level.world_size} maze grid "
            "or a max-pooled version of it; choose a layer of the conv stack"
        ) from None
    return int(act.shape[1]), grid, grid


def goal_cells(levels: MazeLevels, grid: int, cells: np.ndarray | None = None) -> np.ndarray:
    """(N,) the flat layer cell (row * grid + col) under each maze's cheese, or under `cells` (N, 2) if given."""
    cells = levels.cheese if cells is None else np.asarray(cells, dtype=np.int64)
    w = levels.world_size
    return layer_cell_index(cells[:, 0] * w + cells[:, 1], w, grid, levels.PIXELS)


def fit_levels(agent: Agent, n: int, seed: int, exclude: Sequence[int] = (), split: str = "ood") -> MazeLevels:
    """`n` fit mazes (cheese anywhere) drawn from the fit seed stream, without any level seed in `exclude` (the
    evaluated mazes) and without duplicates; fewer than `n` only if that many seeds collided."""
    if n < 10:
        raise WorkbenchError(f"need at least 10 fit mazes to rank channels, got {n}")
    levels = agent.world.levels(_split(agent.world, split), n, seed + FIT_STREAM)
    seen = {int(s) for s in exclude}
    keep = []
    for i, s in enumerate(levels.seeds.tolist()):
        if int(s) not in seen:
            keep.append(i)
            seen.add(int(s))
    levels = levels.select(np.array(keep, dtype=np.int64))
    return levels.select(np.flatnonzero(levels.has_cheese()))


# ------------------------------------------------------------------------------------------------------- scores
def correlation_scores(acts: Tensor, goal: np.ndarray) -> np.ndarray:
    """(C,) Pearson correlation of each channel's map (N, C, H, W) with the one-hot goal map (flat cells `goal`)."""
    a = acts.double().flatten(2)  # (N, C, HW)
    g = torch.zeros(a.shape[0], a.shape[2], dtype=torch.float64)
    g[torch.arange(a.shape[0]), torch.as_tensor(goal, dtype=torch.long)] = 1.0
    a = a - a.mean(dim=(0, 2), keepdim=True)
    g = g - g.mean()
    cov = (a * g[:, None, :]).mean(dim=(0, 2))
    sd = a.pow(2).mean(dim=(0, 2)).sqrt() * g.pow(2).mean().sqrt()
    return torch.where(sd > 1e-12, cov / sd.clamp_min(1e-12), torch.zeros_like(cov)).numpy()


def probe_scores(acts: Tensor, goal: np.ndarray, l2: float = 1e-3, max_iter: int = 100) -> np.ndarray:
    """(C,) weights of a 1x1 spatial probe for the goal cell on standardised channels, fitted with a per-cell prior
    (a bias per layer cell): the prior absorbs where goals can be at all (never on the border, say), so a channel's
    weight measures what it says about where the goal is in this maze. Softmax over cells, L2 on the weights only;
    the same model as `workbench.probes.fit_spatial_probe` plus the cell bias."""
    a = acts.double().flatten(2)  # (N, C, HW)
    mean = a.mean(dim=(0, 2), keepdim=True)
    std = a.std(dim=(0, 2), keepdim=True).clamp_min(1e-6)
    z = (a - mean) / std
    t = torch.as_tensor(goal, dtype=torch.long)
    w = torch.zeros(a.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(a.shape[2], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.einsum("nck,c->nk", z, w) + b
        loss = torch.nn.functional.cross_entropy(logits, t) + l2 * (w**2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().numpy()


def _decision_grads(
    agent: Agent, levels: MazeLevels, layer: str, batch: int = 512
) -> tuple[Tensor, Tensor, Tensor, np.ndarray]:
    """At each fit maze's decision square: d log P(goal-ward move) / d activation (M, C, H, W), the activations with
    the goal present and removed (M, C, H, W each), and which fit mazes (M,) they come from."""
    ds = decision_squares(levels)
    valid = np.flatnonzero(ds[:, 0] >= 0)
    if valid.size == 0:
        empty = torch.zeros(0)
        return empty, empty, empty, valid
    at = levels.select(valid).with_mouse(ds[valid])
    goal_dir = torch.as_tensor(greedy_actions(distances_to(at, at.cheese), at.mouse))
    present = activations_at(agent, at, layer)
    absent = activations_at(agent, at.without_cheese(), layer)
    obs_all = agent.world.observe(at)
    device = policy_device(agent.policy)
    grads = []
    for lo in range(0, len(valid), batch):
        sl = slice(lo, lo + batch)
        leaf = present[sl].clone().to(device).requires_grad_(True)

        def swap(act: Tensor, hook, leaf=leaf) -> Tensor:
            return leaf

        obs = torch.as_tensor(obs_all[sl]).to(device)
        with torch.enable_grad(), hooks(agent.policy, [(layer, swap)]):
            logits = logits_of(agent.policy(obs), len(obs)).float()
            probs = direction_probs(logits, at.ACTION_GROUPS)
            logp = probs[torch.arange(len(obs)), goal_dir[sl]].clamp_min(1e-12).log()
            (grad,) = torch.autograd.grad(logp.sum(), leaf)
        grads.append(grad.cpu().double())
    return torch.cat(grads), present.double(), absent.double(), valid


def _attribution_rows(agent: Agent, levels: MazeLevels, layer: str, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Per-maze attribution (M, C) at the decision squares, and which fit mazes (M,) they come from."""
    grad, present, absent, valid = _decision_grads(agent, levels, layer, batch)
    if valid.size == 0:
        return np.zeros((0, 0)), valid
    return (grad * (present - absent)).sum(dim=(2, 3)).numpy(), valid


def combine_scores(scores: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(ranking best first, mean rank position per channel) from per-method (C,) scores, ranked by |score|; ties
    go to the lower channel index. Methods whose scores are all zero (nothing measured) do not vote."""
    positions = []
    for s in scores.values():
        s = np.abs(np.asarray(s, dtype=np.float64))
        if not np.any(s > 0):
            continue
        order = np.lexsort((np.arange(s.size), -s))
        pos = np.empty(s.size)
        pos[order] = np.arange(s.size)
        positions.append(pos)
    c = next(iter(scores.values())).size
    mean_pos = np.mean(positions, axis=0) if positions else np.arange(c, dtype=np.float64)
    return np.lexsort((np.arange(c), mean_pos)), mean_pos


# ------------------------------------------------------------------------------------------------------- result
@dataclass
class GoalChannels:
    """Channels of `layer` ranked by how well they track the goal location, from fit mazes.

    Attributes:
        layer: the hook; shape: (C, H, W) of its activations.
        scores: method -> (C,) score (see the module docstring); ranking: channel ids, best first;
        mean_rank: (C,) mean rank position over the methods (0 = best).
        sign: (C,) +1 where the channel rises at the goal (correlation >= 0), else -1.
        mean, std: (C,) each channel's mean and standard deviation over fit mazes and cells: interventions are
            sized in these units, so a magnitude means the same push on every channel.
        n_fit: fit mazes; n_decision: fit mazes with a decision square (attribution's sample); fit_seeds: their
            level seeds (disjoint from the evaluated mazes').
        units: "channels", or "latents" when the units are an SAE's latents at the layer (`discover_goal_latents`):
            then shape is (latents, H, W), and `decoder` (latents, C) maps a push of the latents to the layer's
            channels (an SAE on a conv layer reads each cell's channel vector as one token).
    """

    layer: str
    shape: tuple[int, int, int]
    scores: dict[str, np.ndarray]
    ranking: np.ndarray
    mean_rank: np.ndarray
    sign: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    n_fit: int
    n_decision: int
    fit_seeds: np.ndarray
    _acts: Tensor | None = field(default=None, repr=False)
    _goal: np.ndarray | None = field(default=None, repr=False)
    _attr_rows: np.ndarray | None = field(default=None, repr=False)
    _attr_mazes: np.ndarray | None = field(default=None, repr=False)
    l2: float = 1e-3
    units: str = "channels"
    decoder: Tensor | None = field(default=None, repr=False)
    sae: str | None = None

    @property
    def n_channels(self) -> int:
        return int(self.shape[0])

    def top(self, k: int) -> list[int]:
        """The k best-ranked channels."""
        return [int(c) for c in self.ranking[:k]]

    def best_by_correlation(self) -> int:
        """The channel a person scanning heatmaps would pick: the highest correlation with the goal map."""
        return int(np.argmax(self.scores["correlation"]))

    def table(self) -> list[dict]:
        """One row per channel, best first."""
        return [
            {
                "channel": int(c),
                "rank": i,
                "mean_rank": float(self.mean_rank[c]),
                "sign": int(self.sign[c]),
                **{m: float(self.scores[m][c]) for m in METHODS},
            }
            for i, c in enumerate(self.ranking)
        ]

    def to_json(self) -> dict:
        return {
            "layer": self.layer,
            "units": self.units,
            **({"sae": self.sae} if self.sae is not None else {}),
            "shape": list(self.shape),
            "n_fit": self.n_fit,
            "n_decision": self.n_decision,
            "ranking": [int(c) for c in self.ranking],
            "single_best_by_correlation": self.best_by_correlation(),
            "channels": self.table(),
        }


def discover_goal_channels(
    agent: Agent,
    layer: str = DEFAULT_LAYER,
    *,
    levels: MazeLevels | None = None,
    n_fit: int = 500,
    seed: int = 0,
    exclude: Sequence[int] = (),
    l2: float = 1e-3,
) -> GoalChannels:
    """Rank the channels of `layer` by how well they track the cheese, on `levels` (default: `n_fit` fresh fit mazes
    from the fit seed stream, without the level seeds in `exclude`)."""
    c, grid, _ = spatial_layer(agent, layer)
    if levels is None:
        levels = fit_levels(agent, n_fit, seed, exclude)
    if len(levels) < 10:
        raise WorkbenchError(f"need at least 10 fit mazes with a cheese to rank channels, got {len(levels)}")
    acts = activations_at(agent, levels, layer).float()
    goal = goal_cells(levels, grid)
    attr_rows, attr_mazes = _attribution_rows(agent, levels, layer)
    scores = {
        "correlation": correlation_scores(acts, goal),
        "probe": probe_scores(acts, goal, l2),
        "attribution": attr_rows.mean(axis=0) if len(attr_mazes) else np.zeros(c),
    }
    ranking, mean_rank = combine_scores(scores)
    flat = acts.double().transpose(0, 1).reshape(c, -1)
    return GoalChannels(
        layer=layer,
        shape=(c, grid, grid),
        scores=scores,
        ranking=ranking,
        mean_rank=mean_rank,
        sign=np.where(scores["correlation"] >= 0, 1, -1).astype(np.int64),
        mean=flat.mean(1).numpy(),
        std=flat.std(1, correction=0).clamp_min(1e-6).numpy(),
        n_fit=len(levels),
        n_decision=int(len(attr_mazes)),
        fit_seeds=levels.seeds.copy(),
        _acts=acts,
        _goal=goal,
        _attr_rows=attr_rows,
        _attr_mazes=attr_mazes,
        l2=l2,
    )


def discover_goal_latents(
    agent: Agent,
    layer: str,
    sae: Any,
    *,
    levels: MazeLevels | None = None,
    n_fit: int = 500,
    seed: int = 0,
    exclude: Sequence[int] = (),
    l2: float = 1e-3,
    name: str | None = None,
) -> GoalChannels:
    """Rank the latents of an SAE trained at `layer` (position layout: one token per cell) by the same three scores
    as channels: each latent's activation map against the goal map, a spatial probe on the latent maps, and the
    attribution through the decoder, sum over cells of (grad . W_dec[latent]) * (f(goal present) - f(goal removed)).
    The result's units are latents; its `decoder` turns a latent push into a channel push."""
    from workbench.sae.analysis import latent_acts

    c, grid, _ = spatial_layer(agent, layer)
    d_in, hook = int(sae.cfg.d_in), getattr(getattr(sae.cfg, "metadata", None), "hook_name", None)
    if d_in != c:
        raise WorkbenchError(f"SAE {name or ''} reads {d_in}-dim tokens but {layer} has {c} channels per cell")
    if hook not in (None, layer):
        raise WorkbenchError(f"SAE {name or ''} was trained at {hook}, not {layer}; use --layer {hook}")
    if levels is None:
        levels = fit_levels(agent, n_fit, seed, exclude)
    if len(levels) < 10:
        raise WorkbenchError(f"need at least 10 fit mazes with a cheese to rank latents, got {len(levels)}")
    acts = activations_at(agent, levels, layer).float()
    feats = latent_acts(sae, acts).float()  # (N, L, H, W)
    n_lat = int(feats.shape[1])
    goal = goal_cells(levels, grid)
    grad, present, absent, valid = _decision_grads(agent, levels, layer)
    w_dec = sae.W_dec.detach().double().cpu()  # (L, C)
    if valid.size:
        delta = latent_acts(sae, present.float()).double() - latent_acts(sae, absent.float()).double()
        attr_rows = (torch.einsum("mchw,lc->mlhw", grad, w_dec) * delta).sum(dim=(2, 3)).numpy()
    else:
        attr_rows = np.zeros((0, n_lat))
    scores = {
        "correlation": correlation_scores(feats, goal),
        "probe": probe_scores(feats, goal, l2),
        "attribution": attr_rows.mean(axis=0) if valid.size else np.zeros(n_lat),
    }
    ranking, mean_rank = combine_scores(scores)
    flat = feats.double().transpose(0, 1).reshape(n_lat, -1)
    return GoalChannels(
        layer=layer,
        shape=(n_lat, grid, grid),
        scores=scores,
        ranking=ranking,
        mean_rank=mean_rank,
        sign=np.where(scores["correlation"] >= 0, 1, -1).astype(np.int64),
        mean=flat.mean(1).numpy(),
        std=flat.std(1, correction=0).clamp_min(1e-6).numpy(),
        n_fit=len(levels),
        n_decision=int(valid.size),
        fit_seeds=levels.seeds.copy(),
        _acts=feats,
        _goal=goal,
        _attr_rows=attr_rows,
        _attr_mazes=valid,
        l2=l2,
        units="latents",
        decoder=sae.W_dec.detach().float().cpu().clone(),
        sae=name,
    )


# ---------------------------------------------------------------------------------------------- choosing the set
def set_sizes(n_channels: int) -> list[int]:
    """Candidate set sizes: 1..4, then powers of two, up to half the layer (a set, not the whole layer)."""
    cap = max(1, n_channels // 2)
    sizes = {k for k in (1, 2, 3, 4) if k <= cap}
    k = 8
    while k <= cap:
        sizes.add(k)
        k *= 2
    return sorted(sizes)


def choose_set(
    found: GoalChannels,
    criterion: Callable[[list[tuple[list[int], float]]], np.ndarray],
    *,
    sizes: Sequence[int] | None = None,
    magnitudes: Sequence[float] = (1.0, 2.0, 4.0, 8.0, 16.0),
) -> dict:
    """The set size (top-k of the ranking) and magnitude maximising `criterion` over the grid sizes x magnitudes.

    `criterion(candidates)` gets every (channels, magnitude) candidate at once and returns one score per candidate
    (higher is better). It must be computed on fit mazes only; `workbench.rl.retarget` passes the mean normalised
    path probability to held-out targets on fit mazes. Ties go to the smaller set, then the smaller magnitude."""
    sizes = list(sizes) if sizes is not None else set_sizes(found.n_channels)
    if not sizes or min(sizes) < 1 or max(sizes) > found.n_channels:
        raise WorkbenchError(f"set sizes must be in 1..{found.n_channels}, got {sizes}")
    if not magnitudes:
        raise WorkbenchError("choose_set needs at least one magnitude")
    grid = [(k, float(m)) for k in sorted(set(sizes)) for m in sorted(set(magnitudes))]
    scores = np.asarray(criterion([(found.top(k), m) for k, m in grid]), dtype=np.float64)
    if scores.shape != (len(grid),):
        raise WorkbenchError(f"criterion returned {scores.shape} scores for {len(grid)} candidates")
    best = int(np.nanargmax(np.where(np.isfinite(scores), scores, -np.inf)))
    k, m = grid[best]
    return {
        "size": k,
        "magnitude": m,
        "channels": found.top(k),
        "score": float(scores[best]),
        "table": [{"size": kk, "magnitude": mm, "score": float(s)} for (kk, mm), s in zip(grid, scores, strict=True)],
    }


# --------------------------------------------------------------------------------------------------- stability
def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def ranking_stability(found: GoalChannels, size: int, *, n_boot: int = 20, seed: int = 0) -> dict:
    """Bootstrap the fit mazes `n_boot` times, re-rank, and report how stable the ranking and the top-`size` set are:
    per channel, how often it is in the set; the Spearman correlation of each bootstrap ranking with the full one and
    the Jaccard overlap of the sets (mean and 2.5-97.5 percentiles over bootstraps)."""
    if found._acts is None or found._goal is None:
        raise WorkbenchError(
            "ranking_stability needs a GoalChannels from discover_goal_channels (it keeps the fit data)"
        )
    if n_boot < 2:
        raise WorkbenchError(f"n_boot must be >= 2, got {n_boot}")
    rng = np.random.default_rng([seed, 0xB007])
    n, c = found.n_fit, found.n_channels
    full_set = set(found.top(size))
    in_set = np.zeros(c)
    rho, jac = [], []
    attr_rows, attr_mazes = found._attr_rows, found._attr_mazes
    row_of = {int(m): i for i, m in enumerate(attr_mazes)} if attr_mazes is not None else {}
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        acts, goal = found._acts[torch.as_tensor(idx)], found._goal[idx]
        rows = [row_of[int(i)] for i in idx if int(i) in row_of]
        scores = {
            "correlation": correlation_scores(acts, goal),
            "probe": probe_scores(acts, goal, found.l2, max_iter=30),
            "attribution": attr_rows[rows].mean(axis=0) if rows else np.zeros(c),
        }
        ranking, mean_rank = combine_scores(scores)
        top = {int(x) for x in ranking[:size]}
        in_set[list(top)] += 1
        rho.append(_spearman(-mean_rank, -found.mean_rank))
        jac.append(len(top & full_set) / len(top | full_set))

    def summary(values: list[float]) -> dict:
        v = np.asarray(values, dtype=np.float64)
        return {
            "mean": float(np.nanmean(v)),
            "ci95": [float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))],
        }

    freq = in_set / n_boot
    return {
        "n_boot": n_boot,
        "size": size,
        "spearman_vs_full": summary(rho),
        "jaccard_vs_full": summary(jac),
        "set_frequency": {int(ch): float(freq[ch]) for ch in np.argsort(-freq, kind="stable") if freq[ch] > 0},
    }
