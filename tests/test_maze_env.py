"""Invariants of the native maze: solvable, cheese on free cells in the right region, seeds reproduce, API shape."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.rl.envs.maze import (
    NO_CHEESE,
    MazeConfig,
    MazeVecEnv,
    decision_squares,
    distances_to,
    generate_levels,
    observe,
    render,
)

SEEDS = np.arange(400)


@pytest.mark.parametrize("world", [15, 25])
def test_every_maze_is_perfect_and_solvable(world: int) -> None:
    cfg = MazeConfig(world_size=world, max_size=world)
    lv = generate_levels(SEEDS, "ood", cfg)
    dist = distances_to(lv, lv.cheese)
    rows = np.arange(len(lv))
    assert (dist[rows, lv.mouse[:, 0], lv.mouse[:, 1]] > 0).all(), "cheese unreachable from the start"
    free = ~lv.walls
    assert ((dist >= 0) == free).all(), "a free cell cannot reach the cheese (maze not connected)"
    # Perfect maze: a spanning tree over rooms has #passages = #rooms - 1, i.e. free cells = 2 * rooms - 1.
    rooms = ((lv.size + 1) // 2) ** 2
    assert (free.sum(axis=(1, 2)) == 2 * rooms - 1).all()


def test_sizes_are_odd_in_range_and_centred() -> None:
    lv = generate_levels(SEEDS, "train")
    assert set(np.unique(lv.size)) == set(range(3, 16, 2))
    assert (lv.offset == (15 - lv.size) // 2).all()
    assert (lv.mouse == lv.start()).all()


def test_cheese_never_on_a_wall_and_train_cheese_in_region() -> None:
    for split in ("train", "ood"):
        lv = generate_levels(SEEDS, split)
        rows = np.arange(len(lv))
        assert not lv.walls[rows, lv.cheese[:, 0], lv.cheese[:, 1]].any()
        assert not (lv.cheese == lv.mouse).all(axis=1).any()
    train = generate_levels(SEEDS, "train")
    assert train.in_region(train.cheese).all()
    ood = generate_levels(SEEDS, "ood")
    assert 0.05 < (~ood.in_region(ood.cheese)).mean() < 0.95, "ood cheese should often be outside the region"


def test_same_seed_same_mazes_and_train_ood_share_the_maze() -> None:
    a, b = generate_levels(SEEDS, "train"), generate_levels(SEEDS, "train")
    assert (a.walls == b.walls).all() and (a.cheese == b.cheese).all()
    ood = generate_levels(SEEDS, "ood")
    assert (a.walls == ood.walls).all(), "train and ood differ only in the cheese"
    other = generate_levels(SEEDS + 10_000, "train")
    assert (a.walls != other.walls).any()


def test_env_reset_seed_reproduces_levels_and_steps() -> None:
    def play(seed: int) -> tuple[np.ndarray, list]:
        env = MazeVecEnv(8, "ood")
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        rewards = []
        for _ in range(60):
            obs, r, term, trunc, info = env.step(rng.integers(0, 4, 8))
            rewards.append(r.copy())
        return obs, rewards

    o1, r1 = play(3)
    o2, r2 = play(3)
    assert (o1 == o2).all() and all((x == y).all() for x, y in zip(r1, r2, strict=True))


def test_observation_channels_and_gymnasium_spaces() -> None:
    env = MazeVecEnv(5, "train")
    obs, info = env.reset(seed=0)
    assert obs.shape == (5, 3, 15, 15) and obs.dtype == np.uint8
    assert env.observation_space.contains(obs)
    assert (obs[:, 1].sum(axis=(1, 2)) == 1).all() and (obs[:, 2].sum(axis=(1, 2)) == 1).all()
    assert (obs[:, 0].astype(bool) == env.levels.walls).all()
    assert "level_seed" in info
    frame = env.render()
    assert frame.shape == (5, 120, 120, 3) and frame.dtype == np.uint8


def test_walls_block_moves_and_cheese_terminates_with_info() -> None:
    lv = generate_levels(np.array([7]), "ood")
    env = MazeVecEnv(1, "ood")
    env.reset(options={"levels": lv})
    start = env.levels.mouse.copy()
    # Moving down from the bottom-left room hits the padding wall: the mouse stays put.
    env.step(np.array([1]))
    assert (env.levels.mouse == start).all()
    # Walk the shortest path to the cheese: the episode ends with reward 1 and a full record in info.
    from workbench.rl.envs.maze import greedy_actions

    dist = distances_to(lv, lv.cheese)
    for _t in range(1, 200):
        a = greedy_actions(dist, env.levels.mouse)
        _, r, term, trunc, info = env.step(a)
        if term[0]:
            break
    assert r[0] == 1.0 and term[0] and not trunc[0]
    assert info["_cheese_reached"][0] and info["cheese_reached"][0]
    assert info["cheese_step"][0] == dist[0, start[0, 0], start[0, 1]] + 1  # +1: the bumped first move
    assert info["length"][0] == info["cheese_step"][0]


def test_truncation_at_step_limit() -> None:
    env = MazeVecEnv(4, "ood", MazeConfig(max_steps=5))
    env.reset(seed=1)
    for _ in range(4):
        _, _, term, trunc, _ = env.step(np.full(4, 1))  # always down: stuck at the bottom wall
    _, _, term, trunc, info = env.step(np.full(4, 1))
    assert trunc.all() and not term.any()
    assert (info["length"] == 5).all() and not info["cheese_reached"].any()


def test_region_and_corner_bookkeeping() -> None:
    lv = generate_levels(np.array([11]), "ood")
    dist = distances_to(lv, lv.corner())
    env = MazeVecEnv(1, "ood", MazeConfig(max_steps=400))
    env.reset(options={"levels": lv.without_cheese()})
    from workbench.rl.envs.maze import greedy_actions

    for _ in range(300):
        a = greedy_actions(dist, env.levels.mouse)
        if a[0] < 0:
            break
        env.step(a)
    assert env.corner_step[0] == dist[0, lv.mouse[0, 0], lv.mouse[0, 1]]
    assert 0 <= env.region_step[0] <= env.corner_step[0]


def test_edits_refuse_walls_and_name_the_cell() -> None:
    lv = generate_levels(np.array([5]), "ood")
    wall = np.argwhere(lv.walls[0])[0]
    with pytest.raises(WorkbenchError, match=rf"cheese cell \({wall[0]}, {wall[1]}\).*wall"):
        lv.with_cheese(wall[None, :])
    with pytest.raises(WorkbenchError, match="outside"):
        lv.with_mouse(np.array([[20, 3]]))
    removed = lv.without_cheese()
    assert (removed.cheese == NO_CHEESE).all() and observe(removed)[:, 2].sum() == 0


def test_decision_square_is_where_paths_part() -> None:
    lv = generate_levels(np.arange(200), "ood")
    ds = decision_squares(lv)
    has = ds[:, 0] >= 0
    assert has.any() and (~has).any()
    d_cheese, d_corner = distances_to(lv, lv.cheese), distances_to(lv, lv.corner())
    for i in np.flatnonzero(has)[:50]:
        r, c = ds[i]
        start = tuple(lv.mouse[i])
        # The decision square lies on both shortest paths from the start ...
        assert d_cheese[i][start] == d_cheese[i][r, c] + abs_path(lv, i, start, (r, c))
        assert d_corner[i][start] == d_corner[i][r, c] + abs_path(lv, i, start, (r, c))


def abs_path(lv, i: int, a: tuple, b: tuple) -> int:
    return int(distances_to(lv.select(np.array([i])), np.array([b]))[0][a])


def test_render_marks_cheese_and_mouse() -> None:
    lv = generate_levels(np.array([1, 2]), "train")
    img = render(lv, cell_px=10)
    r, c = lv.cheese[0]
    assert tuple(img[0, r * 10 + 5, c * 10 + 5]) == (247, 196, 21)


def test_bad_split_and_config_errors() -> None:
    with pytest.raises(WorkbenchError, match="did you mean: ood"):
        generate_levels(np.arange(2), "odd")
    with pytest.raises(WorkbenchError, match="odd"):
        MazeConfig(max_size=14)
    with pytest.raises(WorkbenchError, match="0..3"):
        env = MazeVecEnv(2)
        env.reset(seed=0)
        env.step(np.array([0, 4]))
