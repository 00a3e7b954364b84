"""Procgen levels as experiments see them: parsed start states, edited and rendered on demand.

Why maze levels are `MazeLevels`: every maze analysis (decision squares, BFS distances, cheese vectors, spatial
probes, vector fields, labels) reads the grid, the mouse and the cheese. A procgen maze parsed from its state bytes
is exactly that grid, so `ProcgenMazeLevels` is a `MazeLevels` that also keeps each level's procgen state; edits
(`with_mouse`, `without_cheese`, ...) change the arrays, and `observe()` writes them into the state bytes and
renders procgen's own 64x64 frame. The analyses then run unchanged on the real game.

Why rendering is cheap: procgen 0.10.7's set_state re-renders the observation (tests/test_procgen_parity.py), so a
maze frame is set_state + observe() on one reused env of RENDER_CHUNK games, with no step. A batch that differs only
in the mouse (a vector field: the same maze with the mouse on each of K cells) serialises its state once; the K
blobs are that byte string with the mouse entity's x and y written at their known offsets, and without the state's
RNG texts, which set_state spends ~40% of its time parsing and no frame reads (`_drawable`). Frames are byte for byte
those of the full state (tests/test_procgen_field.py). CoinRun frames still go through a clock-rewound NOOP step in
a side env, as `ProcgenVecEnv.reset(options={"states": ...})` draws them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from workbench.errors import WorkbenchError
from workbench.rl.envs.maze import MazeLevels
from workbench.rl.envs.procgen import ProcgenConfig
from workbench.rl.procgen_state import (
    _HEAD,
    ENTITY_DTYPE,
    CoinRunView,
    MazeView,
    ProcgenState,
    _write,
    coinrun_with_coin,
    maze_with_cheese,
)

RENDER_CHUNK = 64  # games in the reused render env (at most); K frames take ceil(K / 64) observe() calls
_RENDERERS: dict = {}  # (game, mode) -> a cached render env (maze) or side envs (CoinRun)
_RENDER_LOCK = threading.Lock()
_X_AT, _Y_AT = ENTITY_DTYPE.fields["x"][1], ENTITY_DTYPE.fields["y"][1]


def _maze_env(mode: str, k: int):
    """The cached procgen maze env that draws frames for `mode`, with at least min(k, RENDER_CHUNK) games: grown in
    powers of two up to RENDER_CHUNK (a new env generates one level per game, ~5 ms each), then reused."""
    from workbench.rl.envs.procgen import _make

    key = ("maze", mode)
    env = _RENDERERS.get(key)
    if env is None or env.num < min(k, RENDER_CHUNK):
        size = min(RENDER_CHUNK, 1 << max(0, (k - 1).bit_length()))
        env = _RENDERERS[key] = _make(ProcgenConfig(game="maze", distribution_mode=mode), size, seed=0)
    return env


def render_maze_blobs(blobs, mode: str = "hard") -> np.ndarray:
    """(K, 3, 64, 64) uint8 C-contiguous frames of K maze states given as bytes-like objects (bytes, or rows of a
    uint8 array): each is loaded with set_state into one game of the reused render env, then the env is observed."""
    out = np.empty((len(blobs), 3, 64, 64), dtype=np.uint8)
    if not len(blobs):
        return out
    with _RENDER_LOCK:  # one env shared by every caller in the process (the app renders from several threads)
        env = _maze_env(mode, len(blobs))
        ffi, call = env._ffi, env.call_c_func
        for lo in range(0, len(blobs), env.num):
            chunk = blobs[lo : lo + env.num]
            for i, blob in enumerate(chunk):
                call("set_state", i, ffi.from_buffer(blob), len(blob))
            _, ob, _ = env.observe()
            out[lo : lo + len(chunk)] = ob["rgb"][: len(chunk)].transpose(0, 3, 1, 2)
    return out


def render(states: list[ProcgenState], config: ProcgenConfig) -> np.ndarray:
    """(K, 3, 64, 64) uint8 C-contiguous frames of `states`: maze states by set_state + observe() (no step), CoinRun
    states by a clock-rewound NOOP step in a cached side env (the frame `ProcgenVecEnv` shows after a reset)."""
    if config.game == "maze":
        return render_maze_blobs([_drawable(s).to_bytes() for s in states], config.distribution_mode)
    from workbench.rl.envs.procgen import NOOP, _SideEnvs

    key = (config.game, config.distribution_mode)
    side = _RENDERERS.setdefault(key, _SideEnvs(ProcgenConfig(game=config.game, distribution_mode=key[1])))
    out = []
    for lo in range(0, len(states), RENDER_CHUNK):
        blobs = []
        for s in states[lo : lo + RENDER_CHUNK]:
            s = s.copy()
            s.head["cur_time"] -= 1  # the NOOP render step leaves the clock where it was
            blobs.append(s.to_bytes())
        frames, _, _ = side.step(blobs, NOOP)
        out.append(np.ascontiguousarray(frames.transpose(0, 3, 1, 2)))
    return np.concatenate(out) if out else np.zeros((0, 3, 64, 64), dtype=np.uint8)


def _mouse_offsets(state: ProcgenState) -> tuple[int, int]:
    """Byte offsets of the mouse entity's x and y (float32) in `state.to_bytes()`: after the head and the entity
    count, at the agent's index in the entity array."""
    start = sum(len(_write(kind, state.head[name])) for name, kind in _HEAD) + 4
    at = start + state.agent_index() * ENTITY_DTYPE.itemsize
    return at + _X_AT, at + _Y_AT


