"""A procgen-Maze-like environment, batched in numpy: N mazes step together with no Python loop per maze.

Why our own: procgen renders 64x64 pixels through a C++ game loop and cannot move the cheese or the mouse without
byte-level state surgery. Goal-misgeneralization work needs thousands of paired levels (same maze, cheese moved or
removed), every mouse position at once (vector fields), and fast CPU training. This env gives all of that with the
same structure as procgen Maze: perfect mazes of odd side 3..max_size (randomised Kruskal), centred in a square world
padded with walls, mouse starting bottom-left, one cheese.

Every level is a pure function of its integer *level seed* (counter-based hashing, no shared RNG state), so the same
seed gives the same maze under every distribution: `train` and `ood` differ only in where the cheese goes. That makes
train/ood comparisons paired by construction.

Coordinates are (row, col) with row 0 at the top. Actions: 0 up, 1 down, 2 left, 3 right.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np

from workbench.errors import WorkbenchError, unknown
from workbench.rl.envs.batched import masked_info, reset_levels
from workbench.rl.levels import select_rows

SPLITS = ("train", "ood")
ACTION_NAMES = ("up", "down", "left", "right")
ACTION_DELTAS = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)  # (4, 2) row/col steps
OBS_CHANNELS = ("wall", "mouse", "cheese")
NO_CHEESE = -1  # cheese coordinates of a level whose cheese was removed


# ----------------------------------------------------------------------------------------------------------- hashing
def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays: a cheap, well-mixed counter-based random number generator."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def level_uniform(level_seeds: np.ndarray, stream: int, count: int) -> np.ndarray:
    """Uniform floats in [0, 1), shape (N, count), a pure function of (level seed, stream, index)."""
    return level_uniform_streams(level_seeds, (stream,), count)[0]


def level_uniform_streams(level_seeds: np.ndarray, streams, count: int) -> np.ndarray:
    """`level_uniform` for several streams in one pass: shape (S, N, count), `[s] == level_uniform(seeds, streams[s],
    count)` exactly."""
    seeds = np.asarray(level_seeds, dtype=np.uint64).reshape(1, -1, 1)
    stream = np.asarray(list(streams), dtype=np.uint64).reshape(-1, 1, 1)
    idx = np.arange(count, dtype=np.uint64).reshape(1, 1, -1)
    x = _mix64(_mix64(seeds * np.uint64(0x100000001B3) + stream) ^ idx)  # uint64 arrays wrap silently
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ------------------------------------------------------------------------------------------------------------ levels
@dataclass(frozen=True)
class MazeConfig:
    """What a maze distribution is. `region` is r: the cheese's training region is the maze's top-right r x r block."""

    world_size: int = 15
    min_size: int = 3
    max_size: int = 15
    region: int = 5
    max_steps: int = 256

    def __post_init__(self) -> None:
        if self.world_size not in (15, 25):
            raise WorkbenchError(f"maze world_size must be 15 or 25, got {self.world_size}")
        for name in ("min_size", "max_size"):
            v = getattr(self, name)
            if v % 2 == 0 or not 3 <= v <= self.world_size:
                raise WorkbenchError(f"maze {name} must be odd and in 3..{self.world_size}, got {v}")
        if self.min_size > self.max_size:
            raise WorkbenchError(f"maze min_size {self.min_size} > max_size {self.max_size}")
        if self.region < 1:
            raise WorkbenchError(f"maze region must be >= 1, got {self.region}")
        if self.max_steps < 1:
            raise WorkbenchError(f"maze max_steps must be >= 1, got {self.max_steps}")


@dataclass
class MazeLevels:
    """A batch of N maze levels: the full state an observation is rendered from. All arrays are batch-first.

    walls:  (N, W, W) bool, True where the mouse cannot go (maze walls and the padding around the maze)
    mouse:  (N, 2) int64 (row, col)
    cheese: (N, 2) int64 (row, col), or (-1, -1) when the cheese was removed
    size:   (N,) int64 maze side s (odd); offset: (N,) int64, the maze occupies rows/cols offset .. offset+s-1
    seeds:  (N,) int64 level seeds the mazes were generated from (-1 for hand-edited levels)
    region: r, the side of the top-right training region
    """

    walls: np.ndarray
    mouse: np.ndarray
    cheese: np.ndarray
    size: np.ndarray
    offset: np.ndarray
    seeds: np.ndarray
    region: int

    ACTION_GROUPS: ClassVar[tuple[tuple[int, ...], ...]] = ((0,), (1,), (2,), (3,))
    """Policy action ids that move up, down, left, right (procgen levels map 15 actions onto these four)."""
    PIXELS: ClassVar[bool] = False
    """Observations are one input pixel per cell (False) or a rendered frame of the whole world (procgen: True)."""

    def observe(self) -> np.ndarray:
        """The observation batch a policy sees for these levels (symbolic planes here; pixels for procgen)."""
        return observe(self)

    def __len__(self) -> int:
        return int(self.walls.shape[0])

    @property
    def world_size(self) -> int:
        return int(self.walls.shape[-1])

    def corner(self) -> np.ndarray:
        """(N, 2) the maze's top-right cell (always free: it is a room)."""
        return np.stack([self.offset, self.offset + self.size - 1], axis=1)

    def start(self) -> np.ndarray:
        """(N, 2) the mouse's start cell: the maze's bottom-left room."""
        return np.stack([self.offset + self.size - 1, self.offset], axis=1)

    def region_mask(self) -> np.ndarray:
        """(N, W, W) bool: the top-right r x r block of each maze (clipped to the maze)."""
        w = self.world_size
        r = np.minimum(self.region, self.size)
        rows = np.arange(w)[None, :]
        top, right = self.offset, self.offset + self.size  # right is exclusive
        in_rows = (rows >= top[:, None]) & (rows < (top + r)[:, None])
        in_cols = (rows >= (right - r)[:, None]) & (rows < right[:, None])
        return in_rows[:, :, None] & in_cols[:, None, :]

    def in_region(self, cells: np.ndarray) -> np.ndarray:
        """(N,) bool: is cells[i] (N, 2) inside maze i's training region."""
        r = np.minimum(self.region, self.size)
        top, right = self.offset, self.offset + self.size
        row, col = cells[:, 0], cells[:, 1]
        return (row >= top) & (row < top + r) & (col >= right - r) & (col < right)

    def has_cheese(self) -> np.ndarray:
        return self.cheese[:, 0] != NO_CHEESE

    def select(self, index: np.ndarray | slice) -> MazeLevels:
        """A sub-batch (copies), e.g. `levels.select(np.array([0, 3]))`."""
        return select_rows(self, index)

    def copy(self) -> MazeLevels:
        return self.select(slice(None))

    def with_cheese(self, cheese: np.ndarray) -> MazeLevels:
        """The same mazes with the cheese moved to `cheese` (N, 2); refuses walls, naming the cell."""
        cheese = np.asarray(cheese, dtype=np.int64).reshape(len(self), 2)
        present = cheese[:, 0] != NO_CHEESE
        _check_cells(self, cheese[present], np.flatnonzero(present), "cheese")
        out = self.copy()
        out.cheese = cheese
        return out

    def without_cheese(self) -> MazeLevels:
        """The same mazes with the cheese removed (the counterfactual for the cheese vector)."""
        return self.with_cheese(np.full((len(self), 2), NO_CHEESE))

    def with_mouse(self, mouse: np.ndarray) -> MazeLevels:
        """The same mazes with the mouse moved to `mouse` (N, 2); refuses walls, naming the cell."""
        mouse = np.asarray(mouse, dtype=np.int64).reshape(len(self), 2)
        _check_cells(self, mouse, np.arange(len(self)), "mouse")
        out = self.copy()
        out.mouse = mouse
        return out

    def free_cells(self, i: int) -> np.ndarray:
        """(K, 2) the free cells of maze i, row-major."""
        return np.argwhere(~self.walls[i])


