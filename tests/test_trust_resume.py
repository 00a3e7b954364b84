"""Resume: bit-identical to uninterrupted training, finished phases kept, a different recipe refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.errors import WorkbenchError
from workbench.rl import train as train_mod
from workbench.rl.envs.coinrun import CoinRunConfig, CoinRunVecEnv
from workbench.rl.envs.maze import MazeConfig, MazeVecEnv
from workbench.rl.policies import ImpalaPolicy, PolicyConfig
from workbench.rl.ppo import PPOConfig, train_ppo

TINY = PolicyConfig(channels=(4, 8, 8), pool=(False, True, True), hidden=16)


class Interrupt(Exception):
    pass


def _run(ckpt: Path, cfg: PPOConfig, make_env, policy_cfg: PolicyConfig, stop_at: int | None = None, resume=False):
    torch.manual_seed(0)
    policy = ImpalaPolicy(policy_cfg)
    calls = {"n": 0}

    def evaluate(p):  # called after every update (eval_every=1); touches no RNG
        calls["n"] += 1
        if stop_at is not None and calls["n"] == stop_at:
            raise Interrupt
        return {}

    history = train_ppo(make_env, policy, cfg, checkpoint_dir=ckpt, evaluate=evaluate, resume=resume, progress=False)
    return policy, history


@pytest.mark.parametrize("kind", ["maze", "coinrun"])
def test_resumed_ppo_is_bit_identical_to_uninterrupted(tmp_path, kind):
    cfg = PPOConfig(
        total_steps=5 * 64, num_envs=4, num_steps=16, num_minibatches=2, update_epochs=2, eval_every=1,
        checkpoint_every=1, seed=3, threads=1,
    )  # fmt: skip
    if kind == "maze":
        policy_cfg, make_env = TINY, lambda n: MazeVecEnv(n, "train", MazeConfig(max_steps=12))
    else:
        env_cfg = CoinRunConfig(max_steps=15)
        policy_cfg = PolicyConfig(in_channels=5, obs_size=env_cfg.window, channels=(4, 8), pool=(True, True),
                                  hidden=16, n_actions=6)  # fmt: skip
        make_env = lambda n: CoinRunVecEnv(n, "train", env_cfg)  # noqa: E731
    whole, whole_hist = _run(tmp_path / "a", cfg, make_env, policy_cfg)
    with pytest.raises(Interrupt):
        _run(tmp_path / "b", cfg, make_env, policy_cfg, stop_at=3)  # dies during update 3: checkpoint of update 2
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["update"] == 2
    resumed, resumed_hist = _run(tmp_path / "b", cfg, make_env, policy_cfg, resume=True)
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{k} differs after resume"
    keys = ("steps", "episode_return", "episode_length", "pg_loss", "v_loss")
    assert [{k: h[k] for k in keys} for h in whole_hist] == [{k: h[k] for k in keys} for h in resumed_hist]


RECIPE = """
[artifact]
name = "tiny"
description = "smoke"
[env]
split = "train"
max_steps = 20
[policy]
channels = [4, 8, 8]
pool = [false, true, true]
hidden = 16
[bc]
states = 256
epochs = 1
batch_size = 64
num_envs = 8
[ppo]
total_steps = 256
num_envs = 8
num_steps = 16
num_minibatches = 2
update_epochs = 1
learning_rate = 5e-4
threads = 1
eval_every = 0
eval_episodes = 4
checkpoint_every = 1
[eval]
episodes = 4
"""


def test_resume_keeps_finished_phases_and_refuses_another_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "art" / "tiny"
    train_mod.train_recipe(recipe, out=out, progress=False)
    first = load_file(str(out / "weights.safetensors"))
    record = json.loads((tmp_path / "runs" / "checkpoints" / "tiny" / "recipe.json").read_text())
    assert len(record["hash"]) == 64 and record["tables"]["ppo"]["learning_rate"] == 5e-4

    def no_rerun(*a, **k):
        raise AssertionError("a finished phase was re-run")

    monkeypatch.setattr(train_mod, "behaviour_clone", no_rerun)
    monkeypatch.setattr(train_mod, "collect_expert_data", no_rerun)
    train_mod.train_recipe(recipe, out=out, progress=False, resume=True)  # BC and PPO both finished: nothing re-run
    again = load_file(str(out / "weights.safetensors"))
    assert all(torch.equal(first[k], again[k]) for k in first)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["steps"] == 256 and metrics["training"]["bc"]  # the kept phases are reported

    # [eval] and [artifact].description may change; training sections may not
    recipe.write_text(RECIPE.replace("[eval]\nepisodes = 4", "[eval]\nepisodes = 5").replace('"smoke"', '"other"'))
    train_mod.train_recipe(recipe, out=out, progress=False, resume=True)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    recipe.write_text(
        RECIPE.replace("learning_rate = 5e-4", "learning_rate = 1e-3").replace("hidden = 16", "hidden = 32")
    )
    with pytest.raises(WorkbenchError) as err:
        train_mod.train_recipe(recipe, out=out, progress=False, resume=True)
    msg = str(err.value)
    assert "\n" not in msg and "[ppo].learning_rate: 0.0005 -> 0.001" in msg and "[policy].hidden: 16 -> 32" in msg
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_resume_refuses_a_checkpoint_without_recipe_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    legacy = tmp_path / "runs" / "checkpoints" / "tiny"
    legacy.mkdir(parents=True)
    (legacy / "checkpoint.json").write_text("{}")
    with pytest.raises(WorkbenchError, match="no recipe record"):
        train_mod.train_recipe(recipe, out=tmp_path / "art" / "tiny", progress=False, resume=True)
    assert not (tmp_path / "art").exists()