@dataclass
class ProcgenMazeLevels(MazeLevels):
    """`MazeLevels` of real procgen mazes (world 25x25 in `hard` mode). `states[i]` is level i's procgen state;
    the arrays (mouse, cheese) are the truth, written into the state when observed."""

    states: list = field(default_factory=list)
    mode: str = "hard"

    ACTION_GROUPS: ClassVar[tuple[tuple[int, ...], ...]] = ((5,), (3,), (0, 1, 2), (6, 7, 8))
    """procgen's 15 actions by direction: UP 5, DOWN 3, LEFT 0-2, RIGHT 6-8 (the rest do not move)."""
    PIXELS: ClassVar[bool] = True

    @classmethod
    def from_states(cls, states: list[ProcgenState], region: int, mode: str) -> ProcgenMazeLevels:
        views = [MazeView(s) for s in states]
        return cls(
            walls=np.stack([v.walls() for v in views]),
            mouse=np.array([v.mouse() for v in views], dtype=np.int64).reshape(-1, 2),
            cheese=np.array([v.cheese() or (-1, -1) for v in views], dtype=np.int64).reshape(-1, 2),
            size=np.array([v.size for v in views], dtype=np.int64),
            offset=np.array([v.offset for v in views], dtype=np.int64),
            seeds=np.array([int(s.head["current_level_seed"]) for s in states], dtype=np.int64),
            region=region,
            states=list(states),
            mode=mode,
        )

    def select(self, index) -> ProcgenMazeLevels:
        out = super().select(index)
        out.states = [self.states[int(i)] for i in np.atleast_1d(np.arange(len(self))[index])]
        return out

    def free_cells(self, i: int) -> np.ndarray:
        """Free cells without the cheese's: the mouse on the cheese would end a procgen episode when rendered."""
        cells = super().free_cells(i)
        if self.cheese[i, 0] < 0:
            return cells
        return cells[~np.all(cells == self.cheese[i], axis=1)]

    def _groups(self) -> list[tuple[ProcgenState, np.ndarray]]:
        """The batch as (state with this batch's cheese written in, rows using it): one group per distinct base
        state and cheese, so a batch of one maze with K mice (a vector field) edits and serialises one state."""
        n = len(self)
        if len(self.states) != n:
            raise WorkbenchError(f"ProcgenMazeLevels has {n} levels but {len(self.states)} procgen states")
        m = self.mouse
        w = self.world_size
        inside = np.all((m >= 0) & (m < w), axis=1)
        bad = ~inside | self.walls[np.arange(n), np.clip(m[:, 0], 0, w - 1), np.clip(m[:, 1], 0, w - 1)]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            cell = tuple(int(v) for v in m[i])
            raise WorkbenchError(
                f"mouse cell {cell} of maze {i} is a wall or outside the {w}x{w} world; choose a free cell"
            )
        rows: dict[tuple[int, int, int], list[int]] = {}
        for i, (state, cheese) in enumerate(zip(self.states, self.cheese.tolist(), strict=True)):
            rows.setdefault((id(state), cheese[0], cheese[1]), []).append(i)
        out = []
        for (_, r, c), idx in rows.items():
            base = self.states[idx[0]]
            out.append((maze_with_cheese(base, None if r < 0 else (r, c)), np.array(idx, dtype=np.int64)))
        return out

    def current_states(self) -> list[ProcgenState]:
        """Each level's procgen state with this batch's cheese (or none) and mouse written in (independent copies)."""
        out: list = [None] * len(self)
        for state, idx in self._groups():
            k, h = state.agent_index(), state.height
            for i in idx:
                st = state.copy()
                st.entities["x"][k] = self.mouse[i, 1] + 0.5
                st.entities["y"][k] = h - 1 - self.mouse[i, 0] + 0.5
                out[i] = st
        return out

    def state_blobs(self, drawable: bool = False) -> list:
        """Each level's current state as procgen bytes (rows of uint8 arrays; what `current_states()` would
        serialise to): one `to_bytes()` per group, the mouse's x and y (float32) written at their byte offsets.
        `drawable=True` leaves out the three RNG states (see `_drawable`): bytes that draw the same frame, for
        rendering only."""
        out: list = [None] * len(self)
        for state, idx in self._groups():
            if drawable:
                state = _drawable(state)
            blob = np.frombuffer(state.to_bytes(), dtype=np.uint8)
            x_at, y_at = _mouse_offsets(state)
            agent = state.entities[state.agent_index()]
            at = [blob[x_at : x_at + 4].view("<f4")[0], blob[y_at : y_at + 4].view("<f4")[0]]
            if at != [agent["x"], agent["y"]]:
                raise AssertionError("procgen state layout changed: the mouse's x, y are not at their offsets")
            mouse = self.mouse[idx]
            xy = np.empty((len(idx), 2), dtype="<f4")
            xy[:, 0] = mouse[:, 1] + 0.5
            xy[:, 1] = state.height - 1 - mouse[:, 0] + 0.5
            xy_bytes = xy.view(np.uint8)
            blobs = np.repeat(blob[None], len(idx), axis=0)
            blobs[:, x_at : x_at + 4] = xy_bytes[:, :4]
            blobs[:, y_at : y_at + 4] = xy_bytes[:, 4:]
            for j, i in enumerate(idx):
                out[i] = blobs[j]
        return out

    def observe(self) -> np.ndarray:
        """(N, 3, 64, 64) uint8 C-contiguous: procgen's own frame of each level's current state (set_state, no step;
        byte for byte the frame of the full state, tests/test_procgen_field.py)."""
        return render_maze_blobs(self.state_blobs(drawable=True), self.mode)


