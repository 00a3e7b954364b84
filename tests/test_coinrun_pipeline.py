"""CoinRun through the whole data path on a tiny random agent: recipe -> train -> artifact -> eval / collect / probe
-> coin vector -> steer, plus the env-kind dispatch that keeps the maze API unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.rl.agent import ENV_KINDS, load_agent
from workbench.rl.coinrun.rollout import RATE_KEYS, CoinRunRecords
from workbench.rl.envs.coinrun import CoinRunConfig, CoinRunLevels
from workbench.rl.rollout import evaluate, levels_for, rate_keys, run_episodes
from workbench.rl.train import load_recipe, train_recipe

torch.set_num_threads(1)  # tiny convs: extra threads only add contention on a shared CPU

REPO = Path(__file__).resolve().parent.parent
LAYER = "embedder.block2.res1.resadd_out"


def test_env_kind_registry_and_dispatch(coinrun_registry: Path) -> None:
    assert {"maze", "coinrun"} <= set(ENV_KINDS)
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
    assert "exit_without_coin" in out and "on informative levels (the two goals differ" in out
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


# ------------------------------------------------------------------------------------------ one level, step by step
def test_play_level_replays_the_episode_run_episodes_reports(coinrun_registry: Path) -> None:
    from workbench.interventions import add_vector
    from workbench.rl.coinrun.rollout import play_level
    from workbench.rl.envs.coinrun import NO_COIN, generate_levels, physics

    agent = load_agent("tiny-coinrun")
    cfg = agent.env_config
    for seed in range(6):
        level = generate_levels(np.array([seed]), "ood", cfg)
        tr = play_level(agent.policy, level, cfg, seed=seed, layer=LAYER)
        rec = run_episodes(agent.policy, level, cfg, seed=seed)
        steps = int(rec.length[0])
        assert len(tr.actions) == steps and len(tr.states) == steps + 1 and tr.probs.shape == (steps, 6)
        assert tr.activations is not None and tr.activations.shape == (steps, 8, 4, 4)
        for key in ("coin_collected", "exit_reached", "died", "length", "coin_step", "exit_step"):
            assert (getattr(tr.records, key) == getattr(rec, key)).all(), key
        # Every snapshot follows from the one before by the env's physics; the last one is where the episode ended.
        for t in range(steps):
            s = tr.states.select(slice(t, t + 1))
            r, c, _ = physics(s.solid, np.zeros(1, int), s.agent[:, 0], s.agent[:, 1], s.rise, tr.actions[t : t + 1], 3)
            assert (tr.states.agent[t + 1] == [r[0], c[0]]).all()
        end = tuple(tr.path()[-1])
        assert (end == tuple(level.exit[0])) == bool(rec.exit_reached[0])
        assert bool(level.hazard[0, end[0], end[1]]) == bool(rec.died[0])
        assert (tr.states.coin[-1, 0] == NO_COIN) == bool(rec.coin_collected[0])
        np.testing.assert_allclose(tr.probs.sum(1), 1.0, atol=1e-6)
    # Hooks apply (and are removed afterwards): a forced "right" policy only ever moves right.
    level = generate_levels(np.array([0]), "ood", cfg)

    def always_right(logits: torch.Tensor, hook) -> torch.Tensor:
        forced = torch.full_like(logits, -1e4)
        forced[:, 2] = 0.0
        return forced

    forced = play_level(agent.policy, level, cfg, fwd_hooks=[("fc_policy", always_right)])
    assert (forced.actions == 2).all() and forced.activations is None
    assert (play_level(agent.policy, level, cfg).actions == play_level(agent.policy, level, cfg).actions).all()
    # A steering hook at LAYER shows up in the recorded activations.
    base = play_level(agent.policy, level, cfg, layer=LAYER)
    shift = torch.ones(8, 4, 4)
    steered = play_level(agent.policy, level, cfg, fwd_hooks=[(LAYER, add_vector(shift, 1.0))], layer=LAYER)
    torch.testing.assert_close(steered.activations[0], base.activations[0] + shift)
    with pytest.raises(WorkbenchError, match="one level"):
        play_level(agent.policy, levels_for("ood", 2, 0, cfg), cfg)


def test_readout_probes_and_steer_level(coinrun_registry: Path) -> None:
    from workbench.rl.coinrun.probes import READOUT_TARGETS, fit_coin_exit_readout, state_labels
    from workbench.rl.coinrun.rollout import play_level
    from workbench.rl.coinrun.steering import coin_direction, coin_in_view, steer_level
    from workbench.rl.envs.coinrun import generate_levels

    agent = load_agent("tiny-coinrun")
    cfg = agent.env_config
    readout = fit_coin_exit_readout(agent, LAYER, episodes=30, seed=0)
    assert set(readout.probes) <= set(READOUT_TARGETS) and readout.probes
    for row in readout.quality:
        if "value" in row:
            assert row["ci95"][0] <= row["value"] <= row["ci95"][1] and "shuffled_control" in row
    level = generate_levels(np.array([3]), "ood", cfg)
    tr = play_level(agent.policy, level, cfg, layer=LAYER)
    probs = readout.read(tr.activations)
    assert all(p.shape == (len(tr.actions),) and ((p >= 0) & (p <= 1)).all() for p in probs.values())
    truth = state_labels(tr.states, cfg.view)
    assert (truth["coin_visible"] == coin_in_view(tr.states, cfg.view)).all()
    assert (truth["coin_right"] == (tr.states.has_coin() & (tr.states.coin[:, 1] > tr.states.agent[:, 1]))).all()

    vec, _ = coin_direction(agent, LAYER, episodes=20, seed=1)
    runs = steer_level(agent, level, vec, 0.0, LAYER, seed=2)
    assert list(runs) == ["baseline", "steered", "control"]
    for cond in ("steered", "control"):  # coefficient 0 is no intervention at all
        assert (runs[cond].actions == runs["baseline"].actions).all()
        torch.testing.assert_close(runs[cond].activations, runs["baseline"].activations)
    big = steer_level(agent, level, vec, 3.0, LAYER, seed=2)
    torch.testing.assert_close(big["steered"].activations[0], runs["baseline"].activations[0] + 3.0 * vec)
    ctrl_shift = big["control"].activations[0] - runs["baseline"].activations[0]
    assert torch.linalg.vector_norm(ctrl_shift) == pytest.approx(3.0 * float(torch.linalg.vector_norm(vec)), rel=1e-4)
    assert not torch.allclose(ctrl_shift, 3.0 * vec)


# ------------------------------------------------------------------------------------------ CLI for CoinRun agents
def test_hooks_probe_and_vector_field_cli_for_coinrun(coinrun_registry: Path, cli, tmp_path: Path) -> None:
    code, out, err = cli("hooks", "tiny-coinrun")
    assert code == 0, err
    assert f"{LAYER:45s} (8, 4, 4)" in out and "fc_policy" in out and "(6,)" in out

    args = ("probe", "tiny-coinrun", "--n-fit", "20", "--n-test", "16")
    code, out, err = cli(*args, "--json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {r["layer"] for r in rows} == {LAYER}
    assert {"coin_visible", "exit_visible", "coin_dx"} <= {r["target"] for r in rows}
    code, out, err = cli(*args, "--layer", "embedder.block3.res2.resadd_out")
    assert code == 0, err
    assert out.startswith("layer embedder.block3.res2.resadd_out") and "shuffled" in out and "coin_visible" in out
    code, _, err = cli(*args, "--fit-split", "train")
    assert code == 2 and err.startswith("error: CoinRun coin/exit probes fit on ood levels") and err.count("\n") == 1
    code, _, err = cli(*args, "--layer", "embedder.block2.res1.resad_out")
    assert code == 2 and "did you mean" in err

    png = tmp_path / "field.png"
    code, _, err = cli("vector-field", "tiny-coinrun", "--out", str(png))
    assert code == 2 and "`vector-field` is not available for coinrun subjects" in err and "probe" in err
    assert err.count("\n") == 1 and not png.exists()


def test_workbench_threads_env_sets_torch_threads(coinrun_registry: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        monkeypatch.setenv("WORKBENCH_THREADS", "1")
        code, _, err = cli("hooks", "tiny-coinrun")
        assert code == 0, err
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("WORKBENCH_THREADS", "many")
        code, _, err = cli("hooks", "tiny-coinrun")
        assert code == 2 and "WORKBENCH_THREADS must be a positive integer" in err
        monkeypatch.delenv("WORKBENCH_THREADS")
        torch.set_num_threads(2)
        assert cli("hooks", "tiny-coinrun")[0] == 0 and torch.get_num_threads() == 2  # unset: left alone
    finally:
        torch.set_num_threads(before)
