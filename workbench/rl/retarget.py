"""Retargeting: push the goal channels up at a chosen cell and measure whether the agent goes there, with controls.

Why: Turner et al. (2023) clamped one hand-picked channel (55) at a cell and showed the mouse heading there in a few
mazes. This module does the experiment at scale and with controls, on any maze-family subject (native or procgen):

1. channels are found automatically (`workbench.rl.goal_channels`) on fit mazes; the set size and the push
   magnitude are chosen on fit (maze, target) pairs by the mean normalised path probability, never on the evaluated
   pairs;
2. on >= 200 evaluated (maze, target) pairs -- one target per maze, a free cell off both of the agent's natural
   routes (start -> cheese, start -> top-right corner), whose own route avoids the cheese and whose layer cell is not
   the cheese's -- four conditions run as ONE batch through `agent.world.run`, each row with its own edit (the
   edit's hook sees the batch's live rows in level order; rows whose episode has ended skip the forward pass):
   - discovered: the chosen set, each channel set at the target's layer cell to mean + sign * m * std
     (`mode="clamp"`) or raised there by sign * m * std (`mode="add"`, a goal-shaped bump at one cell);
   - random: per pair a random set of channels of the same size, pushed by the same m (in each channel's own std);
   - single_best: the one channel with the highest correlation with the cheese map (what a person inspecting
     heatmaps would pick), same m;
   - baseline: no intervention.
3. measures per pair, each reported with a 95% interval and paired effects between conditions:
   - success: the mouse steps on the target within the step limit, before the cheese (episodes end at the cheese);
   - path probability (Turner et al.): the geometric mean of P(move along the shortest path to the target) over
     that path's cells, the mouse placed on each cell with the edit applied;
   - causal-intervention score (after Taufeeque et al. 2025: edit the represented goal, count how often the agent
     follows): at the edit point -- the first cell of the path to the target where the un-intervened greedy move
     leaves the path -- does the intervened greedy move follow the path? Pairs with no edit point (the agent would
     walk the path anyway) are left out; n says how many count.
4. uniform offset (Sturgeon et al. 2025): add a constant (in std units, signed by each channel's correlation) to the
   discovered channels at every cell, and to random sets of the same size, and report whether and where the agent
   goes instead: goal rates, how often the end cell moves, and the mean shift of the end cell within the maze.

Actions are sampled per pair from a counter-based stream keyed by (seed, pair), with one generator per row instead
of one per batch, so the same pair gives the same actions whether it runs in a batch of 800 or alone
(`benchmarks/bench_retarget.py` checks this), and all conditions of a pair share their random numbers (paired
comparisons). The mouse's path is replayed from the sampled actions on the grid (walls block; actions outside the
four directions do not move) and checked against the world's own records.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from workbench.errors import WorkbenchError, unknown
from workbench.hooks import hooks, run_with_hooks
from workbench.metrics import bootstrap_ci, paired_diff_ci, rate
from workbench.policy import direction_probs, logits_of
from workbench.probes import layer_cell_index
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import ACTION_DELTAS, MazeLevels, distances_to, greedy_actions, level_uniform
from workbench.rl.goal_channels import (
    DEFAULT_LAYER,
    GoalChannels,
    choose_set,
    discover_goal_channels,
    discover_goal_latents,
    fit_levels,
    goal_cells,
    ranking_stability,
    spatial_layer,
)
from workbench.rl.steering import check_layer
from workbench.rl.world import check_split

__all__ = [
    "CONDITIONS",
    "battery_metrics",
    "EFFECTS",
    "MEASURES",
    "MODES",
    "Edit",
    "Pairs",
    "Rollouts",
    "edit_point_hits",
    "fixed_target_pairs",
    "normalised_path_probability",
    "path_step_probs",
    "retarget_experiment",
    "retarget_maze",
    "retarget_view",
    "RetargetView",
    "run_pairs",
    "sample_pairs",
    "set_edit",
    "unit_edit",
    "shortest_paths",
    "target_layer_cells",
]

MODES = ("clamp", "add")
CONDITIONS = ("discovered", "random", "single_best", "baseline")
MEASURES = ("success", "path_probability", "cis")
EFFECTS = {
    "discovered_vs_random": ("random", "discovered"),
    "discovered_vs_baseline": ("baseline", "discovered"),
    "single_best_vs_baseline": ("baseline", "single_best"),
    "discovered_vs_single_best": ("single_best", "discovered"),
}
"""effect name -> (a, b): the paired difference b - a."""
DEFAULT_MAGNITUDES = (1.0, 2.0, 4.0, 8.0, 16.0)
DEFAULT_OFFSETS = (-1.0, 1.0)
_TARGET_STREAM = 0x7A76
_RANDOM_STREAM = 0x5E75
_ACTION_STREAM = 0xAC7


# ---------------------------------------------------------------------------------------------------------- pairs
@dataclass
class Pairs:
    """(maze, target) pairs: `levels[i]` with target cell `targets[i]` (row, col in the world grid)."""

    levels: MazeLevels
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.levels)

    def select(self, index: np.ndarray) -> Pairs:
        return Pairs(self.levels.select(index), self.targets[index].copy())


def _geometry(levels: MazeLevels) -> dict[str, np.ndarray]:
    n = len(levels)
    rows = np.arange(n)
    d_start = distances_to(levels, levels.mouse)
    d_cheese = distances_to(levels, levels.cheese)
    d_corner = distances_to(levels, levels.corner())
    s_cheese = d_start[rows, levels.cheese[:, 0], levels.cheese[:, 1]]
    s_corner = d_start[rows, levels.corner()[:, 0], levels.corner()[:, 1]]
    free = ~levels.walls & (d_start >= 0)
    valid = free.copy()
    valid[rows, levels.mouse[:, 0], levels.mouse[:, 1]] = False
    valid[rows, levels.cheese[:, 0], levels.cheese[:, 1]] = False
    through_cheese = d_start == s_cheese[:, None, None] + d_cheese  # the route to the cell passes the cheese
    valid &= ~through_cheese
    on_cheese_route = (d_start + d_cheese) == s_cheese[:, None, None]
    on_corner_route = (d_start + d_corner) == s_corner[:, None, None]
    return {"valid": valid, "off_routes": valid & ~on_cheese_route & ~on_corner_route}


def sample_pairs(levels: MazeLevels, n: int, seed: int, grid: int) -> Pairs:
    """One target per maze, for the first `n` mazes that have one: uniform over free cells that are off the agent's
    natural routes (start -> cheese, start -> corner), whose route avoids the cheese and whose layer cell (on a
    `grid` x `grid` layer) is not the cheese's. Fewer than `n` pairs only if the mazes run out."""
    levels = levels.select(np.flatnonzero(levels.has_cheese()))
    cand = _geometry(levels)["off_routes"]
    w = levels.world_size
    cheese_cell = goal_cells(levels, grid)
    layer_of = layer_cell_index(np.arange(w * w), w, grid, levels.PIXELS).reshape(1, w, w)
    cand &= layer_of != cheese_cell[:, None, None]
    rng = np.random.default_rng([seed, _TARGET_STREAM])
    keep, targets = [], []
    for i in range(len(levels)):
        cells = np.argwhere(cand[i])
        if len(cells) == 0:
            continue
        keep.append(i)
        targets.append(cells[rng.integers(len(cells))])
        if len(keep) == n:
            break
    if not keep:
        raise WorkbenchError("no maze has a free cell off the agent's routes to use as a target")
    return Pairs(levels.select(np.array(keep)), np.array(targets, dtype=np.int64).reshape(-1, 2))