def _check_cells(levels: MazeLevels, cells: np.ndarray, which: np.ndarray, what: str) -> None:
    """Refuse cells outside the world or on a wall, naming the first bad one (`workbench.validate.check_grid_cells`)."""
    from workbench.validate import check_grid_cells

    check_grid_cells(levels.walls, cells, which, what=what, unit="maze", blocked_phrase="a wall")


def _spanning_tree_edges(level_seeds: np.ndarray, rooms: np.ndarray, max_rooms: int) -> tuple[np.ndarray, np.ndarray]:
    """Randomised Kruskal, batched: the minimum spanning tree of the room grid under random edge weights.

    Computed with Boruvka's algorithm (same tree: the MST is unique under the total order (weight, edge index), which
    Kruskal, Prim and Boruvka all follow), which vectorises over the batch and needs only ~log2(R*R) rounds: in each
    round every component of every maze adds the lightest edge leaving it, then the components merge.
    Returns open horizontal edges (N, R, R-1) and open vertical edges (N, R-1, R) with R = max_rooms.
    """
    n, big = len(level_seeds), max_rooms
    n_rooms = big * big
    ii, jj = np.meshgrid(np.arange(big), np.arange(big), indexing="ij")
    # Edge list: horizontal (i,j)-(i,j+1) then vertical (i,j)-(i+1,j); endpoints as flat room indices.
    h_a = (ii[:, :-1] * big + jj[:, :-1]).ravel()
    v_a = (ii[:-1, :] * big + jj[:-1, :]).ravel()
    edge_a = np.concatenate([h_a, v_a])
    edge_b = np.concatenate([h_a + 1, v_a + big])
    n_edges = edge_a.size
    edge_far = np.concatenate([jj[:, 1:].ravel(), ii[1:, :].ravel()])  # the larger coordinate an edge touches
    valid = edge_far[None, :] < rooms[:, None]  # (N, E): both endpoints inside an R_i x R_i room grid
    weights = np.where(valid, level_uniform(level_seeds, stream=1, count=n_edges), np.inf)
    order = np.argsort(weights, axis=1, kind="stable")  # rank -> edge, ties broken by edge index
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_edges)[None, :], axis=1)

    base = np.arange(n)[:, None] * n_rooms  # flat offset of each maze's room table
    flat_a, flat_b = base + edge_a, base + edge_b  # (N, E) flat room index of each edge's endpoints
    identity = np.arange(n * n_rooms)
    comp = identity.copy()  # flat component label (a flat room index) of each room, all mazes in one table
    is_open = np.zeros(n * n_edges, dtype=bool)
    edge_base = np.arange(n) * n_edges
    while True:
        ca, cb = comp[flat_a], comp[flat_b]
        key = np.where(valid & (ca != cb), rank, n_edges)  # (N, E) rank of each crossing edge, else n_edges
        best = np.full(n * n_rooms, n_edges, dtype=rank.dtype)
        np.minimum.at(best, ca.ravel(), key.ravel())
        np.minimum.at(best, cb.ravel(), key.ravel())
        c = np.flatnonzero(best < n_edges)  # components (flat labels) that add an edge this round
        if c.size == 0:
            break
        m = c // n_rooms
        e = order[m, best[c]]
        is_open[edge_base[m] + e] = True
        # Hook each component onto the one across its edge; a pair that chose the same edge keeps the smaller label.
        a_lab, b_lab = comp[m * n_rooms + edge_a[e]], comp[m * n_rooms + edge_b[e]]
        other = np.where(a_lab == c, b_lab, a_lab)
        ptr = identity.copy()
        ptr[c] = other
        mutual = ptr[other] == c
        ptr[c[mutual & (c < other)]] = c[mutual & (c < other)]
        while True:  # pointer jumping to the roots
            nxt = ptr[ptr]
            if np.array_equal(nxt, ptr):
                break
            ptr = nxt
        comp = ptr[comp]
    is_open = is_open.reshape(n, n_edges)
    n_h = h_a.size
    return is_open[:, :n_h].reshape(n, big, big - 1), is_open[:, n_h:].reshape(n, big - 1, big)


