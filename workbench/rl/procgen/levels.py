"""Procgen levels as experiments see them: parsed start states, edited and rendered on demand.

Why maze levels are `MazeLevels`: every maze analysis (decision squares, BFS distances, cheese vectors, spatial
probes, vector fields, labels) reads the grid, the mouse and the cheese. A procgen maze parsed from its state bytes
is exactly that grid, so `ProcgenMazeLevels` is a `MazeLevels` that also keeps each level's procgen state; edits
(`with_mouse`, `without_cheese`, ...) change the arrays, and `observe()` writes them into the state bytes and
renders procgen's own 64x64 frame. The analyses then run unchanged on the real game.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from workbench.rl.envs.maze import MazeLevels
from workbench.rl.envs.procgen import ProcgenConfig
from workbench.rl.procgen_state import (
    CoinRunView,
    MazeView,
    ProcgenState,
    coinrun_with_coin,
    maze_with_cheese,
    maze_with_mouse,
)

RENDER_CHUNK = 64
_RENDERERS: dict = {}


def render(states: list[ProcgenState], config: ProcgenConfig) -> np.ndarray:
    """(K, 3, 64, 64) uint8 frames of `states`, in chunks through one cached side env per game and mode."""
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

    def current_states(self) -> list[ProcgenState]:
        """Each level's procgen state with this batch's cheese (or none) and mouse written in."""
        out = []
        for i, base in enumerate(self.states):
            cheese = None if self.cheese[i, 0] < 0 else (int(self.cheese[i, 0]), int(self.cheese[i, 1]))
            st = maze_with_cheese(base, cheese)
            out.append(maze_with_mouse(st, (int(self.mouse[i, 0]), int(self.mouse[i, 1]))))
        return out

    def observe(self) -> np.ndarray:
        return render(self.current_states(), ProcgenConfig(game="maze", distribution_mode=self.mode))


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