def fixed_target_pairs(levels: MazeLevels, cell: Sequence[int], n: int) -> Pairs:
    """Pairs with the same target `cell` (row, col) in each of the first `n` mazes where it is a free cell other than
    the start and the cheese, reachable without passing the cheese. Outside the world, or a wall / unusable in every
    maze drawn: one WorkbenchError."""
    if len(cell) != 2:
        raise WorkbenchError(f"a target is one cell (row, col), got {tuple(cell)}")
    r, c = int(cell[0]), int(cell[1])
    w = levels.world_size
    if not (0 <= r < w and 0 <= c < w):
        raise WorkbenchError(f"target cell ({r}, {c}) is outside the {w}x{w} maze world (rows and cols 0..{w - 1})")
    levels = levels.select(np.flatnonzero(levels.has_cheese()))
    ok = np.flatnonzero(_geometry(levels)["valid"][:, r, c])[:n]
    if ok.size == 0:
        walls = int(levels.walls[:, r, c].sum())
        raise WorkbenchError(
            f"target cell ({r}, {c}) is a wall in {walls} of the {len(levels)} mazes drawn and the start, the cheese "
            "or behind the cheese in the rest; choose a free cell (e.g. nearer the maze's centre)"
        )
    return Pairs(levels.select(ok), np.tile(np.array([[r, c]], dtype=np.int64), (ok.size, 1)))


# ---------------------------------------------------------------------------------------------------------- edits
@dataclass
class Edit:
    """Per-row edits of one layer's activations (B, C, H, W): row i sets (`mode="clamp"`) or raises (`"add"`) the
    channels `mask[i]` at layer cell `cells[i]` to / by `values[i]`, and adds `offset[i]` (C,) at every cell."""

    mask: Tensor  # (N, C) bool
    values: Tensor  # (N, C) float
    cells: Tensor  # (N, 2) long
    mode: str = "clamp"
    offset: Tensor | None = None  # (N, C) float

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise unknown("retarget mode", self.mode, MODES)

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def take(self, index: np.ndarray) -> Edit:
        idx = torch.as_tensor(np.asarray(index, dtype=np.int64))
        off = None if self.offset is None else self.offset[idx]
        return Edit(self.mask[idx], self.values[idx], self.cells[idx], self.mode, off)

    @staticmethod
    def cat(edits: Sequence[Edit]) -> Edit:
        modes = {e.mode for e in edits if bool(e.mask.any())} or {edits[0].mode}  # rows that edit nothing fit any
        if len(modes) != 1:
            raise WorkbenchError(f"cannot batch edits of different modes {sorted(modes)}")
        offs = [e.offset if e.offset is not None else torch.zeros_like(e.values) for e in edits]
        return Edit(
            torch.cat([e.mask for e in edits]),
            torch.cat([e.values for e in edits]),
            torch.cat([e.cells for e in edits]),
            modes.pop(),
            torch.cat(offs) if any(e.offset is not None for e in edits) else None,
        )

    def hook(self):
        """A TransformerLens-signature hook applying row i's edit to batch row i (the batch must have N rows)."""
        mask, values, cells, offset, add = self.mask, self.values, self.cells, self.offset, self.mode == "add"

        def hook_fn(act: Tensor, hook) -> Tensor:
            if act.ndim != 4 or act.shape[0] != mask.shape[0] or act.shape[1] != mask.shape[1]:
                raise WorkbenchError(
                    f"edit for {tuple(mask.shape)} (rows, channels) does not fit activation {tuple(act.shape)} at "
                    f"{hook.name}"
                )
            out = act.clone()
            if offset is not None:
                out = out + offset.to(act)[:, :, None, None]
            rows = torch.arange(act.shape[0], device=act.device)
            r, c = cells[:, 0].to(act.device), cells[:, 1].to(act.device)
            here = out[rows, :, r, c]  # (N, C)
            m, v = mask.to(act.device), values.to(act)
            out[rows, :, r, c] = torch.where(m, here + v, here) if add else torch.where(m, v, here)
            return out

        return hook_fn


