"""Parity with procgen-tools (UlisseMini/procgen-tools), the library behind the published maze analyses.

Why: Turner et al. (2023) define the decision square and the top-right vector through procgen-tools' functions. Our
own definitions are close but not identical, so numbers computed with ours can differ from the published ones on a
few per cent of mazes. This module computes both conventions on a `MazeLevels` batch (native mazes, or procgen
states converted with `levels_from_procgen`), so a result can be reported in either and the gap measured.

Decision squares, two conventions (`decision_squares_by(levels, convention)`):
- `workbench` (the default, `workbench.rl.envs.maze.decision_squares`): walk from the mouse's cell along the way to
  the cheese; the decision square is the first cell where the next step towards the cheese and the next step towards
  the maze's top-right corner differ. When either goal lies on the way to the other there is no decision to make, so
  there is no decision square (-1, -1) and the maze is left out of decision-square metrics.
- `procgen-tools` (`get_decision_square_from_grid_graph` there): paths start at the maze's bottom-left start cell
  (not wherever the mouse is), and the decision square is the last cell the path to the cheese shares with the path
  to the corner. The two conventions agree except in one case: when the corner lies strictly on the way to the
  cheese, procgen-tools returns the cell right AFTER the corner on the path to the cheese (its loop runs past the end
  of the corner path), where ours returns none. When the cheese lies on the way to the corner (or the mouse starts
  on the cheese) both return none. (procgen-tools' `maze_has_decision_square`, "the cheese is not on the path to the
  corner", matches its own convention.) Measured (tests/test_procgen_parity.py): they differ on about 3% of procgen
  `hard` levels with procgen's own cheese, 6% with the cheese in the top-right 5x5 region, and 4-10% of native mazes.
Why ours is the default: past the corner the agent is no longer choosing between cheese and corner -- it has already
reached the corner -- so a "decision square" there measures something else (leaving the corner) and mixes two
behaviours in one metric. Use `procgen-tools` to reproduce published numbers. Both assume perfect mazes (procgen's and
ours are), where every path is unique; on mazes with loops ties between shortest paths are broken in action order
(up, down, left, right) in both conventions, which need not match networkx's choice in procgen-tools.

The top-right path (`levels_top_right_path` here; `workbench.rl.procgen_state.maze_top_right_path` on procgen
states), as procgen-tools' `make_top_right_path`: an L-shaped corridor cut through the wall padding from the maze's
top-right cell straight up to the world's top row and then right to the world's top-right cell. The corridor touches
the maze only at its corner, so the maze stays perfect and the world corner becomes reachable by one unique path
(through the maze's corner). procgen-tools hard-codes a 25x25 world (procgen's `hard` mode); ours uses each level's
own world size. A maze that fills its world has no padding to cut through and is refused (procgen-tools silently
returns it unchanged). `corner()` of the edited levels still names the maze's own top-right cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from workbench.errors import WorkbenchError, unknown
from workbench.rl.envs.maze import ACTION_DELTAS, NO_CHEESE, MazeLevels, decision_squares, distances_to, greedy_actions

CONVENTIONS = ("workbench", "procgen-tools")
DEFAULT_CONVENTION = "workbench"


def decision_squares_procgen_tools(levels: MazeLevels) -> np.ndarray:
    """(N, 2) int64 decision squares in procgen-tools' convention (see the module docstring), (-1, -1) where there is
    none (no cheese, or the cheese lies on the way from the start to the corner).

    Batched: both next-step choices are read off two distance maps, and all mazes walk from their start cell at once."""
    n = len(levels)
    has = levels.has_cheese()
    corner = levels.corner()
    d_cheese = distances_to(levels, np.where(has[:, None], levels.cheese, corner))
    d_corner = distances_to(levels, corner)
    pos = levels.start()
    result = np.full((n, 2), -1, dtype=np.int64)
    rows = np.arange(n)
    reachable = (d_cheese[rows, pos[:, 0], pos[:, 1]] >= 0) & (d_corner[rows, pos[:, 0], pos[:, 1]] >= 0)
    active = has & reachable
    for _ in range(levels.world_size**2):
        if not active.any():
            break
        a_cheese = greedy_actions(d_cheese, pos)
        a_corner = greedy_actions(d_corner, pos)
        split_here = active & (a_cheese >= 0) & (a_corner >= 0) & (a_cheese != a_corner)
        result[split_here] = pos[split_here]
        # the corner path ends here but the cheese path goes on: procgen-tools returns the next cell on it
        past_corner = active & (a_corner < 0) & (a_cheese >= 0)
        result[past_corner] = pos[past_corner] + ACTION_DELTAS[a_cheese[past_corner]]
        active &= ~split_here & ~past_corner & (a_cheese >= 0)
        pos[active] += ACTION_DELTAS[a_cheese[active]]
    return result


def decision_squares_by(levels: MazeLevels, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """(N, 2) decision squares in the named convention: `workbench` (default) or `procgen-tools`."""
    if convention == "workbench":
        return decision_squares(levels)
    if convention == "procgen-tools":
        return decision_squares_procgen_tools(levels)
    raise unknown("decision-square convention", convention, CONVENTIONS)


def levels_top_right_path(levels: MazeLevels) -> MazeLevels:
    """A copy of `levels` with procgen-tools' top-right path cut in every maze: the cells from the maze's top-right
    cell straight up to row 0, then along row 0 to the world's top-right cell, opened. Refuses (one line, naming the
    first such maze) mazes that fill their world, where there is no padding to cut through."""
    full = np.flatnonzero(levels.offset <= 0)
    if full.size:
        i = int(full[0])
        w = levels.world_size
        raise WorkbenchError(
            f"maze {i} is {int(levels.size[i])}x{int(levels.size[i])} and fills its {w}x{w} world: no padding to cut "
            f"a top-right path through ({full.size} such mazes); select mazes smaller than the world"
        )
    out = levels.copy()
    w = levels.world_size
    rows = np.arange(w)
    top = levels.offset[:, None]
    right = (levels.offset + levels.size - 1)[:, None]
    up = (rows[None, :] < top)[:, :, None] & (rows[None, None, :] == right[:, :, None])  # (N, W, W) column above
    along = (rows[None, :, None] == 0) & (rows[None, None, :] > right[:, :, None])  # row 0, right of the maze
    out.walls &= ~(up | along)
    return out


def levels_from_procgen(states: Sequence, region: int = 5) -> MazeLevels:
    """Procgen maze states (`ProcgenState`s or their bytes) as a `MazeLevels` batch (walls, mouse, cheese, maze size
    and offset, level seeds), so the native maze geometry (distances, decision squares, edits) applies to them.
    All states must share one world size (one procgen distribution mode)."""
    from workbench.rl.procgen_state import MazeView, ProcgenState, parse

    views = []
    for k, s in enumerate(states):
        st = s if isinstance(s, ProcgenState) else parse(s)
        if st.game != "maze":
            raise WorkbenchError(f"state {k} is a {st.game!r} state; levels_from_procgen needs maze states")
        views.append(MazeView(st))
    if not views:
        raise WorkbenchError("levels_from_procgen needs at least one state")
    sizes = sorted({v.world_size for v in views})
    if len(sizes) > 1:
        raise WorkbenchError(f"maze states mix world sizes {sizes}; convert one distribution mode at a time")
    cheese = [v.cheese() for v in views]
    return MazeLevels(
        walls=np.stack([v.walls() for v in views]),
        mouse=np.array([v.mouse() for v in views], dtype=np.int64).reshape(-1, 2),
        cheese=np.array([c if c is not None else (NO_CHEESE, NO_CHEESE) for c in cheese], dtype=np.int64),
        size=np.array([v.size for v in views], dtype=np.int64),
        offset=np.array([v.offset for v in views], dtype=np.int64),
        seeds=np.array([int(v.state.head["current_level_seed"]) for v in views], dtype=np.int64),
        region=region,
    )
