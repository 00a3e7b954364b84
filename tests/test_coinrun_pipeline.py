"""CoinRun through the whole data path on a tiny random agent: recipe -> train -> artifact -> eval / collect / probe
-> coin vector -> steer, plus the env-kind dispatch that keeps the maze API unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.rl.agent import ENV_KINDS, load_agent
from workbench.rl.coinrun.rollout import RATE_KEYS, CoinRunRecords
from workbench.rl.envs.coinrun import CoinRunConfig, CoinRunLevels
from workbench.rl.rollout import evaluate, levels_for, rate_keys, run_episodes
from workbench.rl.train import load_recipe, train_recipe

torch.set_num_threads(1)  # tiny convs: extra threads only add contention on a shared CPU

REPO = Path(__file__).resolve().parent.parent
LAYER = "embedder.block2.res1.resadd_out"


def test_env_kind_registry_and_dispatch(coinrun_registry: Path) -> None:
    assert ENV_KINDS == ("maze", "coinrun")
    agent = load_agent("tiny-coinrun")
    assert agent.env_kind == "coinrun" and isinstance(agent.env_config, CoinRunConfig)
    levels = levels_for("ood", 12, 0, agent.env_config)
    assert isinstance(levels, CoinRunLevels)
    rec = run_episodes(agent.policy, levels, agent.env_config, seed=3)
    again = evaluate(agent.policy, "ood", 12, 0, agent.env_config)
    assert isinstance(rec, CoinRunRecords) and rate_keys(agent.env_config) == RATE_KEYS
    assert (again.length <= agent.env_config.max_steps).all()
    # Outcomes are exclusive and exhaustive: every episode ends at the exit, on a hazard, or at the step limit.
    assert ((rec.exit_reached.astype(int) + rec.died + rec.timeout) == 1).all()
    assert (rec.exit_without_coin <= rec.exit_reached).all()


def test_rollout_is_seeded_and_hooks_apply(coinrun_registry: Path) -> None:
    agent = load_agent("tiny-coinrun")
    cfg = agent.env_config
    a = evaluate(agent.policy, "ood", 16, 5, cfg)
    b = evaluate(agent.policy, "ood", 16, 5, cfg)
    assert (a.length == b.length).all() and (a.coin_collected == b.coin_collected).all()

    def always_right(logits: torch.Tensor, hook) -> torch.Tensor:
        forced = torch.full_like(logits, -1e4)
        forced[:, 2] = 0.0
        return forced

    right = evaluate(agent.policy, "ood", 16, 5, cfg, fwd_hooks=[("fc_policy", always_right)])
    # Walking right never jumps: it ends on the first hazard or blocked in front of a crate/step (timeout).
    assert not right.exit_reached.any() or (right.length < cfg.max_steps).all()
    assert (right.died | right.timeout).all()


def test_eval_cli_prints_coinrun_rates(coinrun_registry: Path, cli) -> None:
    code, out, err = cli("eval", "tiny-coinrun", "--split", "ood", "--episodes", "16", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert set(data["rates"]) == {"coin", "exit", "exit_without_coin", "timeout"}
    assert all(len(ci) == 2 for ci in data["ci95"].values()) and "died" in data
    code, out, err = cli("eval", "tiny-coinrun", "--episodes", "8")
    assert code == 0, err
    assert "exit_without_coin" in out and "away from the exit" in out
    code, _, err = cli("eval", "tiny-coinrun", "--split", "od")
    assert code == 2 and "did you mean: ood" in err


def test_collect_coinrun_labels_match_the_world(coinrun_registry: Path) -> None:
    from workbench.activations import COINRUN_LABEL_COLUMNS, collect_coinrun

    agent = load_agent("tiny-coinrun")
    ds = collect_coinrun(agent, [LAYER], split="ood", episodes=24, seed=2, progress=False)
    lab = ds.labels
    assert set(COINRUN_LABEL_COLUMNS) <= set(lab.columns) and len(ds) == len(lab)
    assert ds[LAYER].shape[0] == len(ds)
    view = agent.env_config.view
    vis = lab["coin_visible"].to_numpy()
    assert (np.abs(lab.loc[vis, "coin_dx"]) <= view).all()
    assert (lab.loc[lab["coin_present"], "dist_to_coin"] >= 0).any()
    assert (lab["dist_to_exit"] != 0).all(), "no recorded state is the (terminal) exit"
    start = lab[lab["step"] == 0]
    assert len(start) == 24 and (start["coin_present"]).all()
    # Outcomes agree with an independent run_episodes on the same levels and seed.
    rec = run_episodes(agent.policy, levels_for("ood", 24, 2, agent.env_config), agent.env_config, seed=2)
    assert (start["outcome_coin"].to_numpy() == rec.coin_collected[start["episode"].to_numpy()]).all()
    assert (lab.groupby("episode")["step"].max().to_numpy() + 1 == rec.length).all()
    start_only = collect_coinrun(agent, [LAYER], split="train", episodes=8, seed=2, states="start", progress=False)
    assert len(start_only) == 8 and start_only.labels["coin_at_exit"].all()


def test_coin_vector_is_a_paired_difference_and_steering_has_controls(coinrun_registry: Path) -> None:
    from workbench.rl.coinrun.steering import coin_direction, coin_in_view, rollout_states, steer_coinrun

    agent = load_agent("tiny-coinrun")
    levels = levels_for("ood", 30, 7, agent.env_config)
    states = rollout_states(agent, levels, 7, keep=lambda lv: coin_in_view(lv, agent.env_config.view))
    assert coin_in_view(states, agent.env_config.view).all()
    vec, info = coin_direction(agent, LAYER, episodes=30, seed=7)
    assert vec.shape == (8, 4, 4) and info["pairs"] == len(states) and info["norm"] > 0

    result = steer_coinrun(agent, "coin", -1.0, LAYER, "ood", 16, seed=0, direction_episodes=30)
    for cond in ("baseline", "steered", "control"):
        assert set(result[cond]["rates"]) == set(RATE_KEYS)
    assert set(result["effects"]["control"]) == set(RATE_KEYS)
    zero = steer_coinrun(agent, "coin", 0.0, LAYER, "ood", 16, seed=0, direction_episodes=30)
    assert zero["steered"]["rates"] == zero["baseline"]["rates"], "coef 0 must be the un-intervened run"
    assert "decision_square" not in result


def test_steer_cli_for_coinrun(coinrun_registry: Path, cli) -> None:
    code, out, err = cli("steer", "tiny-coinrun", "--episodes", "8", "--probe-episodes", "20", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["vector"] == "coin" and data["direction"]["episodes"] == 20
    code, out, err = cli("steer", "tiny-coinrun", "--episodes", "8", "--probe-episodes", "20")
    assert code == 0 and "d control" in out
    code, _, err = cli("steer", "tiny-coinrun", "--vector", "coins", "--episodes", "8")
    assert code == 2 and "did you mean: coin" in err


def test_coin_exit_probes_report_controls(coinrun_registry: Path) -> None:
    from workbench.rl.coinrun.probes import coin_exit_probes

    rows = coin_exit_probes(load_agent("tiny-coinrun"), LAYER, fit_episodes=24, test_episodes=16, seed=0)
    targets = {r["target"] for r in rows}
    assert {"coin_visible", "coin_right", "coin_at_exit", "exit_dx"} <= targets
    auroc = [r for r in rows if r["metric"] == "auroc"]
    assert auroc and all(0.0 <= r["value"] <= 1.0 and "shuffled_control" in r for r in auroc)


def test_shipped_coinrun_recipes_parse() -> None:
    exit_ = load_recipe(REPO / "agents" / "coinrun-coin-at-exit.toml")
    mitig = load_recipe(REPO / "agents" / "coinrun-coin-random-2pct.toml")
    assert exit_.env.kind == mitig.env.kind == "coinrun"
    assert exit_.env.config.random_coin_percent == 0.0 and mitig.env.config.random_coin_percent == 2.0
    assert exit_.policy.n_actions == 6 and exit_.policy.in_channels == 5 and exit_.policy.obs_size == 13
    # The twins differ only in the coin randomisation (and their names/descriptions).
    a, b = dict(exit_.raw), dict(mitig.raw)
    a["env"] = {k: v for k, v in a["env"].items() if k != "random_coin_percent"}
    b["env"] = {k: v for k, v in b["env"].items() if k != "random_coin_percent"}
    assert {k: v for k, v in a.items() if k != "artifact"} == {k: v for k, v in b.items() if k != "artifact"}


def test_train_coinrun_recipe_bc_only_writes_a_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text("""
[artifact]
name = "tiny-coinrun"
description = "smoke"
[env]
kind = "coinrun"
split = "train"
min_length = 16
max_length = 20
max_steps = 40
random_coin_percent = 2.0
[policy]
channels = [4, 8, 8]
pool = [true, true, true]
hidden = 16
[bc]
states = 600
epochs = 1
num_envs = 32
[ppo]
total_steps = 0
[eval]
episodes = 16
""")
    out = train_recipe(recipe, out=tmp_path / "art" / "tiny-coinrun", progress=False)
    agent = load_agent(out)
    assert agent.env_kind == "coinrun" and agent.env_config.random_coin_percent == 2.0
    assert set(agent.metrics["eval"]["ood"]["rates"]) == set(RATE_KEYS)
    assert "no PPO fine-tune (BC only)" in agent.card and "| ood |" in agent.card
    training = agent.metrics["training"]
    assert training["steps"] == 0 and len(training["bc"]) == 1 and np.isfinite(training["bc"][0]["loss"])