def set_edit(
    found: GoalChannels,
    sets: Sequence[Sequence[int]] | np.ndarray,
    magnitude: float,
    layer_cells: np.ndarray,
    mode: str = "clamp",
) -> Edit:
    """The edit pushing channel set `sets[i]` (or one set for all rows) at `layer_cells[i]` (N, 2) by `magnitude`
    standard deviations in each channel's goal direction (sign of its correlation)."""
    n, c = len(layer_cells), found.n_channels
    mask = torch.zeros(n, c, dtype=torch.bool)
    if isinstance(sets, np.ndarray) and sets.dtype == bool:
        mask[:] = torch.as_tensor(sets)
    else:
        per_row = list(sets)
        if per_row and not isinstance(per_row[0], (list, tuple, np.ndarray)):
            per_row = [per_row] * n
        for i, chans in enumerate(per_row):
            mask[i, list(chans)] = True
    push = torch.as_tensor(found.sign * found.std * float(magnitude), dtype=torch.float32)
    values = (torch.as_tensor(found.mean, dtype=torch.float32) + push) if mode == "clamp" else push
    return Edit(mask, values.expand(n, c).clone(), torch.as_tensor(layer_cells, dtype=torch.long), mode)


def unit_edit(
    found: GoalChannels,
    sets: Sequence[Sequence[int]] | np.ndarray,
    magnitude: float,
    layer_cells: np.ndarray,
    mode: str = "clamp",
    offset: np.ndarray | None = None,
) -> Edit:
    """`set_edit` in the units `found` ranks: channels as they are; SAE latents (`found.decoder`, (L, C)) as the
    channel push their decoder directions make, `mode="add"` at the target cell: sum over the chosen latents of
    sign * magnitude * std * W_dec[latent]. `offset` (N, units) is a push added at every cell, mapped the same way."""
    e = set_edit(found, sets, magnitude, layer_cells, mode)
    off = None if offset is None else torch.as_tensor(offset, dtype=torch.float32)
    if found.decoder is None:
        e.offset = off
        return e
    if mode != "add":
        raise WorkbenchError("SAE latents are pushed along their decoder directions: use mode 'add', not 'clamp'")
    dec = found.decoder.float()
    values = (e.mask.float() * e.values) @ dec
    mask = torch.ones(values.shape, dtype=torch.bool)
    return Edit(mask, values, e.cells, "add", None if off is None else off @ dec)


def _no_edit(n: int, c: int) -> Edit:
    return Edit(torch.zeros(n, c, dtype=torch.bool), torch.zeros(n, c), torch.zeros(n, 2, dtype=torch.long))


