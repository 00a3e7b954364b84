"""Invariants of the native CoinRun: solvable levels, coin placement per split, physics, seeds, Gymnasium API."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.rl.coinrun.planner import (
    UNREACHABLE,
    Expert,
    coin_candidates,
    distances,
    on_cells,
    state_index,
    transitions,
)
from workbench.rl.envs.coinrun import (
    ACTION_NAMES,
    NO_COIN,
    CoinRunConfig,
    CoinRunVecEnv,
    generate_levels,
    observe,
    render,
)

CFG = CoinRunConfig()
SEEDS = np.arange(200)
A = {name: i for i, name in enumerate(ACTION_NAMES)}


def _start_dist(levels, goal, dead_extra=None):
    nxt, dead = transitions(levels, CFG.jump_height)
    if dead_extra is not None:
        dead = dead | dead_extra
    d = distances(nxt, dead, goal, levels.width, CFG.jump_height)
    s = state_index(levels, levels.start, np.zeros(len(levels), dtype=np.int64), CFG.jump_height)
    return d[np.arange(len(levels)), s]


def test_every_exit_is_reachable_and_levels_need_navigation() -> None:
    lv = generate_levels(SEEDS, "train", CFG)
    d = _start_dist(lv, lv.exit)
    assert (d < UNREACHABLE).all(), "an exit is unreachable from the start"
    assert (d >= lv.exit[:, 1] - lv.start[:, 1]).all()
    assert lv.hazard.any(axis=(1, 2)).mean() > 0.9, "most levels should have hazards"
    assert ((lv.length >= CFG.min_length) & (lv.length <= CFG.max_length)).all()
    assert len(np.unique(lv.length)) > 5
    # Gaps: lava on the bottom row somewhere in most levels; crates/steps: uneven ground tops.
    assert lv.hazard[:, -1, :].any(axis=1).mean() > 0.5


def test_train_coin_on_exit_ood_coin_reachable_and_terrain_shared() -> None:
    train = generate_levels(SEEDS, "train", CFG)
    ood = generate_levels(SEEDS, "ood", CFG)
    assert train.coin_at_exit().all()
    assert (train.solid == ood.solid).all() and (train.hazard == ood.hazard).all(), "splits differ only in the coin"
    assert ood.coin_at_exit().mean() < 0.1
    rows = np.arange(len(ood))
    assert not ood.solid[rows, ood.coin[:, 0], ood.coin[:, 1]].any()
    assert not ood.hazard[rows, ood.coin[:, 0], ood.coin[:, 1]].any()
    assert not np.all(ood.coin == ood.start, axis=1).any()
    # Collectable without passing the exit, and the exit still reachable afterwards (planner check).
    d_coin = _start_dist(ood, ood.coin, on_cells(ood, ood.exit, CFG.jump_height))
    assert (d_coin < UNREACHABLE).all()
    # Spread along the level, not piled at one end.
    frac = (ood.coin[:, 1] - ood.start[:, 1]) / (ood.exit[:, 1] - ood.start[:, 1])
    assert 0.3 < np.median(frac) < 0.7 and frac.min() < 0.2 and frac.max() > 0.8


def test_random_coin_percent_moves_that_share_of_train_coins() -> None:
    seeds = np.arange(400)
    half = generate_levels(seeds, "train", CoinRunConfig(random_coin_percent=50.0))
    assert 0.4 < (~half.coin_at_exit()).mean() < 0.6
    two = generate_levels(seeds, "train", CoinRunConfig(random_coin_percent=2.0))
    moved = ~two.coin_at_exit()
    assert 0 < moved.sum() < 25
    ood = generate_levels(seeds, "ood", CFG)
    assert (two.coin[moved] == ood.coin[moved]).all(), "a randomised train coin is placed exactly like ood"
    cand = coin_candidates(two.select(np.flatnonzero(moved)), CFG)
    assert cand[np.arange(moved.sum()), two.coin[moved, 0], two.coin[moved, 1]].all()


def test_same_seed_same_levels() -> None:
    a, b = generate_levels(SEEDS, "ood", CFG), generate_levels(SEEDS, "ood", CFG)
    assert (a.solid == b.solid).all() and (a.coin == b.coin).all()
    other = generate_levels(SEEDS + 10_000, "train", CFG)
    assert (other.solid != a.solid).any()


def _one_level_env(seed: int = 3) -> CoinRunVecEnv:
    env = CoinRunVecEnv(1, "train", CFG)
    env.reset(options={"levels": generate_levels(np.array([seed]), "train", CFG)})
    return env


def test_gravity_and_jump_follow_the_documented_physics() -> None:
    env = _one_level_env()
    lv = env.levels
    r0, c0 = lv.agent[0]
    assert lv.solid[0, r0 + 1, c0], "the agent starts standing on the ground"
    env.step(np.array([A["noop"]]))
    assert tuple(env.levels.agent[0]) == (r0, c0), "noop on the ground stays put"
    rows = []
    for _ in range(CFG.jump_height):
        env.step(np.array([A["jump"]]))  # only the first jump starts a jump (the agent is airborne after it)
        rows.append(env.levels.agent[0, 0])
    assert rows == [r0 - 1, r0 - 2, r0 - 3]
    falls = []
    for _ in range(CFG.jump_height):
        env.step(np.array([A["noop"]]))
        falls.append(env.levels.agent[0, 0])
    assert falls == [r0 - 2, r0 - 1, r0], "falls one cell per step back to the ground"
    env.step(np.array([A["left"]]))
    assert tuple(env.levels.agent[0]) == (r0, c0), "the start wall blocks moving left"


def test_hazard_ends_the_episode_and_coin_rewards_without_ending_ood() -> None:
    lv = generate_levels(np.arange(50), "train", CFG)
    i = int(np.flatnonzero(lv.hazard[:, -1, :].any(axis=1))[0])
    level = lv.select(np.array([i]))
    lava_col = int(np.flatnonzero(level.hazard[0, -1])[0])
    above = level.height - 2
    env = CoinRunVecEnv(1, "train", CFG)
    env.reset(options={"levels": level.with_agent(np.array([[above, lava_col]]))})
    _, reward, term, trunc, info = env.step(np.array([A["noop"]]))
    assert term[0] and not trunc[0] and reward[0] == 0
    assert info["_died"][0] and info["died"][0] and not info["exit_reached"][0]

    # Put the coin right of the start on the ground: collecting it pays 1 and the episode goes on.
    level = lv.select(np.array([0]))
    start = level.start[0]
    coin = level.with_coin(np.array([[start[0], start[1] + 1]]))
    env.reset(options={"levels": coin})
    _, reward, term, trunc, info = env.step(np.array([A["right"]]))
    assert reward[0] == 1.0 and not term[0] and "length" not in info
    assert not env.levels.has_coin()[0], "a collected coin disappears"


def test_expert_reaches_exit_on_train_and_fetches_coin_on_ood() -> None:
    for split in ("train", "ood"):
        levels = generate_levels(np.arange(48), split, CFG)
        env = CoinRunVecEnv(len(levels), split, CFG)
        env.reset(options={"levels": levels})
        expert = Expert(env)
        done = np.zeros(len(levels), dtype=bool)
        coin = np.zeros(len(levels), dtype=bool)
        exit_ = np.zeros(len(levels), dtype=bool)
        for _ in range(CFG.max_steps):
            _, _, _, _, info = env.step(expert.actions())
            if "length" in info:
                new = info["_length"] & ~done
                coin[new], exit_[new] = info["coin_collected"][new], info["exit_reached"][new]
                done |= info["_length"]
                expert.refresh(np.flatnonzero(info["_length"]))
            if done.all():
                break
        assert done.all() and exit_.all() and coin.all(), split


def test_env_api_seeding_autoreset_and_masked_info() -> None:
    def play(seed: int):
        env = CoinRunVecEnv(6, "ood", CFG)
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(0)
        out, infos = [], []
        for _ in range(40):
            obs, r, term, trunc, info = env.step(rng.integers(0, 6, 6))
            out.append((obs.copy(), r.copy(), term.copy()))
            infos.append(info)
        return out, infos

    a, infos = play(1)
    b, _ = play(1)
    assert all((x[0] == y[0]).all() and (x[1] == y[1]).all() for x, y in zip(a, b, strict=True))
    finished = [i for i in infos if "length" in i]
    assert finished, "random play should end some episodes (hazards) within 40 steps"
    info = finished[0]
    for key in ("coin_collected", "coin_step", "exit_reached", "exit_step", "died", "length", "level_seed"):
        assert info["_" + key].dtype == bool and info[key].shape == (6,)
    assert a[0][0].shape == (6, 5, 13, 13) and a[0][0].dtype == np.uint8
    env = CoinRunVecEnv(2, "train", CFG)
    env.reset(seed=0)
    with pytest.raises(WorkbenchError, match="actions must be in 0..5"):
        env.step(np.array([0, 6]))


def test_observation_is_agent_centred() -> None:
    lv = generate_levels(np.arange(20), "ood", CFG)
    obs = observe(lv, CFG.view)
    v = CFG.view
    rel = lv.coin - lv.agent + v
    vis = np.all((rel >= 0) & (rel <= 2 * v), axis=1)
    rows = np.flatnonzero(vis)
    assert (obs[rows, 2, rel[vis, 0], rel[vis, 1]] == 1).all()
    assert (obs[:, 2].sum(axis=(1, 2)) == vis).all()
    assert (obs[:, 0, v + 1, v] == 1).all(), "the agent stands on solid ground at the start"
    assert (obs[:, 0, :, v - 1] == 1).all(), "the start wall (column 0) is the column left of the agent"
    assert (obs[:, 4] == 0).all()
    gone = observe(lv.without_coin(), CFG.view)
    assert gone[:, 2].sum() == 0 and (gone[:, [0, 1, 3, 4]] == obs[:, [0, 1, 3, 4]]).all()
    assert (lv.without_coin().coin == NO_COIN).all()
    img = render(lv.select(slice(0, 2)), cell_px=4)
    assert img.shape == (2, CFG.height * 4, CFG.max_length * 4, 3) and img.dtype == np.uint8


def test_bad_config_and_cells_are_one_line_errors() -> None:
    with pytest.raises(WorkbenchError, match="random_coin_percent"):
        CoinRunConfig(random_coin_percent=150.0)
    with pytest.raises(WorkbenchError, match="did you mean: ood"):
        generate_levels(np.arange(2), "oods", CFG)
    lv = generate_levels(np.arange(2), "train", CFG)
    with pytest.raises(WorkbenchError, match="is solid"):
        lv.with_coin(np.array([[0, 0], [0, 0]]))