def _drawable(state: ProcgenState) -> ProcgenState:
    """A copy without the texts of its three RNG states (level_seed_rand_gen, rand_gen, asset_rand_gen; ~6.7 KB
    each). set_state parses each with std::istream, ~40% of its time; a maze frame reads none of them, so the
    render env gets states without them: the same frame (tested against the full state's), and the render env is
    never stepped, so its games' RNGs are never drawn from."""
    out = state.copy()
    for name in ("level_seed_rand_gen", "rand_gen"):
        out.head[name] = (out.head[name][0], b"")
    out.body["asset_rand_gen"] = (out.body["asset_rand_gen"][0], b"")
    return out


@dataclass
class ProcgenCoinRunLevels:
    """A batch of procgen CoinRun levels: `states[i]` is level i's state; `coin_removed[i]` drops its coin."""

    states: list
    mode: str = "hard"
    coin_removed: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.coin_removed is None:
            self.coin_removed = np.zeros(len(self.states), dtype=bool)

    def __len__(self) -> int:
        return len(self.states)

    @property
    def seeds(self) -> np.ndarray:
        return np.array([int(s.head["current_level_seed"]) for s in self.states], dtype=np.int64)

    def select(self, index) -> ProcgenCoinRunLevels:
        idx = np.atleast_1d(np.arange(len(self))[index])
        return ProcgenCoinRunLevels([self.states[int(i)] for i in idx], self.mode, self.coin_removed[idx].copy())

    def without_coin(self) -> ProcgenCoinRunLevels:
        """The same levels with the coin removed (the counterfactual for a coin vector)."""
        return ProcgenCoinRunLevels(list(self.states), self.mode, np.ones(len(self), dtype=bool))

    def coin(self) -> np.ndarray:
        """(N, 2) the coin cell (row, col), (-1, -1) where it was removed."""
        cells = [CoinRunView(s).coin() or (-1, -1) for s in self.states]
        out = np.array(cells, dtype=np.int64).reshape(-1, 2)
        out[self.coin_removed] = -1
        return out

    def current_states(self) -> list[ProcgenState]:
        return [
            coinrun_with_coin(s, None) if gone else s for s, gone in zip(self.states, self.coin_removed, strict=True)
        ]

    def observe(self) -> np.ndarray:
        return render(self.current_states(), ProcgenConfig(game="coinrun", distribution_mode=self.mode))
