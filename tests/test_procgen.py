"""Real procgen (optional extra `procgen`, numpy<2): state round trips and edits, the wrapped env's bookkeeping,
the published checkpoint format, the CLI on a random published-format checkpoint, vector fields and a PPO smoke run."""

from __future__ import annotations

import json
import pickle

import numpy as np
import procgen
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.rl.envs.procgen import ProcgenConfig, ProcgenVecEnv, _StateIO
from workbench.rl.procgen_state import (
    COIN_GOAL,
    MAZE_CHEESE,
    CoinRunView,
    MazeView,
    agent_xy,
    coinrun_with_coin,
    maze_open_top_right,
    maze_with_cheese,
    maze_with_mouse,
    parse,
)

torch.set_num_threads(1)


def _states(game: str, n: int = 4, steps: int = 25, seed: int = 0) -> list[bytes]:
    env = procgen.ProcgenGym3Env(num=n, env_name=game, rand_seed=seed, distribution_mode="hard")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        out += env.callmethod("get_state")
        env.act(rng.integers(0, 15, n).astype(np.int32))
    return out


@pytest.mark.parametrize("game", ["maze", "coinrun"])
def test_state_round_trip_is_byte_exact(game):
    states = _states(game)
    for b in states:
        s = parse(b)
        assert s.to_bytes() == b
        assert s.game == game
        assert agent_xy(b) == (float(s.entities["x"][s.agent_index()]), float(s.entities["y"][s.agent_index()]))
    # an edit changes the bytes, and the edited state round-trips too
    s = parse(states[0])
    edited = maze_with_cheese(s, None) if game == "maze" else coinrun_with_coin(s, None)
    assert edited.to_bytes() != states[0]
    assert parse(edited.to_bytes()).to_bytes() == edited.to_bytes()


def test_parse_refuses_garbage():
    with pytest.raises(WorkbenchError, match="procgen state"):
        parse(b"\x00" * 40)
    with pytest.raises(WorkbenchError, match="not a procgen state"):
        parse(b"abc")