def target_layer_cells(pairs: Pairs, grid: int) -> np.ndarray:
    """(N, 2) the layer cell (row, col) under each pair's target on a `grid` x `grid` layer."""
    flat = goal_cells(pairs.levels, grid, pairs.targets)
    return np.stack([flat // grid, flat % grid], axis=1)


def random_sets(n: int, n_channels: int, size: int, seed: int) -> np.ndarray:
    """(n, C) bool: per row a uniformly random set of `size` channels (of all channels), seeded."""
    rng = np.random.default_rng([seed, _RANDOM_STREAM])
    keys = rng.random((n, n_channels))
    mask = np.zeros((n, n_channels), dtype=bool)
    np.put_along_axis(mask, np.argsort(keys, axis=1)[:, :size], True, axis=1)
    return mask


# ------------------------------------------------------------------------------------------------------- rollouts
class _Driver(nn.Module):
    """Wraps the policy for one rollout: samples row i's action from its own counter-based stream (so a pair's actions
    do not depend on what else is in the batch), replays the mouse on the grid, and returns logits that make the
    rollout loop take exactly that action (0 for it, -1e9 for the rest).

    Rows whose episode has ended (the cheese was reached; the env has moved on to an unrelated level) are not run
    through the policy: the forward pass covers the live rows only, with the edit's rows for them, which is what keeps
    a batch from paying for every row until the slowest episode ends."""

    needs_full_batch = True  # row i is pair i: the rollout loop must not drop finished rows (`workbench.rl.loop`)

    def __init__(
        self, policy: nn.Module, pairs: Pairs, keys: np.ndarray, seed: int, greedy: bool, edit: Edit | None, layer: str
    ) -> None:
        super().__init__()
        self.policy = policy
        lv = pairs.levels
        self.walls, self.cheese, self.targets = lv.walls, lv.cheese, pairs.targets
        self.pos = lv.mouse.copy()
        self.groups = lv.ACTION_GROUPS
        self.keys = np.asarray(keys, dtype=np.int64)
        self.seed, self.greedy = int(seed), greedy
        self.edit, self.layer = edit, layer
        n = len(lv)
        self.t = 0
        self.n_actions = 0
        self.done = np.zeros(n, dtype=bool)
        self.target_step = np.full(n, -1, dtype=np.int64)
        self.cheese_step = np.full(n, -1, dtype=np.int64)
        self.final = self.pos.copy()

    def forward(self, obs: Tensor) -> Tensor:
        n = len(self.pos)
        if obs.shape[0] != n:
            raise WorkbenchError(f"the rollout passed {obs.shape[0]} observations for {n} pairs")
        live = np.flatnonzero(~self.done)
        action = np.zeros(n, dtype=np.int64)
        if live.size:
            every = live.size == n
            x = obs if every else obs[torch.as_tensor(live, device=obs.device)]
            fwd = [] if self.edit is None else [(self.layer, (self.edit if every else self.edit.take(live)).hook())]
            with hooks(self.policy, fwd):
                logits = logits_of(self.policy(x), live.size).float()
            self.n_actions = int(logits.shape[1])
            probs = torch.softmax(logits, dim=-1).cpu().double()
            if self.greedy:
                action[live] = probs.argmax(1).numpy()
            else:
                stream = _ACTION_STREAM + self.seed * 1_000_003 + self.t
                u = torch.as_tensor(level_uniform(self.keys[live], stream=stream, count=1)[:, 0])
                cdf = probs.cumsum(1)
                action[live] = (cdf < (u * cdf[:, -1])[:, None]).sum(1).clamp_max(self.n_actions - 1).numpy()
        direction = np.full(self.n_actions, -1, dtype=np.int64)
        for d, group in enumerate(self.groups):
            direction[[a for a in group if a < self.n_actions]] = d
        self._move(direction[action])
        out = torch.full((n, self.n_actions), -1e9, device=obs.device)
        out[torch.arange(n), torch.as_tensor(action)] = 0.0
        return out

    def _move(self, d: np.ndarray) -> None:
        self.t += 1
        live = ~self.done
        moving = live & (d >= 0)
        w = self.walls.shape[-1]
        step = self.pos + ACTION_DELTAS[np.clip(d, 0, 3)]
        inside = np.all((step >= 0) & (step < w), axis=1)
        sc = np.clip(step, 0, w - 1)
        ok = moving & inside & ~self.walls[np.arange(len(d)), sc[:, 0], sc[:, 1]]
        self.pos[ok] = step[ok]
        self.final[live] = self.pos[live]
        at_target = live & np.all(self.pos == self.targets, axis=1) & (self.target_step < 0)
        self.target_step[at_target] = self.t
        at_cheese = live & np.all(self.pos == self.cheese, axis=1)
        self.cheese_step[at_cheese] = self.t
        self.done |= at_cheese


@dataclass
class Rollouts:
    """One episode per pair. `target_step[i]`: the first step on the target, before the cheese (-1: never);
    `cheese_step[i]` (-1: never); `final[i]`: the mouse's cell when the episode ended (cheese or step limit);
    `records`: the world's own records (`flags()`, `rates()`)."""

    target_step: np.ndarray
    cheese_step: np.ndarray
    final: np.ndarray
    records: Any

    @property
    def success(self) -> np.ndarray:
        return self.target_step >= 0


def run_pairs(
    agent: Agent,
    pairs: Pairs,
    edit: Edit | None,
    layer: str,
    *,
    seed: int = 0,
    keys: np.ndarray | None = None,
    greedy: bool = False,
) -> Rollouts:
    """One episode per pair, all rows in one batch through `agent.world.run`, row i edited by `edit` row i at
    `layer` on every forward pass until its episode ends (then it leaves the forward pass). `keys[i]` names pair
    i's action stream (default: its index), so a pair run alone with its key takes the same actions as in a batch."""
    n = len(pairs)
    keys = np.arange(n, dtype=np.int64) if keys is None else np.asarray(keys, dtype=np.int64)
    if keys.shape != (n,):
        raise WorkbenchError(f"{n} pairs but {keys.shape[0]} action-stream keys")
    if edit is not None and len(edit) != n:
        raise WorkbenchError(f"{n} pairs but an edit of {len(edit)} rows")
    if edit is not None:
        check_layer(agent, layer)
    driver = _Driver(agent.policy, pairs, keys, seed, greedy, edit, layer)
    records = agent.world.run(driver, pairs.levels, seed=seed, greedy=True)
    if hasattr(records, "cheese_reached") and hasattr(records, "cheese_step"):
        mine = driver.cheese_step >= 0
        theirs = np.asarray(records.cheese_reached, dtype=bool)
        bad = np.flatnonzero((mine != theirs) | (mine & (driver.cheese_step != np.asarray(records.cheese_step))))
        if bad.size:
            i = int(bad[0])
            raise WorkbenchError(
                f"the replayed mouse path disagrees with the world's records at pair {i} (cheese step "
                f"{driver.cheese_step[i]} vs {int(records.cheese_step[i])}): does this world move the mouse as "
                "MazeLevels.ACTION_GROUPS says?"
            )
    return Rollouts(driver.target_step, driver.cheese_step, driver.final, records)


# --------------------------------------------------------------------------------------------------- path measures
@dataclass
class PathSteps:
    """Every step of every pair's shortest path to its target, sorted by (pair, step): the mouse at `cells[j]` of
    pair `row[j]` should move `actions[j]` (0 up, 1 down, 2 left, 3 right). `lengths[i]`: pair i's path length."""

    row: np.ndarray
    step: np.ndarray
    cells: np.ndarray
    actions: np.ndarray
    lengths: np.ndarray


def shortest_paths(levels: MazeLevels, targets: np.ndarray, starts: np.ndarray | None = None) -> PathSteps:
    """The shortest path from each maze's mouse (or `starts`) to `targets` (N, 2) as steps (see PathSteps)."""
    n = len(levels)
    targets = np.asarray(targets, dtype=np.int64).reshape(n, 2)
    dist = distances_to(levels, targets)
    pos = (levels.mouse if starts is None else np.asarray(starts, dtype=np.int64)).copy()
    here = dist[np.arange(n), pos[:, 0], pos[:, 1]]
    if np.any(here < 0):
        i = int(np.flatnonzero(here < 0)[0])
        raise WorkbenchError(f"target {tuple(int(v) for v in targets[i])} of maze {i} is unreachable from the mouse")
    rows, steps, cells, acts = [], [], [], []
    for t in range(int(here.max()) if n else 0):
        a = greedy_actions(dist, pos)
        live = np.flatnonzero(a >= 0)
        rows.append(live)
        steps.append(np.full(live.size, t))
        cells.append(pos[live].copy())
        acts.append(a[live])
        pos[live] += ACTION_DELTAS[a[live]]
    cat = lambda xs, shape: np.concatenate(xs) if xs else np.zeros(shape, dtype=np.int64)  # noqa: E731
    row, step = cat(rows, (0,)), cat(steps, (0,))
    order = np.lexsort((step, row))
    return PathSteps(
        row=row[order],
        step=step[order],
        cells=cat(cells, (0, 2))[order],
        actions=cat(acts, (0,))[order],
        lengths=here.astype(np.int64),
    )


def path_step_probs(
    agent: Agent,
    pairs: Pairs,
    paths: PathSteps,
    edits: dict[str, Edit | None],
    layer: str,
    batch: int = 2048,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per condition: P(the path's move) and the greedy direction, with the mouse on every path cell (M,) and the
    condition's edit (row = the pair's row of the edit). The observations are built once for all conditions."""
    obs = agent.world.observe(pairs.levels.select(paths.row).with_mouse(paths.cells))
    groups = pairs.levels.ACTION_GROUPS
    out = {}
    for name, edit in edits.items():
        p_move, greedy = [], []
        for lo in range(0, len(paths.row), batch):
            sl = slice(lo, lo + batch)
            x = torch.as_tensor(obs[sl])
            fwd = [] if edit is None else [(layer, edit.take(paths.row[sl]).hook())]
            with torch.no_grad():
                logits = logits_of(run_with_hooks(agent.policy, x, fwd_hooks=fwd), len(x)).float().cpu()
            probs = direction_probs(logits, groups).double()
            p_move.append(probs[torch.arange(len(x)), torch.as_tensor(paths.actions[sl])].numpy())
            greedy.append(probs.argmax(1).numpy())
        empty = np.zeros(0)
        out[name] = (np.concatenate(p_move) if p_move else empty, np.concatenate(greedy) if greedy else empty)
    return out


def normalised_path_probability(step_probs: np.ndarray, row: np.ndarray, n: int) -> np.ndarray:
    """(n,) per pair: the geometric mean of its steps' probabilities (Turner et al.'s normalised path probability);
    nan for a pair with no steps."""
    logp = np.log(np.clip(np.asarray(step_probs, dtype=np.float64), 1e-300, None))
    total = np.bincount(row, weights=logp, minlength=n)
    count = np.bincount(row, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.exp(total / np.maximum(count, 1)), np.nan)


def edit_point_hits(
    base_greedy: np.ndarray, cond_greedy: np.ndarray, actions: np.ndarray, row: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """(defined (n,), hit (n,)): a pair's edit point is the first path step (steps sorted by pair, then step) where
    the un-intervened greedy move leaves the path; `hit` says the intervened greedy move follows the path there."""
    off = np.asarray(base_greedy) != np.asarray(actions)
    defined = np.zeros(n, dtype=bool)
    hit = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(off)
    if idx.size:
        first = idx[np.unique(row[idx], return_index=True)[1]]
        defined[row[first]] = True
        hit[row[first]] = np.asarray(cond_greedy)[first] == np.asarray(actions)[first]
    return defined, hit


# ------------------------------------------------------------------------------------------------------ summaries
def _mean_ci(values: np.ndarray, seed: int) -> dict:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    lo, hi = bootstrap_ci(v, seed=seed) if v.size else (float("nan"), float("nan"))
    return {
        "mean": float(v.mean()) if v.size else float("nan"),
        "ci95": [lo, hi],
        "median": float(np.median(v)) if v.size else float("nan"),
        "n": int(v.size),
    }


def _paired(a: np.ndarray, b: np.ndarray, seed: int) -> dict:
    r = paired_diff_ci(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), seed=seed)
    return {"diff": r["diff"], "ci95": r["ci95"], "n": r["n"]}


def _validate(
    agent: Agent,
    layer: str,
    split: str,
    episodes: int,
    mode: str,
    n_fit: int,
    channels,
    size,
    magnitude,
    offsets,
    n_latents: int | None = None,
) -> tuple[int, int, int]:
    if getattr(agent.world, "family", None) != "maze":
        raise WorkbenchError(
            f"retargeting moves a maze goal; {agent.name} is a {getattr(agent.world, 'family', '?')} subject"
        )
    check_split(agent.world, split)
    if int(episodes) < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    if int(n_fit) < 10:
        raise WorkbenchError(f"n_fit must be >= 10, got {n_fit}")
    if mode not in MODES:
        raise unknown("retarget mode", mode, MODES)
    shape = spatial_layer(agent, layer)
    c = shape[0] if n_latents is None else int(n_latents)
    what = "channel" if n_latents is None else "latent"
    if channels is not None:
        chans = list(channels)
        if not chans:
            raise WorkbenchError("the channel set is empty; name at least one channel or omit it to discover the set")
        bad = [ch for ch in chans if not 0 <= int(ch) < c]
        if bad:
            raise WorkbenchError(f"{what} {bad[0]} is out of range for {layer} ({c} {what}s: 0..{c - 1})")
        if len(set(int(ch) for ch in chans)) != len(chans):
            raise WorkbenchError(f"channel set {chans} repeats a channel")
    if size is not None and not 1 <= int(size) <= c:
        raise WorkbenchError(f"set size must be in 1..{c} for {layer}, got {size}")
    if magnitude is not None and not (math.isfinite(float(magnitude)) and float(magnitude) > 0):
        raise WorkbenchError(f"magnitude must be a positive number of standard deviations, got {magnitude}")
    if any(not math.isfinite(float(o)) for o in offsets):
        raise WorkbenchError(f"offsets must be finite numbers of standard deviations, got {list(offsets)}")
    return shape


# ------------------------------------------------------------------------------------------------------ experiment
def retarget_experiment(
    agent: Agent,
    *,
    layer: str = DEFAULT_LAYER,
    split: str = "ood",
    episodes: int = 200,
    seed: int = 0,
    n_fit: int = 500,
    n_select: int = 150,
    mode: str | None = None,
    channels: Sequence[int] | None = None,
    size: int | None = None,
    magnitude: float | None = None,
    magnitudes: Sequence[float] = DEFAULT_MAGNITUDES,
    target: Sequence[int] | None = None,
    offsets: Sequence[float] = DEFAULT_OFFSETS,
    n_boot: int = 20,
    greedy: bool = False,
    sae: str | None = None,
) -> dict:
    """Discover the goal channels of `layer` on fit mazes, choose the set there, and retarget on `episodes`
    evaluated (maze, target) pairs with controls (see the module docstring). JSON-ready.

    `channels` fixes the set (e.g. hand-picked ones; discovery still runs for the controls and the table); `size`
    fixes the set size, `magnitude` the push (std units); `target` (row, col) uses one cell in every maze where it is
    usable instead of one sampled target per maze; `offsets` are the uniform offsets to check (empty: skip);
    `n_boot` bootstraps of the fit mazes for ranking stability (0: skip). `sae` (a shipped SAE name or folder,
    trained at `layer`) ranks and pushes that SAE's latents instead of channels (see `unit_edit`); `channels` then
    names latents. `mode` defaults to clamp for channels and add for latents."""
    t0 = time.time()
    if int(n_boot) == 1 or int(n_boot) < 0:
        raise WorkbenchError(f"n_boot must be 0 (skip the stability bootstrap) or >= 2, got {n_boot}")
    if int(n_select) < 5:
        raise WorkbenchError(f"n_select (fit pairs that choose the set) must be >= 5, got {n_select}")
    if not magnitudes or any(not (math.isfinite(float(x)) and float(x) > 0) for x in magnitudes):
        raise WorkbenchError(f"magnitudes must be positive numbers of standard deviations, got {list(magnitudes)}")
    sae_model = None
    if sae is not None:
        from workbench.sae.train import load_sae

        sae_model = load_sae(sae)
        mode = mode or "add"
        if mode != "add":
            raise WorkbenchError("SAE latents are pushed along their decoder directions: use --mode add, not clamp")
    mode = mode or "clamp"
    n_latents = None if sae_model is None else int(sae_model.cfg.d_sae)
    c, grid, _ = _validate(agent, layer, split, episodes, mode, n_fit, channels, size, magnitude, offsets, n_latents)
    world = agent.world
    # --- evaluated pairs (drawn first, so the fit mazes can avoid them)
    draw = int(episodes) + max(10, int(episodes) // 2)
    eval_levels = world.levels(split, draw, seed)
    if target is not None:
        pairs = fixed_target_pairs(eval_levels, target, int(episodes))
    else:
        pairs = sample_pairs(eval_levels, int(episodes), seed, grid)
    n = len(pairs)
    # --- discovery and the choice of set, on fit mazes only
    fit = fit_levels(agent, n_fit, seed, eval_levels.seeds.tolist())
    if sae_model is None:
        found = discover_goal_channels(agent, layer, levels=fit)
    else:
        found = discover_goal_latents(agent, layer, sae_model, levels=fit, name=str(sae))
    u = found.n_channels  # the units ranked and pushed: channels, or the SAE's latents
    fit_pairs = sample_pairs(fit, n_select, seed + 1, grid)
    fit_paths = shortest_paths(fit_pairs.levels, fit_pairs.targets)
    fit_cells = target_layer_cells(fit_pairs, grid)

    def criterion(candidates: list[tuple[list[int], float]]) -> np.ndarray:
        edits = {str(i): unit_edit(found, chans, m, fit_cells, mode) for i, (chans, m) in enumerate(candidates)}
        probs = path_step_probs(agent, fit_pairs, fit_paths, edits, layer)
        return np.array(
            [
                np.nanmean(normalised_path_probability(probs[str(i)][0], fit_paths.row, len(fit_pairs)))
                for i in range(len(candidates))
            ]
        )

    if channels is not None:
        chosen = [int(ch) for ch in channels]
        mags = [float(magnitude)] if magnitude is not None else list(magnitudes)
        scores = criterion([(chosen, m) for m in mags])
        best = int(np.nanargmax(scores))
        selection = {
            "size": len(chosen),
            "magnitude": mags[best],
            "channels": chosen,
            "score": float(scores[best]),
            "table": [
                {"size": len(chosen), "magnitude": m, "score": float(s)} for m, s in zip(mags, scores, strict=True)
            ],
            "given": True,
        }
    else:
        selection = choose_set(
            found,
            criterion,
            sizes=None if size is None else [int(size)],
            magnitudes=[float(magnitude)] if magnitude is not None else magnitudes,
        )
        selection["given"] = False
    k, m, chosen = selection["size"], selection["magnitude"], selection["channels"]
    stability = ranking_stability(found, k, n_boot=n_boot, seed=seed) if n_boot >= 2 else None
    best_single = found.best_by_correlation()
    # --- edits of the four conditions on the evaluated pairs
    cells = target_layer_cells(pairs, grid)
    rand = random_sets(n, u, k, seed)
    edits: dict[str, Edit | None] = {
        "discovered": unit_edit(found, chosen, m, cells, mode),
        "random": unit_edit(found, rand, m, cells, mode),
        "single_best": unit_edit(found, [best_single], m, cells, mode),
        "baseline": None,
    }
    # path probability and the causal-intervention score
    paths = shortest_paths(pairs.levels, pairs.targets)
    step = path_step_probs(agent, pairs, paths, edits, layer)
    path_prob = {name: normalised_path_probability(p, paths.row, n) for name, (p, _) in step.items()}
    cis = {name: edit_point_hits(step["baseline"][1], g, paths.actions, paths.row, n) for name, (_, g) in step.items()}
    defined = cis["baseline"][0]
    # rollouts: every condition (and every uniform offset) as one batch
    blocks = [edits[name] or _no_edit(n, c) for name in CONDITIONS]
    offset_rows = []
    for o in offsets:
        for set_name, mask in (("discovered", chosen), ("random", rand)):
            e = _no_edit(n, c)
            sel = set_edit(found, mask, 1.0, cells, mode).mask
            push = torch.as_tensor(found.sign * found.std * float(o), dtype=torch.float32).expand(n, u)
            off = torch.where(sel, push, torch.zeros_like(push))
            e.offset = off if found.decoder is None else off @ found.decoder.float()  # latents: their decoder push
            blocks.append(e)
            offset_rows.append((set_name, float(o)))
    batch_pairs = pairs.select(np.tile(np.arange(n), len(blocks)))
    roll = run_pairs(
        agent,
        batch_pairs,
        Edit.cat(blocks),
        layer,
        seed=seed,
        keys=np.tile(np.arange(n), len(blocks)),
        greedy=greedy,
    )
    flags = roll.records.flags()

    def part(b: int) -> slice:
        return slice(b * n, (b + 1) * n)

    success = {name: roll.success[part(b)] for b, name in enumerate(CONDITIONS)}
    cheese_first = {name: np.asarray(flags["cheese"])[part(b)] for b, name in enumerate(CONDITIONS)}
    conditions = {}
    for name in CONDITIONS:
        conditions[name] = {
            "success": rate(success[name]),
            "path_probability": _mean_ci(path_prob[name], seed),
            "cis": rate(cis[name][1][defined]),
            "cheese": rate(cheese_first[name]),
        }
    effects = {}
    for eff, (a, b) in EFFECTS.items():
        effects[eff] = {
            "success": _paired(success[a], success[b], seed),
            "path_probability": _paired(path_prob[a], path_prob[b], seed),
            "cis": _paired(cis[a][1][defined], cis[b][1][defined], seed),
        }
    # uniform offsets: whether and where the agent goes instead
    base = slice(3 * n, 4 * n)  # the baseline block
    size_of = pairs.levels.size.astype(np.float64)
    offset_table = []
    for j, (set_name, o) in enumerate(offset_rows):
        rows = part(len(CONDITIONS) + j)
        shift = (roll.final[rows] - roll.final[base]) / np.maximum(size_of - 1, 1)[:, None]
        entry = {"set": set_name, "offset": o}
        for key in ("cheese", "corner_first"):
            entry[key] = rate(np.asarray(flags[key])[rows])
            entry[f"{key}_effect"] = _paired(np.asarray(flags[key])[base], np.asarray(flags[key])[rows], seed)
        entry["end_cell_moved"] = rate(np.any(roll.final[rows] != roll.final[base], axis=1))
        entry["end_shift_up"] = _mean_ci(-shift[:, 0], seed)
        entry["end_shift_right"] = _mean_ci(shift[:, 1], seed)
        offset_table.append(entry)
    step_limit = int(getattr(world.config, "max_steps", 0)) or None
    return {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "layer": layer,
        "units": found.units,
        "sae": None if sae is None else str(sae),
        "shape": [c, grid, grid],
        "split": split,
        "episodes": int(episodes),
        "pairs": n,
        "seed": seed,
        "mode": mode,
        "greedy": greedy,
        "step_limit": step_limit,
        "target": None if target is None else [int(target[0]), int(target[1])],
        "fit": {
            "mazes": found.n_fit,
            "decision_squares": found.n_decision,
            "selection_pairs": len(fit_pairs),
            "disjoint_from_eval": not (set(found.fit_seeds.tolist()) & set(pairs.levels.seeds.tolist())),
        },
        "discovery": found.to_json(),
        "selection": selection,
        "stability": stability,
        "set": chosen,
        "magnitude": m,
        "single_best": best_single,
        "conditions": conditions,
        "effects": effects,
        "cis_pairs": int(defined.sum()),
        "uniform_offset": offset_table,
        "seconds": round(time.time() - t0, 1),
    }


# ------------------------------------------------------------------------------------------------------------ verb
def _fmt_rate(r: dict) -> str:
    return f"{r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def _fmt_mean(r: dict) -> str:
    return f"{r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def _fmt_diff(r: dict) -> str:
    return f"{r['diff']:+.3f} [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"


def retarget_text(r: dict) -> str:
    """The experiment as a few tables for people."""
    lines = [
        f"{r['artifact']} @ {r['layer']} {tuple(r['shape'])}: {r['mode']} "
        f"{'SAE ' + str(r['sae']) + ' latents' if r.get('sae') else 'set'} {r['set']} at {r['magnitude']:g} std "
        f"(chosen on {r['fit']['selection_pairs']} fit pairs); single best by correlation: {r['single_best']}",
        f"{r['pairs']} {r['split']} (maze, target) pairs, seed {r['seed']}, step limit {r['step_limit']}; "
        f"CIS over {r['cis_pairs']} pairs with an edit point",
        "",
        f"{'condition':<12} {'success':<24} {'path probability':<24} {'CIS':<24}",
    ]
    for name, row in r["conditions"].items():
        lines.append(
            f"{name:<12} {_fmt_rate(row['success']):<24} {_fmt_mean(row['path_probability']):<24} "
            f"{_fmt_rate(row['cis']):<24}"
        )
    lines += ["", f"{'paired effect':<26} {'success':<24} {'path probability':<24} {'CIS':<24}"]
    for name, row in r["effects"].items():
        lines.append(
            f"{name:<26} {_fmt_diff(row['success']):<24} {_fmt_diff(row['path_probability']):<24} "
            f"{_fmt_diff(row['cis']):<24}"
        )
    if r["uniform_offset"]:
        lines += ["", "uniform offset (std units, every cell):  cheese effect, corner_first effect, end cell moved"]
        for row in r["uniform_offset"]:
            lines.append(
                f"  {row['set']:<10} {row['offset']:+g}: {_fmt_diff(row['cheese_effect'])}  "
                f"{_fmt_diff(row['corner_first_effect'])}  {_fmt_rate(row['end_cell_moved'])}"
            )
    if r["stability"]:
        s = r["stability"]
        lines += [
            "",
            f"ranking stability ({s['n_boot']} bootstraps of the fit mazes): Spearman vs full "
            f"{_fmt_mean(s['spearman_vs_full'])}, Jaccard of the top-{s['size']} set {_fmt_mean(s['jaccard_vs_full'])}",
        ]
    return "\n".join(lines)


def retarget_maze(agent: Agent, **options: Any):
    """The `retarget` verb of maze-family subjects: `retarget_experiment` as a VerbResult."""
    from workbench.rl.verbs import VerbResult

    result = retarget_experiment(agent, **options)
    return VerbResult(result, retarget_text(result))


# --------------------------------------------------------------------------------------------------------- battery
def battery_metrics(check: Any, agent: Agent) -> dict[str, dict]:
    """A battery `retarget` check's measurements: `CONDITION.MEASURE` and `EFFECT.MEASURE` (see CONDITIONS, EFFECTS,
    MEASURES), each `{"value", "ci_low", "ci_high", "n"}`. The check's `hook` is the layer (default DEFAULT_LAYER),
    `data` the evaluated pairs (split, episodes, seed) and `fit.episodes` the number of fit mazes; no uniform offsets
    and no stability bootstrap (a check asks one question)."""
    d = check.data
    r = retarget_experiment(
        agent,
        layer=check.hook or DEFAULT_LAYER,
        split=d.split,
        episodes=d.episodes,
        seed=d.seed,
        n_fit=check.fit.episodes,
        offsets=(),
        n_boot=0,
    )

    def m(value: float, ci: Sequence[float], n: int) -> dict:
        return {"value": float(value), "ci_low": float(ci[0]), "ci_high": float(ci[1]), "n": int(n)}

    out = {}
    for cond, row in r["conditions"].items():
        out[f"{cond}.success"] = m(row["success"]["rate"], row["success"]["ci95"], row["success"]["n"])
        pp = row["path_probability"]
        out[f"{cond}.path_probability"] = m(pp["mean"], pp["ci95"], pp["n"])
        out[f"{cond}.cis"] = m(row["cis"]["rate"], row["cis"]["ci95"], row["cis"]["n"])
    for eff, row in r["effects"].items():
        for key in MEASURES:
            out[f"{eff}.{key}"] = m(row[key]["diff"], row[key]["ci95"], row[key]["n"])
    return out


# ------------------------------------------------------------------------------------------------------ one maze
@dataclass
class RetargetView:
    """One maze under one channel push at one target (the Maze lab panel): the fields without and with the push, and
    the greedy path with it (`path`, world cells from the mouse; `outcome`: "target", "cheese" or "step limit")."""

    before: Any
    after: Any
    path: np.ndarray
    outcome: str
    channels: list[int]
    magnitude: float
    layer_cell: tuple[int, int]


def retarget_view(
    agent: Agent,
    level: MazeLevels,
    found: GoalChannels,
    target: Sequence[int],
    *,
    size: int = 2,
    magnitude: float = 8.0,
    mode: str = "clamp",
    max_steps: int | None = None,
) -> RetargetView:
    """Push the top-`size` channels of `found` at `target`'s layer cell in one maze (a batch of one): the vector
    fields without and with the push (`workbench.rl.vector_field`, fwd_hooks), and the greedy path with it, followed
    on the pushed field (the observation depends on the mouse's cell only, so the field is the greedy policy)."""
    from workbench.rl.vector_field import vector_field

    if len(level) != 1:
        raise WorkbenchError(f"retarget_view takes one maze, got {len(level)}")
    pairs = fixed_target_pairs(level, target, 1)
    grid = found.shape[1]
    cell = target_layer_cells(pairs, grid)
    if not 1 <= int(size) <= found.n_channels:
        raise WorkbenchError(f"set size must be in 1..{found.n_channels}, got {size}")
    chans = found.top(int(size))
    edit = unit_edit(found, chans, float(magnitude), cell, mode)
    n_free = len(level.free_cells(0))
    many = edit.take(np.zeros(n_free, dtype=np.int64))
    before = vector_field(agent.policy, level)
    after = vector_field(agent.policy, level, [(found.layer, many.hook())])
    index = {tuple(int(v) for v in c): k for k, c in enumerate(after.cells)}
    pos = tuple(int(v) for v in level.mouse[0])
    path, outcome = [pos], "step limit"
    limit = int(max_steps or getattr(agent.world.config, "max_steps", 256))
    goal, cheese = tuple(int(v) for v in target), tuple(int(v) for v in level.cheese[0])
    for _ in range(limit):
        d = int(np.argmax(after.probs[index[pos]]))
        step = (pos[0] + int(ACTION_DELTAS[d][0]), pos[1] + int(ACTION_DELTAS[d][1]))
        if step in index:
            pos = step
        path.append(pos)
        if pos == goal or pos == cheese:
            outcome = "target" if pos == goal else "cheese"
            break
    return RetargetView(
        before=before,
        after=after,
        path=np.array(path, dtype=np.int64),
        outcome=outcome,
        channels=chans,
        magnitude=float(magnitude),
        layer_cell=(int(cell[0, 0]), int(cell[0, 1])),
    )
