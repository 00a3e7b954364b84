"""A procgen-CoinRun-like side-view platformer on a grid, batched in numpy: N levels step together.

Why our own: procgen's CoinRun renders 64x64 pixels in C++ and cannot move the coin without byte-level state
surgery, and PPO on it needs tens of millions of frames. Goal-misgeneralization work needs paired levels (same
terrain, coin moved or removed), ground truth for every state (where the coin and the exit are relative to the
agent) and CPU-fast training. This env keeps CoinRun's structure: the agent starts at the left, the level ends in a
wall at the right with the exit in front of it, terrain has steps, gaps over lava, crates to jump over and spikes;
gravity pulls the agent down and it can jump.

Dynamics (one step; `physics` is the single source of truth, shared with the expert planner):
1. on_ground = the cell below the agent is solid. A jump action on the ground starts a jump: `rise = jump_height`.
2. Vertical: while `rise > 0` the agent moves up one cell per step (a solid cell above ends the jump);
   otherwise, if not on the ground, it falls one cell per step.
3. Horizontal: left / right moves one cell if that cell is not solid (also in the air: air control).
4. The agent's final cell decides: a hazard (lava at the bottom of a gap, spikes) ends the episode; the coin cell
   collects the coin (reward 1); the exit cell ends the episode.

Every level is a pure function of its integer level seed (the maze's counter-based hashing), so the same seed gives
the same terrain under every distribution: `train` puts the coin at the exit, `ood` on a uniformly random cell the
agent can reach (and still reach the exit from); `CoinRunConfig.random_coin_percent = P` randomises the coin like
`ood` on P% of `train` levels (Langosco et al. 2022's mitigation). Collecting a coin away from the exit does not end
the episode; reaching the exit does.

Observation: an egocentric (2v+1) x (2v+1) window centred on the agent (procgen's centred view), symbolic channels
solid / hazard / coin / exit / rise (see OBS_CHANNELS; outside the world is solid; `rise` is a constant plane holding
the jump counter, the agent's vertical velocity). Coordinates are (row, col), row 0 at the top.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np

from workbench.errors import WorkbenchError, unknown
from workbench.rl.coinrun.physics import (  # noqa: F401 (re-exported: the env's public names)
    ACTION_DX,
    ACTION_JUMP,
    ACTION_NAMES,
    N_ACTIONS,
    NO_COIN,
    OBS_CHANNELS,
    SPLITS,
    CoinRunConfig,
    CoinRunLevels,
    _check_cells,
    concat_levels,
    physics,
)
from workbench.rl.coinrun.planner import coin_candidates
from workbench.rl.envs.batched import masked_info, reset_levels
from workbench.rl.envs.maze import LevelQueue, level_uniform, level_uniform_streams

_FLAT, _GAP, _CRATE, _SPIKES = 0, 1, 2, 3  # terrain segment kinds


# ------------------------------------------------------------------------------------------------------------ levels
def _terrain(u: np.ndarray, config: CoinRunConfig) -> tuple[np.ndarray, ...]:
    """Per-column terrain, batched over levels, one obstacle (and the flat ground after it) at a time.

    Segments alternate: flat ground (2-4 columns; it may start with a step of -2..+2 in ground height, -1..+1 after
    a gap) and an obstacle: a gap over lava (1-3 columns), a crate (1-2 wide, 1-2 tall) or spikes (1-2 wide). The
    first 3 columns after the start wall and the last 3 before the exit wall are flat. Every gap, step, crate and
    spike row is jumpable with jump height 3 (tests check with the planner that every exit is reachable).

    `u` (7, N, >= W + 8) holds the level's uniforms, streams 9 (length) and 10..15. A segment starting at column x
    draws its kind, width, step and crate height from the uniforms at column x, so what an obstacle starting at any
    column would be, and where the next obstacle would then start, are tables computed for all columns at once; the
    loop only follows each level's chain of obstacle starts (every level's first obstacle starts at column 4) and
    carries the ground height, the one sequential quantity. Columns then read their segment's values with one gather.
    Returns length (N,), ground (N, W), crate (N, W), spikes (N, W) bool."""
    n, w = u.shape[1], config.max_length
    span = config.max_length - config.min_length + 1
    length = config.min_length + (u[0][:, 0] * span).astype(np.int64)
    u = u[1:]
    wp = w + 4  # tables cover columns past the end, so chains that run over the level index safely
    cols = np.arange(wp)
    o_kind = 1 + (u[3][:, :wp] * 3).astype(np.int64)
    o_width = np.where(o_kind == _GAP, 1 + (u[4][:, :wp] * 3).astype(np.int64), 1 + (u[4][:, :wp] * 2).astype(np.int64))
    f_at = cols + o_width  # (N, W + 4) where the flat ground after an obstacle starting at each column starts
    f_flat = (np.arange(n) * u.shape[2])[:, None] + f_at  # flat indices into the (N, W + 8) uniforms
    f_u1 = u[1].reshape(-1)[f_flat]
    # The flat ground's step (-1..+1 after a gap, else -2..+2) and the next obstacle's start, per obstacle column.
    step = np.where(o_kind == _GAP, (f_u1 * 3).astype(np.int64) - 1, (f_u1 * 5).astype(np.int64) - 2)
    next_at = f_at + 2 + (u[2].reshape(-1)[f_flat] * 3).astype(np.int64)

    h = 1 + (u[0][:, 0] * 3).astype(np.int64)  # start height 1..3
    base = np.arange(n) * (wp + 4)
    seg_h = np.zeros(n * (wp + 4), dtype=np.int64)  # ground height of the segment starting at each column
    is_obst = np.zeros(n * (wp + 4), dtype=bool)
    is_start = np.zeros(n * (wp + 4), dtype=bool)
    is_start[base] = True  # columns 0..3: the first flat segment
    seg_h[base] = h
    stop = length  # columns from length - 1 on are the end wall: their terrain is never read
    pos = np.full(n, 4)  # the column each level's next obstacle starts at
    tab = np.arange(n) * wp
    while not (pos >= stop).all():
        pos = np.minimum(pos, stop)  # a finished level parks on its (unread) end-wall column
        at, t = base + pos, tab + pos
        is_obst[at] = True
        seg_h[at] = h  # an obstacle keeps the ground height of the flat before it
        h = np.minimum(np.maximum(h + step.flat[t], 1), 4)
        flat_at = base + f_at.flat[t]
        seg_h[flat_at] = h
        is_start[flat_at] = True
        pos = next_at.flat[t]
    is_start |= is_obst
    is_obst, is_start, seg_h = (a.reshape(n, wp + 4)[:, :w] for a in (is_obst, is_start, seg_h))
    start_col = np.maximum.accumulate(np.where(is_start, cols[None, :w], 0), axis=1)
    start_col += (np.arange(n) * w)[:, None]  # flat index of each column's segment start
    kind = np.where(is_obst, o_kind[:, :w], _FLAT).reshape(-1)[start_col]
    kind = np.where(cols[None, :w] >= (length - 4)[:, None], _FLAT, kind)  # the end zone is flat
    ground = np.where(kind == _GAP, 0, seg_h.reshape(-1)[start_col])
    crate_h = (1 + (u[5][:, :w] * 2).astype(np.int64)).reshape(-1)[start_col]
    crate = np.where(kind == _CRATE, crate_h, 0)
    return length, ground, crate, kind == _SPIKES


def _grids(length: np.ndarray, ground: np.ndarray, crate: np.ndarray, spikes: np.ndarray, height: int):
    n, w = ground.shape
    rows = np.arange(height)[None, :, None]
    top = height - ground - crate  # first solid row of each column
    solid = rows >= top[:, None, :]
    solid[:, 0, :] = True  # ceiling
    cols = np.arange(w)[None, :]
    wall = (cols == 0) | (cols >= length[:, None] - 1)  # start wall and end wall (+ padding beyond the level)
    solid |= wall[:, None, :]
    hazard = np.zeros_like(solid)
    hazard[:, height - 1, :] = (ground == 0) & ~wall  # lava at the bottom of gaps
    spike_row = np.clip(top - 1, 0, height - 1)
    n_idx, c_idx = np.nonzero(spikes & ~wall)
    hazard[n_idx, spike_row[n_idx, c_idx], c_idx] = True
    return solid, hazard


def generate_levels(level_seeds: np.ndarray, split: str, config: CoinRunConfig = CoinRunConfig()) -> CoinRunLevels:
    """Generate one level per level seed. `split` decides only the coin: `train` puts it on the exit (or, on
    `random_coin_percent`% of levels, like `ood`), `ood` uniformly on the cells the agent can reach from the start
    and still reach the exit from (never the start cell). Same seed, same terrain, under every split."""
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    seeds = np.asarray(level_seeds, dtype=np.int64).ravel()
    n = seeds.size
    u = level_uniform_streams(seeds, (7, *range(9, 16)), count=config.max_length + 8)
    length, ground, crate, spikes = _terrain(u[1:], config)
    solid, hazard = _grids(length, ground, crate, spikes, config.height)
    rows = np.arange(n)
    start = np.stack([config.height - 1 - ground[:, 1], np.ones(n, dtype=np.int64)], axis=1)
    exit_col = length - 2
    exit_ = np.stack([config.height - 1 - ground[rows, exit_col], exit_col], axis=1)
    levels = CoinRunLevels(
        solid=solid,
        hazard=hazard,
        agent=start.copy(),
        rise=np.zeros(n, dtype=np.int64),
        coin=exit_.copy(),
        exit=exit_,
        start=start,
        length=length,
        seeds=seeds,
    )
    if split == "ood":
        move = np.ones(n, dtype=bool)
    else:
        move = u[0][:, 0] * 100.0 < config.random_coin_percent  # stream 7
    if move.any():
        idx = np.flatnonzero(move)
        sub = levels.select(idx)
        cand = coin_candidates(sub, config).reshape(idx.size, -1)  # (k, H*W)
        scores = np.where(cand, level_uniform(seeds[idx], stream=8, count=cand.shape[1]), -1.0)
        flat = scores.argmax(axis=1)
        levels.coin[idx] = np.stack([flat // levels.width, flat % levels.width], axis=1)
    return levels


# ------------------------------------------------------------------------------------------------------- observation
def observe(levels: CoinRunLevels, view: int = 6) -> np.ndarray:
    """Egocentric symbolic observation (N, 5, 2v+1, 2v+1) uint8 centred on the agent, channels OBS_CHANNELS.
    Cells outside the world read as solid; `rise` is the jump counter broadcast over the window.

    Batched without a loop over levels: the grids are padded by `view` (solid outside, no hazard) and every window is
    one gather at flat offsets from its agent's cell (the env keeps the padded grids between steps)."""
    return _observe_padded(_pad_grids(levels, view), levels, view)