def test_maze_edits_move_and_remove_the_cheese_and_refuse_walls():
    s = parse(_states("maze", n=1, steps=1)[0])
    view = MazeView(s)
    free = np.argwhere(~view.walls())
    target = tuple(int(v) for v in free[len(free) // 2])
    moved = maze_with_cheese(s, target)
    assert MazeView(moved).cheese() == target
    assert (moved.grid == MAZE_CHEESE).sum() == 1
    assert MazeView(maze_with_cheese(s, None)).cheese() is None
    wall = tuple(int(v) for v in np.argwhere(view.walls())[0])
    with pytest.raises(WorkbenchError, match=rf"cheese cell \({wall[0]}, {wall[1]}\) is a wall"):
        maze_with_cheese(s, wall)
    with pytest.raises(WorkbenchError, match="mouse cell"):
        maze_with_mouse(s, wall)
    assert MazeView(maze_with_mouse(s, target)).mouse() == target
    opened = MazeView(maze_open_top_right(s))
    top, right = opened.corner()
    assert not opened.walls()[top, opened.offset : right + 1].any()
    assert not opened.walls()[top : top + opened.size, right].any()


def test_edited_states_load_into_procgen_and_play_from_there():
    """set_state accepts our bytes: the mouse we placed is where procgen says it is after a NOOP step."""
    env = procgen.ProcgenGym3Env(num=1, env_name="maze", rand_seed=5, distribution_mode="hard")
    s = parse(env.callmethod("get_state")[0])
    view = MazeView(s)
    cheese = view.cheese()
    free = [tuple(int(v) for v in c) for c in np.argwhere(~view.walls()) if tuple(c) != cheese]
    target = free[len(free) // 3]
    env.callmethod("set_state", [maze_with_mouse(s, target).to_bytes()])
    env.act(np.array([4], dtype=np.int32))
    assert MazeView(parse(env.callmethod("get_state")[0])).mouse() == target


def test_side_render_of_an_unedited_start_matches_procgen_first_frame():
    from workbench.rl.procgen_run import render_states

    env = procgen.ProcgenGym3Env(num=2, env_name="maze", rand_seed=9, distribution_mode="hard")
    _, ob, _ = env.observe()
    frames = render_states([parse(b) for b in env.callmethod("get_state")])
    assert np.array_equal(frames, ob["rgb"].transpose(0, 3, 1, 2))


def test_maze_train_split_puts_cheese_in_region_and_tracks_the_mouse_exactly():
    env = ProcgenVecEnv(6, "train", ProcgenConfig(game="maze", region=5))
    obs, info = env.reset(seed=1)
    assert obs.shape == (6, 3, 64, 64) and obs.dtype == np.uint8
    assert env.cheese_in_region.all()
    io = _StateIO(env._env)
    for i, b in enumerate(io.get(range(6))):  # the edit reached procgen itself, not only our bookkeeping
        assert tuple(env.cheese[i]) == MazeView(parse(b)).cheese()
    rng = np.random.default_rng(0)
    for _ in range(60):
        obs, reward, term, trunc, info = env.step(rng.integers(0, 15, 6))
        for i, b in enumerate(io.get(range(6))):
            assert tuple(env.mouse[i]) == MazeView(parse(b)).mouse()
        if "length" in info:
            done = info["_length"]
            assert np.array_equal(info["cheese_reached"][done], term[done])
    ood = ProcgenVecEnv(16, "ood", ProcgenConfig(game="maze"))
    ood.reset(seed=1)
    assert not ood.cheese_in_region.all()  # procgen's own cheese: anywhere


def test_coinrun_ood_moves_the_coin_away_from_the_exit():
    env = ProcgenVecEnv(8, "ood", ProcgenConfig(game="coinrun"))
    env.reset(seed=2)
    io = _StateIO(env._env)
    coins = [CoinRunView(parse(b)).coin() for b in io.get(range(8))]
    assert all(c is not None for c in coins)
    assert sum(c[1] < env.exit_col[i] for i, c in enumerate(coins)) >= 6
    assert not env.coin_at_exit[[c[1] < env.exit_col[i] for i, c in enumerate(coins)]].any()
    train = ProcgenVecEnv(4, "train", ProcgenConfig(game="coinrun"))
    train.reset(seed=2)
    assert train.coin_at_exit.all()
    s = parse(io.get([0])[0])
    with pytest.raises(WorkbenchError, match="coin cell"):
        coinrun_with_coin(s, (s.height - 1, 5))  # the floor
    assert (coinrun_with_coin(s, None).grid == COIN_GOAL).sum() == 0


def test_coinrun_exit_ends_the_episode_when_the_coin_is_elsewhere():
    """Put the agent one step before the exit column with the coin moved: walking right ends the episode with
    exit_reached and no coin."""
    env = ProcgenVecEnv(1, "ood", ProcgenConfig(game="coinrun"))
    env.reset(seed=4)
    io = _StateIO(env._env)
    s = parse(io.get([0])[0])
    k = s.agent_index()
    ex = int(env.exit_col[0])
    s.entities["x"][k] = ex - 1.5
    s.entities["y"][k] = 30.0  # high up: falls onto the level end
    io.set([0], [s.to_bytes()])
    for _ in range(40):
        _, _, term, _, info = env.step(np.array([7]))  # RIGHT
        if "length" in info:
            break
    assert term[0] and info["exit_reached"][0] and not info["coin_collected"][0]


# ----------------------------------------------------------------------------------------- published checkpoints
def test_published_round_trip_and_hook_names(tmp_path):
    from workbench.hooks import hook_names
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import load_published, published_config, save_published

    torch.manual_seed(0)
    pol = ImpalaPolicy(published_config(scale=2))
    path = save_published(pol, tmp_path / "model.pth")
    blob = torch.load(path, weights_only=True)
    assert set(blob) == {"model_state_dict"}
    keys = set(blob["model_state_dict"])
    assert {"embedder.block1.conv.weight", "embedder.block2.res1.conv2.bias", "embedder.fc.weight"} <= keys
    assert {"fc_policy.weight", "fc_value.bias"} <= keys
    loaded = load_published(path)
    assert loaded.cfg.channels == (32, 64, 64) and loaded.cfg.n_actions == 15
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    assert torch.allclose(loaded(x)[0], pol(x)[0])
    assert "embedder.block2.res1.resadd_out" in hook_names(loaded)


def test_published_bad_inputs(tmp_path):
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import load_published, published_config

    sd = ImpalaPolicy(published_config()).state_dict()
    bad = dict(sd)
    del bad["fc_value.weight"]
    bad["extra.head"] = torch.zeros(1)
    torch.save({"model_state_dict": bad}, tmp_path / "bad.pth")
    with pytest.raises(WorkbenchError, match=r"missing keys \['fc_value.weight'\]; unexpected keys \['extra.head'\]"):
        load_published(tmp_path / "bad.pth")

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps({"model_state_dict": Evil()}))
    with pytest.raises(WorkbenchError, match="not a torch checkpoint"):
        load_published(tmp_path / "evil.pth")
    torch.save({"model_state_dict": sd, "x": Evil()}, tmp_path / "evil_zip.pth")  # a real torch zip with a pickle
    marker.unlink(missing_ok=True)
    with pytest.raises(WorkbenchError, match="weights-only"):
        load_published(tmp_path / "evil_zip.pth")
    assert not marker.exists()
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(WorkbenchError, match="not a torch checkpoint"):
        load_published(tmp_path / "notes.txt")


@pytest.mark.parametrize("env", ["procgen-maze", "procgen-coinrun"])
def test_cli_evaluates_a_random_published_checkpoint(cli, tmp_path, env):
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import published_config, save_published

    torch.manual_seed(0)
    path = save_published(ImpalaPolicy(published_config()), tmp_path / "random.pth")
    code, out, err = cli("eval", str(path), "--env", env, "--split", "ood", "--episodes", "2", "--seed", "0", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["env"] == env and res["episodes"] == 2
    keys = {"cheese", "corner_first", "timeout"} if env == "procgen-maze" else {"coin", "exit", "timeout"}
    assert keys <= set(res["rates"])
    if env == "procgen-coinrun":  # every episode ends in exactly one way (the coin ends a procgen episode)
        r = res["rates"]
        assert r["coin"] + r["exit_without_coin"] + r["timeout"] + res["died"]["rate"] == pytest.approx(1.0)
    code, _, err = cli("eval", str(path), "--env", "procgen-mase", "--episodes", "2")
    assert code == 2 and "procgen-maze" in err


def test_procgen_vector_field_is_one_distribution_per_free_cell():
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.procgen_run import procgen_vector_field
    from workbench.rl.published import published_config

    env = procgen.ProcgenGym3Env(num=1, env_name="maze", rand_seed=3, distribution_mode="easy")
    s = parse(env.callmethod("get_state")[0])
    torch.manual_seed(0)
    field = procgen_vector_field(ImpalaPolicy(published_config()).eval(), s)
    view = MazeView(s)
    assert len(field.cells) == (~view.walls()).sum() - 1  # every free cell but the cheese
    assert np.allclose(field.probs.sum(1) + field.noop, 1.0)
    assert np.ptp(field.probs, axis=0).max() > 0  # different mouse positions, different inputs


def test_ppo_trains_the_impala_policy_on_procgen_cpu_smoke():
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.ppo import PPOConfig
    from workbench.rl.procgen_run import train_procgen_ppo
    from workbench.rl.published import published_config

    torch.manual_seed(0)
    pol = ImpalaPolicy(published_config())
    before = pol.fc_policy.weight.detach().clone()
    cfg = PPOConfig(total_steps=32, num_envs=2, num_steps=16, num_minibatches=2, update_epochs=1, eval_every=0)
    hist = train_procgen_ppo(pol, "maze", "train", cfg, device="cpu", progress=False)
    assert len(hist) == 1 and np.isfinite(hist[0]["v_loss"])
    assert not torch.equal(before, pol.fc_policy.weight)
