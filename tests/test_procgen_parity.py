"""Parity with procgen-tools (issue 11): both decision-square conventions against slow BFS references, procgen-tools'
top-right path (maze stays perfect, round-trips through bytes and procgen), legacy-format published checkpoints, and
procgen's set_state re-rendering the observation. Procgen parts skip when the optional extra is not installed."""

from __future__ import annotations

import io
import pickle
from collections import deque

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.rl.envs.maze import MazeConfig, MazeLevels, decision_squares, generate_levels
from workbench.rl.maze_parity import (
    decision_squares_by,
    decision_squares_procgen_tools,
    levels_from_procgen,
    levels_top_right_path,
)

torch.set_num_threads(1)
MOVES = ((-1, 0), (1, 0), (0, -1), (0, 1))


# --------------------------------------------------------------------------------------------- slow references
def _bfs_path(free: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """The cells from start to goal (both included) by breadth-first search with parent pointers."""
    parent = {start: None}
    todo = deque([start])
    while todo:
        cell = todo.popleft()
        if cell == goal:
            break
        for dr, dc in MOVES:
            nxt = (cell[0] + dr, cell[1] + dc)
            if 0 <= nxt[0] < free.shape[0] and 0 <= nxt[1] < free.shape[1] and free[nxt] and nxt not in parent:
                parent[nxt] = cell
                todo.append(nxt)
    path = [goal]
    while parent[path[-1]] is not None:
        path.append(parent[path[-1]])
    return path[::-1]


def _paths(levels: MazeLevels, i: int, start) -> tuple[list, list]:
    free = ~levels.walls[i]
    start = (int(start[0]), int(start[1]))
    cheese = (int(levels.cheese[i, 0]), int(levels.cheese[i, 1]))
    corner = (int(levels.corner()[i, 0]), int(levels.corner()[i, 1]))
    return _bfs_path(free, start, cheese), _bfs_path(free, start, corner)


def _ref_procgen_tools(levels: MazeLevels, i: int) -> tuple[int, int]:
    """procgen-tools' get_decision_square_from_grid_graph, restated: paths from the start cell; walk the cheese path
    and return the cell before the first disagreement, or the cheese-path cell just past the end of the corner path;
    none when the cheese path ends first (cheese on the way to the corner)."""
    to_cheese, to_corner = _paths(levels, i, levels.start()[i])
    for k, cell in enumerate(to_cheese):
        if k >= len(to_corner):
            return cell
        if cell != to_corner[k]:
            return to_cheese[k - 1]
    return (-1, -1)


def _ref_workbench(levels: MazeLevels, i: int) -> tuple[int, int]:
    """Ours, restated: paths from the mouse; none if either goal lies on the path to the other, else the last cell
    the two paths share."""
    to_cheese, to_corner = _paths(levels, i, levels.mouse[i])
    if to_cheese[-1] in to_corner or to_corner[-1] in to_cheese:
        return (-1, -1)
    k = 0
    while to_cheese[k + 1] == to_corner[k + 1]:
        k += 1
    return to_cheese[k]


def _is_perfect(free: np.ndarray) -> bool:
    """Free cells form a spanning tree: connected, and #edges = #cells - 1."""
    cells = np.argwhere(free)
    edges = int((free[:, :-1] & free[:, 1:]).sum() + (free[:-1, :] & free[1:, :]).sum())
    if edges != len(cells) - 1:
        return False
    start = tuple(int(v) for v in cells[0])
    return all(_bfs_path(free, start, tuple(int(v) for v in c))[0] == start for c in cells)


def _connected(free: np.ndarray, a, b) -> bool:
    path = _bfs_path(free, tuple(a), tuple(b))
    return path[0] == tuple(a) and path[-1] == tuple(b)


def _check_conventions(levels: MazeLevels) -> float:
    ours, theirs = decision_squares(levels), decision_squares_procgen_tools(levels)
    assert np.array_equal(decision_squares_by(levels), ours)
    assert np.array_equal(decision_squares_by(levels, "procgen-tools"), theirs)
    for i in range(len(levels)):
        assert tuple(ours[i]) == _ref_workbench(levels, i), i
        assert tuple(theirs[i]) == _ref_procgen_tools(levels, i), i
    differ = np.any(ours != theirs, axis=1)
    # they differ only where the corner lies strictly on the way to the cheese: ours none, theirs past the corner
    assert (ours[differ] == -1).all() and (theirs[differ] >= 0).all()
    return float(differ.mean())


# ------------------------------------------------------------------------------------------- decision squares
@pytest.mark.parametrize("split", ["train", "ood"])
def test_decision_square_conventions_on_native_mazes(split):
    levels = generate_levels(np.arange(160), split, MazeConfig())
    frac = _check_conventions(levels)
    print(f"native {split}: conventions differ on {frac:.1%} of {len(levels)} mazes")
    assert 0 < frac < 0.5


def test_decision_square_convention_names_and_no_cheese():
    levels = generate_levels(np.arange(4), "ood", MazeConfig())
    with pytest.raises(WorkbenchError, match="did you mean: procgen-tools") as err:
        decision_squares_by(levels, "procgen_tools")
    assert "\n" not in str(err.value)
    assert (decision_squares_procgen_tools(levels.without_cheese()) == -1).all()
    # procgen-tools starts at the start cell, wherever the mouse is
    moved = levels.with_mouse(levels.corner())
    assert np.array_equal(decision_squares_procgen_tools(moved), decision_squares_procgen_tools(levels))


def test_top_right_path_on_native_mazes_stays_perfect():
    levels = generate_levels(np.arange(40), "ood", MazeConfig(max_size=13))
    edited = levels_top_right_path(levels)
    w = levels.world_size
    for i in range(len(levels)):
        free = ~edited.walls[i]
        assert _is_perfect(free)
        assert _connected(free, levels.start()[i], (0, w - 1))
        opened = free & levels.walls[i]
        assert opened.sum() == levels.offset[i] + (w - 1 - (levels.offset[i] + levels.size[i] - 1))
    full = generate_levels(np.arange(40), "ood", MazeConfig())
    assert (full.size == w).any()
    with pytest.raises(WorkbenchError, match="fills its 15x15 world"):
        levels_top_right_path(full)


# ------------------------------------------------------------------------------------------------- procgen maze
@pytest.fixture(scope="module")
def procgen_states():
    procgen = pytest.importorskip("procgen")
    from workbench.rl.procgen_state import parse

    env = procgen.ProcgenGym3Env(num=96, env_name="maze", rand_seed=0, distribution_mode="hard")
    return [parse(b) for b in env.callmethod("get_state")]


def test_decision_square_conventions_on_procgen_mazes(procgen_states):
    from workbench.rl.procgen_state import MazeView, maze_with_cheese

    levels = levels_from_procgen(procgen_states)
    assert levels.world_size == 25 and np.array_equal(levels.mouse, levels.start())
    frac_ood = _check_conventions(levels)
    rng = np.random.default_rng(0)
    train = []
    for s in procgen_states:
        cells = MazeView(s).region_cells(5)
        train.append(maze_with_cheese(s, tuple(int(v) for v in cells[rng.integers(len(cells))])))
    frac_train = _check_conventions(levels_from_procgen(train))
    print(f"procgen hard: conventions differ on {frac_ood:.1%} (procgen's cheese), {frac_train:.1%} (train region)")
    assert 0 < frac_ood < 0.5 and 0 < frac_train < 0.5


def _procgen_tools_top_right_grid(grid: np.ndarray) -> np.ndarray:
    """procgen-tools' make_top_right_path restated on procgen's own grid (indexed [y, x], y up): the padding is the
    number of all-wall rings (their inner_grid), orig = world - 1 - padding; open column orig above row orig, then
    row world - 1 right of column orig."""
    world = grid.shape[0]
    blocked = grid == 51
    pad = 0
    while blocked[pad, :].all() and blocked[-pad - 1, :].all() and blocked[:, pad].all() and blocked[:, -pad - 1].all():
        pad += 1
    orig = world - 1 - pad
    out = grid.copy()
    out[orig + 1 : world, orig] = 100
    out[world - 1, orig + 1 : world] = 100
    return out


def test_top_right_path_on_procgen_states(procgen_states):
    from workbench.rl.procgen_state import MazeView, maze_open_top_right, maze_top_right_path, parse

    padded = [s for s in procgen_states if MazeView(s).offset > 0][:24]
    full = [s for s in procgen_states if MazeView(s).offset == 0]
    assert padded and full
    for s in padded:
        edited = maze_top_right_path(s)
        assert np.array_equal(edited.grid, _procgen_tools_top_right_grid(s.grid))
        view = MazeView(edited)
        free = ~view.walls()
        assert _is_perfect(free)
        assert _connected(free, view.mouse(), (0, view.world_size - 1))
        assert _connected(free, view.mouse(), view.corner())
        blob = edited.to_bytes()
        assert parse(blob).to_bytes() == blob
        assert MazeView(edited).cheese() == MazeView(s).cheese() and view.mouse() == MazeView(s).mouse()
        # the state-level edit and the MazeLevels-level edit agree
        assert np.array_equal(levels_top_right_path(levels_from_procgen([s])).walls[0], view.walls())
    assert not _is_perfect(~MazeView(maze_open_top_right(padded[0])).walls())  # today's edit opens loops
    with pytest.raises(WorkbenchError, match="fills its 25x25 world") as err:
        maze_top_right_path(full[0])
    assert "\n" not in str(err.value)


def test_top_right_path_state_loads_into_procgen(procgen_states):
    procgen = pytest.importorskip("procgen")
    from workbench.rl.procgen_state import MazeView, maze_top_right_path, maze_with_mouse, parse

    s = next(s for s in procgen_states if MazeView(s).offset > 0)
    blob = maze_top_right_path(s).to_bytes()
    env = procgen.ProcgenGym3Env(num=1, env_name="maze", rand_seed=1, distribution_mode="hard")
    env.callmethod("set_state", [blob])
    assert env.callmethod("get_state")[0] == blob
    # walk the mouse along the corridor: procgen lets it in (UP from the corner)
    corner = MazeView(s).corner()
    env.callmethod("set_state", [maze_with_mouse(parse(blob), corner).to_bytes()])
    env.act(np.array([5], dtype=np.int32))
    assert MazeView(parse(env.callmethod("get_state")[0])).mouse() == (corner[0] - 1, corner[1])


def test_levels_from_procgen_refuses_other_games():
    procgen = pytest.importorskip("procgen")
    env = procgen.ProcgenGym3Env(num=1, env_name="coinrun", rand_seed=0, distribution_mode="hard")
    with pytest.raises(WorkbenchError, match="needs maze states"):
        levels_from_procgen(env.callmethod("get_state"))


# ------------------------------------------------------------------------------------- set_state re-renders
def test_set_state_renders_without_a_step():
    """procgen 0.10.7's set_state redraws the observation: observe() right after it shows the frame procgen drew for
    that state, and (maze) the frame a clock-rewound NOOP step draws, so render_states needs no step."""
    procgen = pytest.importorskip("procgen")
    from workbench.rl.envs.procgen import NOOP, ProcgenConfig, _SideEnvs
    from workbench.rl.procgen_run import render_states
    from workbench.rl.procgen_state import MazeView, maze_with_mouse, parse

    for game in ("maze", "coinrun"):
        env = procgen.ProcgenGym3Env(num=2, env_name=game, rand_seed=3, distribution_mode="hard")
        fresh = procgen.ProcgenGym3Env(num=2, env_name=game, rand_seed=77, distribution_mode="hard")
        rng = np.random.default_rng(0)
        for _ in range(6):
            env.act(rng.integers(0, 15, 2).astype(np.int32))
            _, ob, _ = env.observe()
            fresh.callmethod("set_state", env.callmethod("get_state"))
            _, ob2, _ = fresh.observe()
            assert np.array_equal(ob["rgb"], ob2["rgb"]), game
    maze = procgen.ProcgenGym3Env(num=1, env_name="maze", rand_seed=4, distribution_mode="hard")
    st = parse(maze.callmethod("get_state")[0])
    cells = [c for c in np.argwhere(~MazeView(st).walls()) if tuple(c) != MazeView(st).cheese()]
    edited = [maze_with_mouse(st, tuple(int(v) for v in cells[k])) for k in (0, len(cells) // 2, len(cells) - 1)]
    rewound = []
    for e in edited:
        e = e.copy()
        e.head["cur_time"] -= 1
        rewound.append(e.to_bytes())
    stepped, _, _ = _SideEnvs(ProcgenConfig()).step(rewound, NOOP)
    assert np.array_equal(render_states(edited), stepped.transpose(0, 3, 1, 2))
    assert render_states([]).shape == (0, 3, 64, 64)


# ------------------------------------------------------------------------------------------ legacy checkpoints
def test_legacy_format_checkpoint_loads_like_the_zip(tmp_path):
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import checkpoint_format, load_published, published_config, save_published

    torch.manual_seed(0)
    pol = ImpalaPolicy(published_config())
    zip_path = save_published(pol, tmp_path / "model.pth")
    blob = {"model_state_dict": {k: v.detach().clone() for k, v in pol.state_dict().items()}}
    legacy = tmp_path / "legacy.pth"
    torch.save(blob, legacy, _use_new_zipfile_serialization=False)
    legacy3 = tmp_path / "legacy3.pth"
    torch.save(blob, legacy3, _use_new_zipfile_serialization=False, pickle_protocol=3)
    assert checkpoint_format(zip_path) == "zip" and checkpoint_format(legacy) == "legacy"
    assert checkpoint_format(legacy3) == "legacy"
    a = load_published(zip_path)
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    for path in (legacy, legacy3):
        b = load_published(path)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
        assert torch.equal(a(x)[0], b(x)[0])
    # protocol 4+ legacy files are recognised but torch's weights-only unpickler cannot read them: one clear line
    legacy4 = tmp_path / "legacy4.pth"
    torch.save(blob, legacy4, _use_new_zipfile_serialization=False, pickle_protocol=4)
    assert checkpoint_format(legacy4) == "legacy"
    with pytest.raises(WorkbenchError, match="pickled with protocol 4; weights-only loading reads protocols 2-3"):
        load_published(legacy4)


def test_legacy_and_plain_pickles_with_objects_are_refused(tmp_path):
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import checkpoint_format, load_published, published_config

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    sd = ImpalaPolicy(published_config()).state_dict()
    torch.save({"model_state_dict": sd, "x": Evil()}, tmp_path / "evil.pth", _use_new_zipfile_serialization=False)
    assert checkpoint_format(tmp_path / "evil.pth") == "legacy"
    with pytest.raises(WorkbenchError, match="weights-only") as err:
        load_published(tmp_path / "evil.pth")
    assert "\n" not in str(err.value) and not marker.exists()
    for name, data in [
        ("plain.pth", pickle.dumps({"model_state_dict": Evil()}, protocol=2)),  # a pickle without torch's magic
        ("plain4.pth", pickle.dumps({"model_state_dict": {}}, protocol=4)),
        ("empty.pth", b""),
        ("text.pth", b"\x80"),
    ]:
        (tmp_path / name).write_bytes(data)
        assert checkpoint_format(tmp_path / name) is None
        with pytest.raises(WorkbenchError, match="not a torch checkpoint"):
            load_published(tmp_path / name)
    assert not marker.exists()
    # the magic number followed by garbage reaches torch, which fails cleanly in one line
    buf = io.BytesIO()
    torch.save({"a": torch.ones(1)}, buf, _use_new_zipfile_serialization=False)
    (tmp_path / "cut.pth").write_bytes(buf.getvalue()[:40])
    with pytest.raises(WorkbenchError, match="weights-only"):
        load_published(tmp_path / "cut.pth")