def _pad_grids(levels: CoinRunLevels, view: int) -> np.ndarray:
    """(N, 2, H + 2v, W + 2v) uint8: solid (1 outside the world) and hazard (0 outside), padded by `view`."""
    n, h, w = len(levels), levels.height, levels.width
    grids = np.zeros((n, 2, h + 2 * view, w + 2 * view), dtype=np.uint8)
    grids[:, 0] = 1
    grids[:, 0, view : view + h, view : view + w] = levels.solid
    grids[:, 1, view : view + h, view : view + w] = levels.hazard
    return grids


def _observe_padded(grids: np.ndarray, levels: CoinRunLevels, view: int) -> np.ndarray:
    n, _, hp, wp = grids.shape
    side = 2 * view + 1
    agent = levels.agent
    # windows[i, :, r, c] is the side x side window whose top-left is padded cell (r, c) of level i: a strided view.
    s0, s1, s2, s3 = grids.strides
    windows = np.lib.stride_tricks.as_strided(
        grids, (n, 2, hp - side + 1, wp - side + 1, side, side), (s0, s1, s2, s3, s2, s3), writeable=False
    )
    obs = np.zeros((n, 5, side, side), dtype=np.uint8)
    obs[:, :2] = windows[np.arange(n), :, agent[:, 0], agent[:, 1]]
    # Coin and exit: one cell each when inside the window (an absent coin never is).
    cells = np.stack([levels.coin, levels.exit], axis=1) - agent[:, None, :] + view  # (N, 2, 2) window coordinates
    vis = ((cells >= 0) & (cells < side)).all(axis=2)
    vis[:, 0] &= levels.coin[:, 0] != NO_COIN
    i, ch = np.nonzero(vis)
    obs[i, 2 + ch, cells[i, ch, 0], cells[i, ch, 1]] = 1
    obs[:, 4] = levels.rise.astype(np.uint8)[:, None, None]
    return obs


