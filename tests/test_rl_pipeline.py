"""Policies, PPO, recipes, artifacts: the training half of the data path, on tiny settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.hooks import hook_names, run_with_cache
from workbench.rl.agent import load_agent
from workbench.rl.envs.maze import MazeConfig, MazeVecEnv, generate_levels, observe
from workbench.rl.policies import ImpalaPolicy, PolicyConfig
from workbench.rl.ppo import PPOConfig, train_ppo
from workbench.rl.rollout import evaluate, levels_for, run_episodes
from workbench.rl.train import load_recipe, train_recipe

from .conftest import TINY_ENV, TINY_POLICY

REPO = Path(__file__).resolve().parent.parent


def test_policy_module_tree_matches_published_names() -> None:
    names = set(hook_names(ImpalaPolicy(PolicyConfig())))
    for name in (
        "embedder.block1.conv",
        "embedder.block2.res1.conv1",
        "embedder.block2.res1.resadd_out",
        "embedder.block3.res2.conv2",
        "embedder.fc",
        "fc_policy",
        "fc_value",
    ):
        assert name in names
    state = ImpalaPolicy(PolicyConfig()).state_dict()
    assert "embedder.block1.conv.weight" in state and "fc_value.bias" in state


def test_resadd_out_is_the_residual_sum() -> None:
    torch.manual_seed(0)
    policy = ImpalaPolicy(TINY_POLICY)
    obs = torch.as_tensor(observe(generate_levels(np.arange(3), "ood")))
    names = ["embedder.block2.maxpool", "embedder.block2.res1.conv2", "embedder.block2.res1.resadd_out"]
    _, cache = run_with_cache(policy, obs, names_filter=names)
    assert torch.allclose(cache[names[2]], cache[names[0]] + cache[names[1]])
    assert cache[names[2]].shape == (3, 8, 8, 8)


def test_ppo_smoke_run_learns_value_and_checkpoints(tmp_path: Path) -> None:
    torch.manual_seed(0)
    policy = ImpalaPolicy(TINY_POLICY)
    cfg = PPOConfig(
        total_steps=2 * 16 * 32,
        num_envs=16,
        num_steps=32,
        num_minibatches=4,
        update_epochs=1,
        eval_every=1,
        checkpoint_every=1,
        seed=0,
    )
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    history = train_ppo(
        lambda n: MazeVecEnv(n, "train", TINY_ENV),
        policy,
        cfg,
        checkpoint_dir=tmp_path,
        evaluate=lambda p: {"ok": 1.0},
        progress=False,
    )
    assert [h["update"] for h in history] == [1, 2]
    assert all(np.isfinite(h["pg_loss"]) and np.isfinite(h["v_loss"]) for h in history)
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())
    assert (tmp_path / "checkpoint.safetensors").is_file()
    assert json.loads((tmp_path / "checkpoint.json").read_text())["update"] == 2

    # Resume: a longer run picks up at update 2 with the saved weights and optimiser.
    resumed = ImpalaPolicy(TINY_POLICY)
    cfg3 = PPOConfig(**{**cfg.__dict__, "total_steps": 3 * 16 * 32})
    history3 = train_ppo(
        lambda n: MazeVecEnv(n, "train", TINY_ENV), resumed, cfg3, checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert [h["update"] for h in history3] == [1, 2, 3]


def test_rollout_is_deterministic_and_hooks_apply() -> None:
    torch.manual_seed(0)
    policy = ImpalaPolicy(TINY_POLICY)
    a = evaluate(policy, "ood", 32, seed=5, config=TINY_ENV)
    b = evaluate(policy, "ood", 32, seed=5, config=TINY_ENV)
    assert (a.cheese_reached == b.cheese_reached).all() and (a.length == b.length).all()

    # A hook forcing "down" on every forward pass pins the mouse to its start (the bottom wall): no cheese ever.
    def always_down(logits: torch.Tensor, hook) -> torch.Tensor:
        forced = torch.full_like(logits, -1e4)
        forced[:, 1] = 0.0
        return forced

    c = evaluate(policy, "ood", 32, seed=5, config=TINY_ENV, fwd_hooks=[("fc_policy", always_down)])
    assert not c.cheese_reached.any() and (c.length == TINY_ENV.max_steps).all()
    summary = a.rates()
    assert set(summary["rates"]) == {"cheese", "corner_first", "timeout"}
    assert summary["rates"]["cheese"] + summary["rates"]["timeout"] == pytest.approx(1.0)


def test_expert_reaches_cheese_and_corner_first_is_defined_by_region() -> None:
    """An oracle that walks to the corner first: corner_first must be 1 wherever the cheese is off its path."""
    from workbench.rl.envs.maze import distances_to, greedy_actions

    levels = levels_for("ood", 64, 0, MazeConfig(max_steps=400))

    class CornerOracle(torch.nn.Module):
        def forward(self, obs: torch.Tensor):
            # A policy sees observations only (the loop may forward just the envs still running): find each row's
            # maze by its wall plane; a row in another maze (autoreset) walks maze 0 from its start, unrecorded.
            walls = obs[:, 0].numpy().astype(bool)
            same = (walls[:, None] == levels.walls[None]).all(axis=(2, 3))
            idx = np.where(same.any(axis=1), same.argmax(axis=1), 0)
            pos = np.argwhere(obs[:, 1].numpy())[:, 1:]
            pos = np.where(same.any(axis=1)[:, None], pos, levels.mouse[idx])
            lv = levels.select(idx).with_mouse(pos)
            a = greedy_actions(distances_to(lv, lv.corner()), lv.mouse)
            logits = torch.full((len(a), 4), -1e9)
            logits[torch.arange(len(a)), torch.as_tensor(np.where(a < 0, 0, a))] = 0.0
            return logits, torch.zeros(len(a))

    rec = run_episodes(CornerOracle(), levels, MazeConfig(max_steps=400), greedy=True)
    assert (rec.cheese_reached | rec.region_reached).all()
    rows = np.arange(len(levels))
    d_start = distances_to(levels, levels.mouse)
    d_corner = distances_to(levels, levels.corner())
    cheese = levels.cheese[:, 0], levels.cheese[:, 1]
    corner = levels.corner()[:, 0], levels.corner()[:, 1]
    on_path = d_start[rows, *cheese] + d_corner[rows, *cheese] == d_start[rows, *corner]
    outside = ~levels.in_region(levels.cheese)
    assert (on_path & outside).any() and (~on_path & outside).any()
    assert rec.corner_first[~on_path & outside].all()  # walks into the region, never passes the cheese
    assert not rec.corner_first[on_path & outside].any()  # meets the cheese before the region


def test_recipe_errors_name_file_section_and_nearest_key(tmp_path: Path) -> None:
    src = (REPO / "agents" / "maze-cheese-corner.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(src.replace("learning_rate", "learnin_rate"))
    with pytest.raises(
        WorkbenchError, match=r"bad.toml \[ppo\]: unknown key 'learnin_rate'; did you mean: learning_rate"
    ):
        load_recipe(bad)
    bad.write_text(src.replace("num_envs = 64", 'num_envs = "many"'))
    with pytest.raises(WorkbenchError, match=r"\[ppo\]: key 'num_envs' must be int"):
        load_recipe(bad)
    bad.write_text(src.replace('split = "train"', 'split = "tran"'))
    with pytest.raises(WorkbenchError, match="did you mean: train"):
        load_recipe(bad)
    bad.write_text(src.replace("[eval]", "[evaluation]"))
    with pytest.raises(WorkbenchError, match=r"unknown section \[evaluation\]"):
        load_recipe(bad)
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_recipe(tmp_path / "missing.toml")


def test_shipped_recipes_parse() -> None:
    for name in ("maze-cheese-corner", "maze-cheese-anywhere"):
        recipe = load_recipe(REPO / "agents" / f"{name}.toml")
        assert recipe.artifact.name == name
    assert load_recipe(REPO / "agents" / "maze-cheese-corner.toml").env.split == "train"
    assert load_recipe(REPO / "agents" / "maze-cheese-anywhere.toml").env.split == "ood"


def test_train_recipe_writes_a_loadable_artifact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("""
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
[ppo]
total_steps = 512
num_envs = 8
num_steps = 32
num_minibatches = 2
update_epochs = 1
eval_every = 0
[eval]
episodes = 16
""")
    out = train_recipe(recipe, out=tmp_path / "art" / "tiny", progress=False)
    agent = load_agent(out)
    metrics = agent.metrics
    assert set(metrics["eval"]) == {"train", "ood"}
    assert metrics["eval"]["ood"]["episodes"] == 16 and len(metrics["eval"]["ood"]["ci95"]["cheese"]) == 2
    assert "| train |" in agent.card and agent.env_config.max_steps == 20
    assert not list((tmp_path / "art").glob(".tiny*")), "temporary folders left behind"


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    from workbench import artifacts

    with pytest.raises(RuntimeError), artifacts.writing(tmp_path / "x") as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_corrupt_weights_are_a_clear_error(registry: Path) -> None:
    (registry / "agents" / "tiny-maze" / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WorkbenchError, match="unreadable weights"):
        load_agent("tiny-maze")