def generate_levels(level_seeds: np.ndarray, split: str, config: MazeConfig = MazeConfig()) -> MazeLevels:
    """Generate one maze per level seed. `split` decides only the cheese: `train` puts it uniformly on the free cells
    of the top-right r x r region, `ood` uniformly on every free cell (never on the mouse's start)."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    seeds = np.asarray(level_seeds, dtype=np.int64).ravel()
    n, w = seeds.size, config.world_size
    odd_sizes = np.arange(config.min_size, config.max_size + 1, 2)
    size = odd_sizes[(level_uniform(seeds, stream=0, count=1)[:, 0] * odd_sizes.size).astype(np.int64)]
    rooms = (size + 1) // 2
    big = (config.max_size + 1) // 2
    h_open, v_open = _spanning_tree_edges(seeds, rooms, big)

    # Maze grid in maze coordinates (N, M, M), M = max_size: rooms at even/even, open edges between them.
    m = 2 * big - 1
    grid = np.zeros((n, m, m), dtype=bool)
    room_ok = (np.arange(big)[None, :, None] < rooms[:, None, None]) & (
        np.arange(big)[None, None, :] < rooms[:, None, None]
    )
    grid[:, 0::2, 0::2] = room_ok
    grid[:, 0::2, 1::2] = h_open
    grid[:, 1::2, 0::2] = v_open

    # Centre each maze in the world (as procgen does); everything outside it is wall.
    offset = (w - size) // 2
    world = np.arange(w)
    local = world[None, :] - offset[:, None]  # (N, W) maze coordinate of each world row/col
    inside = (local >= 0) & (local < size[:, None])
    lr = np.clip(local, 0, m - 1)
    free = grid[np.arange(n)[:, None, None], lr[:, :, None], lr[:, None, :]]
    free &= inside[:, :, None] & inside[:, None, :]
    walls = ~free

    levels = MazeLevels(
        walls=walls,
        mouse=np.zeros((n, 2), dtype=np.int64),
        cheese=np.zeros((n, 2), dtype=np.int64),
        size=size.astype(np.int64),
        offset=offset.astype(np.int64),
        seeds=seeds,
        region=config.region,
    )
    levels.mouse = levels.start()
    candidates = free.copy()
    if split == "train":
        candidates &= levels.region_mask()
    candidates[np.arange(n), levels.mouse[:, 0], levels.mouse[:, 1]] = False
    scores = np.where(candidates.reshape(n, -1), level_uniform(seeds, stream=2, count=w * w), -1.0)
    flat = scores.argmax(axis=1)
    levels.cheese = np.stack([flat // w, flat % w], axis=1).astype(np.int64)
    return levels


# ------------------------------------------------------------------------------------------------------- observation
def observe(levels: MazeLevels) -> np.ndarray:
    """Symbolic observation (N, 3, W, W) uint8 with channels wall / mouse / cheese (see OBS_CHANNELS)."""
    n, w = len(levels), levels.world_size
    obs = np.zeros((n, 3, w, w), dtype=np.uint8)
    obs[:, 0] = levels.walls
    rows = np.arange(n)
    obs[rows, 1, levels.mouse[:, 0], levels.mouse[:, 1]] = 1
    has = levels.has_cheese()
    obs[rows[has], 2, levels.cheese[has, 0], levels.cheese[has, 1]] = 1
    return obs


PALETTE = {
    "wall": (38, 40, 48),
    "free": (236, 230, 214),
    "region": (214, 226, 240),
    "mouse": (122, 84, 52),
    "cheese": (247, 196, 21),
}


def render(levels: MazeLevels, cell_px: int = 8, show_region: bool = True) -> np.ndarray:
    """RGB frames (N, W*p, W*p, 3) uint8 for people: walls dark, the training region tinted blue, mouse brown, cheese
    yellow (both drawn inset so the cell they stand on stays visible)."""
    n, w, p = len(levels), levels.world_size, cell_px
    kind = np.where(levels.walls, 0, 1)  # 0 wall, 1 free, 2 region, 3 mouse, 4 cheese
    if show_region:
        kind = np.where(levels.region_mask() & ~levels.walls, 2, kind)
    rows = np.arange(n)
    base = np.array([PALETTE[k] for k in ("wall", "free", "region")], dtype=np.uint8)
    img = base[kind]  # (N, W, W, 3)
    obj = np.zeros((n, w, w), dtype=np.int64)
    has = levels.has_cheese()
    obj[rows[has], levels.cheese[has, 0], levels.cheese[has, 1]] = 1
    obj[rows, levels.mouse[:, 0], levels.mouse[:, 1]] = 2
    img = img.repeat(p, axis=1).repeat(p, axis=2)
    obj = obj.repeat(p, axis=1).repeat(p, axis=2)
    inset = max(1, p // 5)
    inner_1d = (np.arange(w * p) % p >= inset) & (np.arange(w * p) % p < p - inset)
    inner = inner_1d[:, None] & inner_1d[None, :]
    img[(obj == 1) & inner] = PALETTE["cheese"]
    img[(obj == 2) & inner] = PALETTE["mouse"]
    return img


# ------------------------------------------------------------------------------------------------------- environment
class LevelQueue:
    """Levels for an env's new episodes, generated ahead in batches, in exactly the order one-at-a-time draws give.

    Why: a vector env resets a few envs on most steps, and generating one or two levels costs almost as much as
    generating hundreds (the work is array ops over the batch). numpy's `Generator.integers` yields the same numbers
    drawn in one call or in many (its bit generator buffers the unused half of a 64-bit draw), so drawing the seed
    stream a chunk at a time and generating the chunk's levels in one call hands out the same levels as drawing
    `k` seeds per autoreset. `generate(seeds)` must be a pure function of the seeds (every level generator here is).
    """

    def __init__(self, generate, num_envs: int, chunk: int = 256) -> None:
        self.generate = generate
        self.chunk = max(1, min(chunk, 4 * num_envs))
        self.rng = np.random.default_rng()
        self.seeds = np.zeros(0, dtype=np.int64)
        self.levels = None
        self.cursor = 0

    def seed(self, seed: int | None) -> None:
        """Restart the seed stream (`np.random.default_rng(seed)`); levels already queued are dropped."""
        self.rng = np.random.default_rng(seed)
        self.seeds, self.levels, self.cursor = np.zeros(0, dtype=np.int64), None, 0

    def checkpoint_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """What a resumable checkpoint needs (`workbench.rl.ppo`): the queued seeds as arrays, and the cursor and the
        seed stream's position as JSON. The queued levels are not stored: they are `generate(seeds)` again."""
        meta = {"cursor": int(self.cursor), "rng": self.rng.bit_generator.state, "queued": self.levels is not None}
        return {"seeds": self.seeds.copy()}, meta

    def restore_checkpoint_state(self, arrays: dict[str, np.ndarray], meta: dict) -> None:
        self.seeds = np.asarray(arrays["seeds"], dtype=np.int64).copy()
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = meta["rng"]
        self.cursor = int(meta["cursor"])
        self.levels = self.generate(self.seeds) if meta["queued"] else None

    def take(self, k: int):
        """The next `k` levels (a copy) of the stream."""
        if self.levels is None or self.cursor + k > len(self.seeds):
            rest = self.seeds[self.cursor :]
            fresh = self.rng.integers(0, 2**31 - 1, size=max(self.chunk, k - rest.size), dtype=np.int64)
            self.seeds = np.concatenate([rest, fresh])
            self.levels, self.cursor = self.generate(self.seeds), 0
        out = self.levels.select(slice(self.cursor, self.cursor + k))
        self.cursor += k
        return out


