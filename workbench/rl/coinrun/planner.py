"""Exact planning in the native CoinRun: shortest paths over (row, col, rise) states with the env's own physics.

Why a planner: levels need ground truth the policy never sees (which cells the agent can reach, how far the coin and
the exit are), the ood coin must be placed only where it can be collected, and behaviour cloning needs an expert.
All three come from one table: for a batch of levels, the next state of every state under every action, computed by
`workbench.rl.envs.coinrun.physics` itself, so planner and env can never disagree.

A state is s = (row * W + col) * (J + 1) + rise. Hazard states are absorbing (the episode ends there).
"""

from __future__ import annotations

import numpy as np

from workbench.rl.coinrun.physics import N_ACTIONS, NO_COIN, CoinRunConfig, CoinRunLevels, physics

UNREACHABLE = np.iinfo(np.int32).max // 2
# Tie-break among equally short plans: prefer moving right, then plain moves over jumps (deterministic expert).
ACTION_PREFERENCE = np.array([2, 0, 1, 5, 3, 4])


def n_states(levels: CoinRunLevels, jump_height: int) -> int:
    return levels.height * levels.width * (jump_height + 1)


def state_index(levels: CoinRunLevels, cells: np.ndarray, rise: np.ndarray, jump_height: int) -> np.ndarray:
    """(N,) state index of cells (N, 2) with jump counters rise (N,)."""
    return (cells[:, 0] * levels.width + cells[:, 1]) * (jump_height + 1) + rise


def transitions(levels: CoinRunLevels, jump_height: int) -> tuple[np.ndarray, np.ndarray]:
    """Next-state table (N, S, A) int32 and dead-state mask (N, S) bool (state on a hazard or inside a solid cell).
    Dead states map to themselves, so nothing propagates through them."""
    n, h, w, j1 = len(levels), levels.height, levels.width, jump_height + 1
    s = h * w * j1
    idx = np.arange(s)
    rise, cell = idx % j1, idx // j1
    row, col = cell // w, cell % w
    lvl = np.repeat(np.arange(n), s)
    row_b, col_b, rise_b = np.tile(row, n), np.tile(col, n), np.tile(rise, n)
    dead = (levels.hazard | levels.solid).reshape(n, h * w)[:, cell]
    nxt = np.empty((n, s, N_ACTIONS), dtype=np.int32)
    for a in range(N_ACTIONS):
        r2, c2, k2 = physics(levels.solid, lvl, row_b, col_b, rise_b, np.full(lvl.size, a), jump_height)
        nxt[:, :, a] = ((r2 * w + c2) * j1 + k2).reshape(n, s)
    nxt[dead] = np.arange(s, dtype=np.int32)[None, :, None].repeat(n, 0)[dead]
    return nxt, dead


def distances(nxt: np.ndarray, dead: np.ndarray, goal_cells: np.ndarray, width: int, jump_height: int) -> np.ndarray:
    """(N, S) int32 fewest steps from every state to any state on goal_cells (N, 2) (UNREACHABLE where impossible
    or where the goal is absent, (-1, -1)).

    Breadth-first search backwards from the goal states over the reversed transition graph of all N levels at once
    (edges sorted by target once, then one vectorised frontier expansion per BFS layer): O(edges), not
    O(edges x path length) as value iteration would be."""
    n, s, a = nxt.shape
    j1 = jump_height + 1
    cell_of = np.arange(s) // j1
    goal_flat = goal_cells[:, 0] * width + goal_cells[:, 1]
    is_goal = (cell_of[None, :] == goal_flat[:, None]) & (goal_cells[:, :1] != NO_COIN) & ~dead
    flat_dead = dead.reshape(-1)
    dst = (nxt.astype(np.int64) + (np.arange(n, dtype=np.int64) * s)[:, None, None]).reshape(-1)
    src = np.repeat(np.arange(n * s, dtype=np.int64), a)
    keep = ~flat_dead[src] & (dst != src)
    src, dst = src[keep], dst[keep]
    order = np.argsort(dst, kind="stable")
    src_sorted = src[order]
    counts = np.bincount(dst, minlength=n * s)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    dist = np.full(n * s, UNREACHABLE, dtype=np.int32)
    frontier = np.flatnonzero(is_goal.reshape(-1))
    dist[frontier] = 0
    d = 0
    while frontier.size:
        c = counts[frontier]
        total = int(c.sum())
        if total == 0:
            break
        first = np.repeat(starts[frontier] - (np.cumsum(c) - c), c) + np.arange(total)
        preds = np.unique(src_sorted[first])
        preds = preds[dist[preds] == UNREACHABLE]
        d += 1
        dist[preds] = d
        frontier = preds
    return dist.reshape(n, s)


