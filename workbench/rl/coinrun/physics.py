"""CoinRun's level batch and one-step dynamics: the single source of truth shared by the env and the planner.

Why a module of its own: the env (`workbench.rl.envs.coinrun`) places ood coins with the planner, and the planner
steps states with these physics; keeping levels and physics below both means neither imports the other.
See `workbench.rl.envs.coinrun` for the rules in prose.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.errors import WorkbenchError
from workbench.rl.levels import select_rows

SPLITS = ("train", "ood")
ACTION_NAMES = ("noop", "left", "right", "jump", "jump-left", "jump-right")
ACTION_DX = np.array([0, -1, 1, 0, -1, 1], dtype=np.int64)
ACTION_JUMP = np.array([False, False, False, True, True, True])
N_ACTIONS = len(ACTION_NAMES)
OBS_CHANNELS = ("solid", "hazard", "coin", "exit", "rise")
NO_COIN = -1  # coin coordinates of a level whose coin was removed (or collected)

# Terrain segment kinds (per column)


@dataclass(frozen=True)
class CoinRunConfig:
    """What a CoinRun distribution is. Levels are `min_length..max_length` columns long (walls included) and `height`
    rows tall; the world is `max_length` wide (shorter levels are padded with solid). `view` is the half-width of the
    egocentric window (window side 2*view+1). `random_coin_percent` applies to the `train` split only."""

    height: int = 12
    min_length: int = 24
    max_length: int = 36
    view: int = 6
    jump_height: int = 3
    max_steps: int = 120
    random_coin_percent: float = 0.0

    def __post_init__(self) -> None:
        if not 10 <= self.height <= 32:
            raise WorkbenchError(f"coinrun height must be in 10..32, got {self.height}")
        if not 12 <= self.min_length <= self.max_length <= 128:
            raise WorkbenchError(
                f"coinrun lengths must satisfy 12 <= min_length <= max_length <= 128, got {self.min_length}..."
                f"{self.max_length}"
            )
        if not 2 <= self.view <= 16:
            raise WorkbenchError(f"coinrun view must be in 2..16, got {self.view}")
        if self.jump_height != 3:
            raise WorkbenchError(f"coinrun jump_height must be 3 (terrain is generated for it), got {self.jump_height}")
        if self.max_steps < 1:
            raise WorkbenchError(f"coinrun max_steps must be >= 1, got {self.max_steps}")
        if not 0.0 <= self.random_coin_percent <= 100.0:
            raise WorkbenchError(f"coinrun random_coin_percent must be in 0..100, got {self.random_coin_percent}")

    @property
    def window(self) -> int:
        return 2 * self.view + 1

    @property
    def world_width(self) -> int:
        return self.max_length


@dataclass
class CoinRunLevels:
    """A batch of N levels: the full state an observation is rendered from. All arrays are batch-first.

    solid:  (N, H, W) bool, cells the agent cannot enter (ground, crates, walls, ceiling)
    hazard: (N, H, W) bool, cells that end the episode (lava at the bottom of gaps, spikes)
    agent:  (N, 2) int64 (row, col); rise: (N,) int64 jump counter (0: not rising)
    coin:   (N, 2) int64 (row, col), or (-1, -1) when the coin is absent (removed or collected)
    exit:   (N, 2) int64 (row, col), the cell in front of the end wall
    start:  (N, 2) int64 the agent's start cell; length: (N,) int64 level length in columns
    seeds:  (N,) int64 level seeds (-1 for hand-edited levels)
    """

    solid: np.ndarray
    hazard: np.ndarray
    agent: np.ndarray
    rise: np.ndarray
    coin: np.ndarray
    exit: np.ndarray
    start: np.ndarray
    length: np.ndarray
    seeds: np.ndarray

    _ARRAYS = ("solid", "hazard", "agent", "rise", "coin", "exit", "start", "length", "seeds")

    def __len__(self) -> int:
        return int(self.solid.shape[0])

    @property
    def height(self) -> int:
        return int(self.solid.shape[1])

    @property
    def width(self) -> int:
        return int(self.solid.shape[2])

    def has_coin(self) -> np.ndarray:
        return self.coin[:, 0] != NO_COIN

    def coin_at_exit(self) -> np.ndarray:
        """(N,) bool: the coin sits on the exit cell (always true on `train` levels without randomisation)."""
        return np.all(self.coin == self.exit, axis=1)

    def select(self, index: np.ndarray | slice) -> CoinRunLevels:
        """A sub-batch (copies), e.g. `levels.select(np.array([0, 3]))`."""
        return select_rows(self, index)

    def copy(self) -> CoinRunLevels:
        return self.select(slice(None))

    def with_coin(self, coin: np.ndarray) -> CoinRunLevels:
        """The same levels with the coin moved to `coin` (N, 2) ((-1, -1): no coin); refuses solid cells."""
        coin = np.asarray(coin, dtype=np.int64).reshape(len(self), 2)
        present = coin[:, 0] != NO_COIN
        _check_cells(self, coin[present], np.flatnonzero(present), "coin")
        out = self.copy()
        out.coin = coin
        return out

    def without_coin(self) -> CoinRunLevels:
        """The same levels with the coin removed (the counterfactual for the coin vector)."""
        return self.with_coin(np.full((len(self), 2), NO_COIN))

    def with_agent(self, agent: np.ndarray, rise: np.ndarray | int = 0) -> CoinRunLevels:
        """The same levels with the agent moved to `agent` (N, 2) and jump counter `rise`; refuses solid cells."""
        agent = np.asarray(agent, dtype=np.int64).reshape(len(self), 2)
        _check_cells(self, agent, np.arange(len(self)), "agent")
        out = self.copy()
        out.agent = agent
        out.rise = np.broadcast_to(np.asarray(rise, dtype=np.int64), (len(self),)).copy()
        return out


def _check_cells(levels: CoinRunLevels, cells: np.ndarray, which: np.ndarray, what: str) -> None:
    """Refuse cells outside the world or on a solid cell, naming the first bad one (vectorised: one check per batch)."""
    from workbench.validate import check_grid_cells

    check_grid_cells(levels.solid, cells, which, what=what, unit="level", blocked_phrase="solid")


# ----------------------------------------------------------------------------------------------------------- physics
def physics(
    solid: np.ndarray,
    level: np.ndarray,
    row: np.ndarray,
    col: np.ndarray,
    rise: np.ndarray,
    action: np.ndarray,
    jump_height: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One step of the dynamics for M agents: agent m lives in level `level[m]` of `solid` (N, H, W).

    row, col, rise, action: (M,) int64. Returns the new (row, col, rise). Used by the env and, over every state at
    once, by the expert planner, so both agree exactly. Rows and cols are clipped so that states on the border
    (only ever enumerated by the planner) index safely."""
    h, w = solid.shape[1], solid.shape[2]
    cells = solid.reshape(-1)  # flat (level, row, col) lookups: one gather each, no index broadcasting
    base = level * (h * w)
    below = np.minimum(row + 1, h - 1)
    on_ground = cells[base + below * w + col]
    jump = ACTION_JUMP[action]
    rise = np.where(jump & on_ground & (rise == 0), jump_height, rise)
    above = np.maximum(row - 1, 0)
    rising = rise > 0
    can_rise = rising & ~cells[base + above * w + col]
    row = np.where(can_rise, above, row)
    rise = np.where(can_rise, rise - 1, np.where(rising, 0, rise))
    falling = ~rising & ~on_ground
    row = np.where(falling, below, row)
    target = np.minimum(np.maximum(col + ACTION_DX[action], 0), w - 1)
    col = np.where(cells[base + row * w + target], col, target)
    return row, col, rise


def concat_levels(parts: list[CoinRunLevels]) -> CoinRunLevels:
    """One batch from several (same world size)."""
    out = parts[0].copy()
    for name in CoinRunLevels._ARRAYS:
        setattr(out, name, np.concatenate([getattr(p, name) for p in parts]))
    return out