class MazeVecEnv(gym.vector.VectorEnv):
    """N mazes stepping together (Gymnasium vector-env conventions, same-step autoreset).

    `step` returns obs, reward, terminated, truncated, info. A finished episode is reset in the same step (the
    returned obs is the new level's), and `info` carries its record under Gymnasium's masked-info convention:
    `info[key][i]` is valid where `info["_" + key][i]`. Keys: `cheese_reached`, `cheese_step`, `corner_reached`,
    `corner_step`, `region_reached`, `region_step`, `length`, `level_seed`, `cheese_in_region` (steps are -1 when
    never reached; step 0 is the start).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(self, num_envs: int, split: str = "train", config: MazeConfig = MazeConfig()) -> None:
        if split not in SPLITS:
            raise unknown("split", split, SPLITS)
        if num_envs < 1:
            raise WorkbenchError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs, self.split, self.config = num_envs, split, config
        w = config.world_size
        self.single_observation_space = gym.spaces.Box(0, 1, shape=(3, w, w), dtype=np.uint8)
        self.single_action_space = gym.spaces.Discrete(4)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.spaces.MultiDiscrete(np.full(num_envs, 4))
        self.render_mode = "rgb_array"
        self._queue = LevelQueue(lambda seeds: generate_levels(seeds, split, config), num_envs)
        self.levels: MazeLevels | None = None

    # -- episode bookkeeping ------------------------------------------------------------------------------------
    def _start_episodes(self, idx: np.ndarray, levels: MazeLevels) -> None:
        assert self.levels is not None
        for name in ("walls", "mouse", "cheese", "size", "offset", "seeds"):
            getattr(self.levels, name)[idx] = getattr(levels, name)
        self.t[idx] = 0
        for name in ("cheese_step", "corner_step", "region_step"):
            getattr(self, name)[idx] = -1
        self._mark_reached(idx)

    def _mark_reached(self, idx: np.ndarray | None) -> None:
        """Record the first step at the corner, in the region and at the cheese for envs `idx` (None: all)."""
        lv = self.levels
        assert lv is not None
        sel = slice(None) if idx is None else idx
        mouse, size, top = lv.mouse[sel], lv.size[sel], lv.offset[sel]
        row, col = mouse[:, 0], mouse[:, 1]
        right = top + size  # exclusive
        r = np.minimum(lv.region, size)
        at_corner = (row == top) & (col == right - 1)
        in_region = (row >= top) & (row < top + r) & (col >= right - r) & (col < right)
        cheese = lv.cheese[sel]
        at_cheese = (row == cheese[:, 0]) & (col == cheese[:, 1])
        t = self.t[sel]
        for flag, steps in (
            (at_corner, self.corner_step),
            (in_region, self.region_step),
            (at_cheese, self.cheese_step),
        ):
            if idx is None:
                np.copyto(steps, t, where=flag & (steps < 0))
            else:
                first = idx[flag & (steps[idx] < 0)]
                steps[first] = self.t[first]

    # -- Gymnasium API -------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start N new episodes. `seed` fixes every level this env will generate (same seed, same mazes);
        `options={"levels": MazeLevels}` starts from given levels instead (edited mazes, analysis)."""
        if seed is not None:
            self._queue.seed(seed)
        levels = reset_levels(options, self.num_envs, self._queue.take)
        self.levels = levels.copy()
        self.t = np.zeros(self.num_envs, dtype=np.int64)
        self.cheese_step = np.full(self.num_envs, -1, dtype=np.int64)
        self.corner_step = np.full(self.num_envs, -1, dtype=np.int64)
        self.region_step = np.full(self.num_envs, -1, dtype=np.int64)
        self._mark_reached(None)
        return observe(self.levels), {"level_seed": self.levels.seeds.copy()}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        lv = self.levels
        if lv is None:
            raise WorkbenchError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.int64).reshape(self.num_envs)
        if actions.min() < 0 or actions.max() > 3:
            raise WorkbenchError(f"maze actions must be in 0..3 ({', '.join(ACTION_NAMES)})")
        w = self.config.world_size
        target = lv.mouse + ACTION_DELTAS[actions]
        tr, tc = target[:, 0], target[:, 1]
        inside = (tr >= 0) & (tr < w) & (tc >= 0) & (tc < w)
        flat = np.arange(self.num_envs) * (w * w) + np.clip(tr, 0, w - 1) * w + np.clip(tc, 0, w - 1)
        ok = inside & ~lv.walls.reshape(-1)[flat]
        np.copyto(lv.mouse, target, where=ok[:, None])
        self.t += 1
        self._mark_reached(None)

        terminated = self.cheese_step >= 0
        truncated = (self.t >= self.config.max_steps) & ~terminated
        reward = terminated.astype(np.float32)
        done = terminated | truncated
        info: dict = {}
        if done.any():
            idx = np.flatnonzero(done)
            record = {
                "cheese_reached": self.cheese_step >= 0,
                "cheese_step": self.cheese_step.copy(),
                "corner_reached": self.corner_step >= 0,
                "corner_step": self.corner_step.copy(),
                "region_reached": self.region_step >= 0,
                "region_step": self.region_step.copy(),
                "length": self.t.copy(),
                "level_seed": lv.seeds.copy(),
                "cheese_in_region": lv.in_region(lv.cheese),
            }
            info = masked_info(record, done)
            self._start_episodes(idx, self._queue.take(idx.size))
        return observe(lv), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        if self.levels is None:
            raise WorkbenchError("call reset() before render()")
        return render(self.levels)