def on_cells(levels: CoinRunLevels, cells: np.ndarray, jump_height: int) -> np.ndarray:
    """(N, S) bool: the states whose cell is cells[i] (N, 2), any jump counter (all False for (-1, -1))."""
    j1 = jump_height + 1
    cell_of = np.arange(levels.height * levels.width * j1) // j1
    flat = cells[:, 0] * levels.width + cells[:, 1]
    return (cell_of[None, :] == flat[:, None]) & (cells[:, :1] != NO_COIN)


def reachable(nxt: np.ndarray, dead: np.ndarray, start: np.ndarray) -> np.ndarray:
    """(N, S) bool: states reachable from the start states (N,) without passing through a dead state (dead states
    themselves can be reached, but lead nowhere). Forward BFS, one vectorised frontier expansion per layer."""
    n, s, a = nxt.shape
    flat_nxt = (nxt.astype(np.int64) + (np.arange(n, dtype=np.int64) * s)[:, None, None]).reshape(n * s, a)
    flat_dead = dead.reshape(-1)
    reach = np.zeros(n * s, dtype=bool)
    frontier = np.arange(n, dtype=np.int64) * s + start
    reach[frontier] = True
    while frontier.size:
        frontier = frontier[~flat_dead[frontier]]
        succ = np.unique(flat_nxt[frontier].reshape(-1))
        frontier = succ[~reach[succ]]
        reach[frontier] = True
    return reach.reshape(n, s)


def coin_candidates(levels: CoinRunLevels, config: CoinRunConfig) -> np.ndarray:
    """(N, H, W) bool: cells where a coin can go out of distribution -- reachable from the start in a state from which
    the exit is still reachable (so collecting it never forces a death), never solid, hazard or the start cell."""
    j = config.jump_height
    nxt, dead = transitions(levels, j)
    d_exit = distances(nxt, dead, levels.exit, levels.width, j)
    start = state_index(levels, levels.start, np.zeros(len(levels), dtype=np.int64), j)
    # The exit ends the episode, so a coin must be reachable without passing through it.
    good = reachable(nxt, dead | on_cells(levels, levels.exit, j), start) & ~dead & (d_exit < UNREACHABLE)
    n, h, w = len(levels), levels.height, levels.width
    cells = good.reshape(n, h * w, j + 1).any(axis=2).reshape(n, h, w)
    cells[np.arange(n), levels.start[:, 0], levels.start[:, 1]] = False
    return cells


def best_actions(nxt: np.ndarray, dist: np.ndarray, states: np.ndarray) -> np.ndarray:
    """(N,) the action that most shortens `dist` (N, S) from states (N,) (ties: ACTION_PREFERENCE order)."""
    n = len(states)
    succ = nxt[np.arange(n), states][:, ACTION_PREFERENCE]  # (N, A) in preference order
    d = dist[np.arange(n)[:, None], succ]
    return ACTION_PREFERENCE[d.argmin(axis=1)]


class Expert:
    """The BC expert for a batched CoinRun env: shortest path to the coin while it is away from the exit and not yet
    collected, then to the exit -- exactly what the reward pays for. Plans are refreshed for envs whose level
    changed (call `refresh(env, idx)` after autoreset)."""

    def __init__(self, env) -> None:
        self.env = env
        self.j = env.config.jump_height
        self.refresh(np.arange(env.num_envs))

    def refresh(self, idx: np.ndarray) -> None:
        lv = self.env.levels.select(idx)
        nxt, dead = transitions(lv, self.j)
        d_exit = distances(nxt, dead, lv.exit, lv.width, self.j)
        coin = np.where(lv.coin_at_exit()[:, None], NO_COIN, lv.coin)
        d_coin = distances(nxt, dead | on_cells(lv, lv.exit, self.j), coin, lv.width, self.j)  # the exit ends it
        if not hasattr(self, "nxt"):
            self.nxt, self.d_exit, self.d_coin = nxt, d_exit, d_coin
            return
        self.nxt[idx], self.d_exit[idx], self.d_coin[idx] = nxt, d_exit, d_coin

    def actions(self) -> np.ndarray:
        """(N,) expert actions for the env's current states."""
        lv = self.env.levels
        states = state_index(lv, lv.agent, lv.rise, self.j)
        to_coin = lv.has_coin() & ~np.all(lv.coin == lv.exit, axis=1)
        dist = np.where(to_coin[:, None], self.d_coin, self.d_exit)
        return best_actions(self.nxt, dist, states)