@functools.lru_cache(maxsize=16)
def _window_offsets(side: int, hp: int, wp: int) -> np.ndarray:
    """(2*side*side,) flat offsets of a side x side window's cells from its top-left cell in two stacked hp x wp
    planes (solid, then hazard)."""
    one = (np.arange(side)[:, None] * wp + np.arange(side)[None, :]).ravel()
    return np.concatenate([one, one + hp * wp])


PALETTE = {
    "sky": (196, 226, 246),
    "solid": (120, 86, 56),
    "hazard": (222, 60, 40),
    "coin": (247, 196, 21),
    "exit": (60, 170, 80),
    "agent": (40, 70, 200),
}


def render(levels: CoinRunLevels, cell_px: int = 8) -> np.ndarray:
    """RGB frames (N, H*p, W*p, 3) uint8 of whole levels for people: sky, brown ground, red hazards, green exit,
    yellow coin and blue agent (objects drawn inset so the cell they occupy stays visible)."""
    n, h, w, p = len(levels), levels.height, levels.width, cell_px
    kind = np.where(levels.solid, 1, np.where(levels.hazard, 2, 0))
    base = np.array([PALETTE[k] for k in ("sky", "solid", "hazard")], dtype=np.uint8)
    img = base[kind]
    rows = np.arange(n)
    obj = np.zeros((n, h, w), dtype=np.int64)
    obj[rows, levels.exit[:, 0], levels.exit[:, 1]] = 1
    has = levels.has_coin()
    obj[rows[has], levels.coin[has, 0], levels.coin[has, 1]] = 2
    obj[rows, levels.agent[:, 0], levels.agent[:, 1]] = 3
    img = img.repeat(p, axis=1).repeat(p, axis=2)
    obj = obj.repeat(p, axis=1).repeat(p, axis=2)
    inset = max(1, p // 5)
    in_r = (np.arange(h * p) % p >= inset) & (np.arange(h * p) % p < p - inset)
    in_c = (np.arange(w * p) % p >= inset) & (np.arange(w * p) % p < p - inset)
    inner = in_r[:, None] & in_c[None, :]
    for code, name in ((1, "exit"), (2, "coin"), (3, "agent")):
        img[(obj == code) & inner] = PALETTE[name]
    return img


# ------------------------------------------------------------------------------------------------------- environment
RECORD_KEYS = (
    "coin_collected",
    "coin_step",
    "exit_reached",
    "exit_step",
    "died",
    "length",
    "level_seed",
    "coin_at_exit",
)


class CoinRunVecEnv(gym.vector.VectorEnv):
    """N CoinRun levels stepping together (Gymnasium vector-env conventions, same-step autoreset), like MazeVecEnv.

    Reward 1 on the step the coin is collected. The episode terminates at the exit or on a hazard, and is truncated
    at `max_steps`. A finished episode is reset in the same step (the returned obs is the new level's) and `info`
    carries its record under Gymnasium's masked-info convention (`info[key][i]` valid where `info["_" + key][i]`):
    keys RECORD_KEYS (steps are -1 when never reached; `coin_at_exit` describes the level as generated).
    """

    metadata = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP, "render_modes": ["rgb_array"]}

    def __init__(self, num_envs: int, split: str = "train", config: CoinRunConfig = CoinRunConfig()) -> None:
        if split not in SPLITS:
            raise unknown("split", split, SPLITS)
        if num_envs < 1:
            raise WorkbenchError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs, self.split, self.config = num_envs, split, config
        side = config.window
        self.single_observation_space = gym.spaces.Box(0, config.jump_height, shape=(5, side, side), dtype=np.uint8)
        self.single_action_space = gym.spaces.Discrete(N_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.spaces.MultiDiscrete(np.full(num_envs, N_ACTIONS))
        self.render_mode = "rgb_array"
        self._queue = LevelQueue(lambda seeds: generate_levels(seeds, split, config), num_envs)
        self.levels: CoinRunLevels | None = None

    def _start(self, idx: np.ndarray, levels: CoinRunLevels) -> None:
        assert self.levels is not None
        for name in CoinRunLevels._ARRAYS:
            getattr(self.levels, name)[idx] = getattr(levels, name)
        self.t[idx] = 0
        self.coin_step[idx] = -1
        self.exit_step[idx] = -1
        self.died[idx] = False
        self.coin_at_exit[idx] = levels.coin_at_exit()
        self._grids[idx] = _pad_grids(levels, self.config.view)
        self._mark(idx)

    def _mark(self, idx: np.ndarray | None) -> None:
        """Record coin / exit / hazard at the agent's cell for envs `idx` (None: all); a collected coin disappears."""
        lv = self.levels
        assert lv is not None
        if idx is None:
            row, col = lv.agent[:, 0], lv.agent[:, 1]
            got = (lv.coin[:, 0] == row) & (lv.coin[:, 1] == col)  # an absent coin (-1, -1) is never at the agent
            if got.any():
                self.coin_step[got] = self.t[got]
                lv.coin[got] = NO_COIN
            at_exit = (lv.exit[:, 0] == row) & (lv.exit[:, 1] == col) & (self.exit_step < 0)
            np.copyto(self.exit_step, self.t, where=at_exit)
            h, w = lv.height, lv.width
            self.died |= lv.hazard.reshape(-1)[np.arange(len(row)) * (h * w) + row * w + col]
            return
        pos = lv.agent[idx]
        got = lv.has_coin()[idx] & np.all(pos == lv.coin[idx], axis=1)
        self.coin_step[idx[got]] = self.t[idx[got]]
        lv.coin[idx[got]] = NO_COIN
        at_exit = np.all(pos == lv.exit[idx], axis=1) & (self.exit_step[idx] < 0)
        self.exit_step[idx[at_exit]] = self.t[idx[at_exit]]
        self.died[idx] |= lv.hazard[idx, pos[:, 0], pos[:, 1]]

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        """Start N new episodes. `seed` fixes every level this env will generate; `options={"levels": CoinRunLevels}`
        starts from given levels instead (edited levels, analysis)."""
        if seed is not None:
            self._queue.seed(seed)
        levels = reset_levels(options, self.num_envs, self._queue.take)
        self.levels = levels.copy()
        n = self.num_envs
        self.t = np.zeros(n, dtype=np.int64)
        self.coin_step = np.full(n, -1, dtype=np.int64)
        self.exit_step = np.full(n, -1, dtype=np.int64)
        self.died = np.zeros(n, dtype=bool)
        self.coin_at_exit = self.levels.coin_at_exit()
        self._grids = _pad_grids(self.levels, self.config.view)  # padded solid / hazard, kept for observations
        self._mark(None)
        return _observe_padded(self._grids, self.levels, self.config.view), {"level_seed": self.levels.seeds.copy()}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict]:
        lv = self.levels
        if lv is None:
            raise WorkbenchError("call reset() before step()")
        n = self.num_envs
        actions = np.asarray(actions, dtype=np.int64).reshape(n)
        if actions.min() < 0 or actions.max() >= N_ACTIONS:
            raise WorkbenchError(f"coinrun actions must be in 0..{N_ACTIONS - 1} ({', '.join(ACTION_NAMES)})")
        rows = np.arange(n)
        r, c, rise = physics(lv.solid, rows, lv.agent[:, 0], lv.agent[:, 1], lv.rise, actions, self.config.jump_height)
        lv.agent = np.stack([r, c], axis=1)
        lv.rise = rise
        self.t += 1
        had_coin = self.coin_step >= 0
        self._mark(None)
        reward = ((self.coin_step >= 0) & ~had_coin).astype(np.float32)
        terminated = (self.exit_step >= 0) | self.died
        truncated = (self.t >= self.config.max_steps) & ~terminated
        done = terminated | truncated
        info: dict = {}
        if done.any():
            idx = np.flatnonzero(done)
            record = {
                "coin_collected": self.coin_step >= 0,
                "coin_step": self.coin_step.copy(),
                "exit_reached": self.exit_step >= 0,
                "exit_step": self.exit_step.copy(),
                "died": self.died.copy(),
                "length": self.t.copy(),
                "level_seed": lv.seeds.copy(),
                "coin_at_exit": self.coin_at_exit.copy(),
            }
            info = masked_info(record, done)
            self._start(idx, self._queue.take(idx.size))
        return _observe_padded(self._grids, lv, self.config.view), reward, terminated, truncated, info

    def render(self) -> np.ndarray:
        if self.levels is None:
            raise WorkbenchError("call reset() before render()")
        return render(self.levels)