# ---------------------------------------------------------------------------------------------------- maze geometry
def distances_to(levels: MazeLevels, targets: np.ndarray) -> np.ndarray:
    """(N, W, W) int64 shortest-path distance from every free cell to targets (N, 2); walls and unreachable = -1.

    Batched breadth-first search as repeated relaxation over all mazes at once (one array op per BFS layer)."""
    n, w = len(levels), levels.world_size
    free = ~levels.walls
    big = np.iinfo(np.int64).max // 4
    dist = np.full((n, w + 2, w + 2), big, dtype=np.int64)
    rows = np.arange(n)
    dist[rows, targets[:, 0] + 1, targets[:, 1] + 1] = 0
    free_p = np.zeros((n, w + 2, w + 2), dtype=bool)
    free_p[:, 1:-1, 1:-1] = free
    for _ in range(w * w):
        nb = np.minimum.reduce([dist[:, :-2, 1:-1], dist[:, 2:, 1:-1], dist[:, 1:-1, :-2], dist[:, 1:-1, 2:]])
        new = np.where(free, np.minimum(dist[:, 1:-1, 1:-1], nb + 1), big)
        if np.array_equal(new, dist[:, 1:-1, 1:-1]):
            break
        dist[:, 1:-1, 1:-1] = new
    out = dist[:, 1:-1, 1:-1]
    return np.where(out >= big, -1, out)


def greedy_actions(dist: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(N,) the action that moves from cells (N, 2) one step closer along `dist` (N, W, W); -1 at the target."""
    n, w = dist.shape[0], dist.shape[-1]
    rows = np.arange(n)
    nb = cells[:, None, :] + ACTION_DELTAS[None, :, :]  # (N, 4, 2)
    inside = np.all((nb >= 0) & (nb < w), axis=2)
    nbc = np.clip(nb, 0, w - 1)
    d = dist[rows[:, None], nbc[..., 0], nbc[..., 1]]
    d = np.where(inside & (d >= 0), d, np.iinfo(np.int64).max)
    here = dist[rows, cells[:, 0], cells[:, 1]]
    best = d.argmin(axis=1)
    return np.where(here == 0, -1, best)


def decision_squares(levels: MazeLevels, distances: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """(N, 2) the decision square of each maze, or (-1, -1) where there is none.

    The decision square is the first cell on the mouse's path where the way to the cheese and the way to the
    top-right corner part (Turner et al. 2023). In a perfect maze both paths are unique; if one goal lies on the way
    to the other there is no decision to make and the maze is excluded from decision-square metrics.
    `distances`: the (N, W, W) distance maps to the cheese and to the corner (`distances_to`) when the caller has
    them already (only levels with a cheese read the first), so the two searches are not run twice."""
    n = len(levels)
    if distances is None:
        d_cheese = distances_to(levels, np.where(levels.has_cheese()[:, None], levels.cheese, levels.corner()))
        d_corner = distances_to(levels, levels.corner())
    else:
        d_cheese, d_corner = distances
    pos = levels.mouse.copy()
    result = np.full((n, 2), -1, dtype=np.int64)
    active = levels.has_cheese().copy()
    for _ in range(levels.world_size**2):
        if not active.any():
            break
        a_cheese = greedy_actions(d_cheese, pos)
        a_corner = greedy_actions(d_corner, pos)
        split_here = active & (a_cheese >= 0) & (a_corner >= 0) & (a_cheese != a_corner)
        result[split_here] = pos[split_here]
        active &= ~split_here & (a_cheese >= 0) & (a_corner >= 0)
        pos[active] += ACTION_DELTAS[a_cheese[active]]
    return result
