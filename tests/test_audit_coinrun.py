"""The goal audit on a CoinRun population, the per-kind detector modules behind the env-kind registry, and the SAE
latent detectors.

A 2-seed sweep of a tiny CoinRun recipe (seconds per run): its store rows carry CoinRun's proxy metric from the
registry (`EnvKind.proxy`), and the audit runs CoinRun's own detectors (coin vector, coin-vs-exit cosine, coin-offset
probe) plus the generic ones, deterministically. The audit states are golden-tested (agent near the exit, coin in view;
moved coins on free cells), and the SAE detectors on synthetic activations (no goal change -> zero change).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from workbench.errors import WorkbenchError

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "agents" / "sweep" / "coinrun-tiny.toml"


@pytest.fixture(scope="module")
def coinrun_pop(tmp_path_factory):
    """A 2-seed serial population of the tiny CoinRun recipe, with a results store."""
    from workbench.sweep import run_sweep

    root = tmp_path_factory.mktemp("coinrun-sweep")
    store = root / "results.duckdb"
    result = run_sweep(TINY, "0-1", executor="serial", out=root / "pop", store=store, progress=False)
    assert [r["status"] for r in result.runs] == ["done", "done"], result.runs
    return {"root": root, "out": root / "pop", "store": store}


# ------------------------------------------------------------------------------------------- registry: proxy, audit
def test_proxy_metric_comes_from_the_env_kind_registry(monkeypatch):
    from workbench.rl import env_kinds
    from workbench.sweep import proxy_metric

    assert proxy_metric("maze") == ("corner_first", "ood.informative.corner_first")
    assert proxy_metric("coinrun") == ("exit_without_coin", "ood.informative.exit_without_coin")
    bare = dataclasses.replace(env_kinds.env_kind("maze"), name="no-proxy", proxy=None)
    monkeypatch.setitem(env_kinds._KINDS, "no-proxy", bare)
    with pytest.raises(WorkbenchError, match="declares no proxy metric"):
        proxy_metric("no-proxy")


def test_auditor_found_through_the_registry(monkeypatch):
    from workbench.audit import GENERIC_BLACK, GENERIC_WHITE, auditor, detector_names
    from workbench.rl import env_kinds

    assert auditor("maze").__name__ == "workbench.rl.maze.audit"
    assert auditor("coinrun").__name__ == "workbench.rl.coinrun.audit"
    white, black = detector_names("coinrun")
    assert white == ("coin_vector_norm", "coin_exit_cosine", "probe_coin_offset_r2", *GENERIC_WHITE)
    assert black == ("bb_train_coin_rate", "bb_train_steps", *GENERIC_BLACK)
    assert all(d.startswith("bb_") for d in black) and not any(d.startswith("bb_") for d in white)
    # a kind with a proxy but no audit module: one line naming the file to add
    orphan = dataclasses.replace(env_kinds.env_kind("maze"), name="orphan", rollout="workbench.rl.rollout")
    monkeypatch.setitem(env_kinds._KINDS, "orphan", orphan)
    with pytest.raises(WorkbenchError, match=r"no goal audit: add workbench/rl/audit\.py"):
        auditor("orphan")


# ------------------------------------------------------------------------------------------------- audit states
def test_coinrun_audit_states_golden():
    from workbench.rl.coinrun.audit import audit_inputs, moved_coin
    from workbench.rl.coinrun.physics import CoinRunConfig
    from workbench.rl.coinrun.steering import coin_in_view

    cfg = CoinRunConfig(min_length=16, max_length=24, max_steps=80)
    inputs = audit_inputs(cfg, "train", 64, 0)
    states = inputs.levels
    assert coin_in_view(states, cfg.view).all()  # every audit state shows coin and exit
    assert np.all(states.coin == states.exit)  # training distribution: the coin on the exit
    gap = states.exit[:, 1] - states.agent[:, 1]
    assert gap.min() >= 2 and gap.max() <= cfg.view - 1
    rows = np.arange(len(states))
    assert not states.solid[rows, states.agent[:, 0], states.agent[:, 1]].any()
    assert states.solid[rows, states.agent[:, 0] + 1, states.agent[:, 1]].all()  # standing on the ground
    assert (inputs.obs != inputs.goal_removed).any(axis=(1, 2, 3)).all()  # removing the coin changes every view
    again = audit_inputs(cfg, "train", 64, 0)
    assert np.array_equal(again.obs, inputs.obs)  # the same states for every seed and every call
    moved, offsets = moved_coin(states, 0)
    assert (np.abs(offsets) > 0).any(axis=1).all() and np.abs(offsets[:, 0]).max() <= 2
    assert offsets[:, 1].max() <= 0 and offsets[:, 1].min() >= -3
    assert not moved.solid[rows, moved.coin[:, 0], moved.coin[:, 1]].any()
    assert not moved.hazard[rows, moved.coin[:, 0], moved.coin[:, 1]].any()
    assert np.array_equal(moved.coin - moved.exit, offsets.astype(np.int64))


# ------------------------------------------------------------------------------------------------- SAE detectors
def test_sae_features_golden_on_synthetic_activations():
    import torch

    from workbench.audit import sae_features

    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(64, 8, 3, 3, generator=gen, dtype=torch.float64).relu()
    same = sae_features(acts, acts.clone(), seed=0)
    assert same["sae_goal_change"] == 0.0 and np.isnan(same["sae_goal_top_share"])
    removed = acts.clone()
    removed[:, 2] = 0.0  # one channel carries the "goal"
    moved = sae_features(acts, removed, seed=0)
    assert moved["sae_goal_change"] > 0.0 and 0.0 < moved["sae_goal_top_share"] <= 1.0
    assert sae_features(acts, removed, seed=0) == moved  # seeded: the same numbers again
    bigger = acts.clone()
    bigger[:, :4] = 0.0  # more of the code depends on the goal -> more change
    assert sae_features(acts, bigger, seed=0)["sae_goal_change"] > moved["sae_goal_change"]


# ------------------------------------------------------------------------------------------------- the population
def test_coinrun_population_store_rows(coinrun_pop):
    from workbench.store import ResultStore

    with ResultStore(coinrun_pop["store"], read_only=True) as db:
        rows = db.query()
    assert sorted(rows["run_id"]) == ["coinrun-tiny/s0000", "coinrun-tiny/s0001"]
    assert set(rows["metric"]) == {"ood.informative.exit_without_coin"}


def test_coinrun_audit_contract(coinrun_pop, tmp_path):
    from workbench.audit import detector_names, population_figure, run_audit
    from workbench.validate import strict_json

    result = run_audit(coinrun_pop["out"], episodes=16, seed=0, n_boot=50)
    data = json.loads(strict_json(result.to_json()))
    white, black = detector_names("coinrun")
    want = {d for d in (*white, *black) if d != "control_mean_diff"}  # no control twin given
    assert set(data["detectors"]) == want
    assert data["settings"]["proxy_rate"] == "exit_without_coin" and data["summary"]["metric"].endswith(
        "exit_without_coin"
    )
    for feats in result.features.values():
        assert all(np.isfinite(feats[d]) for d in want), feats
        assert 0.0 <= feats["bb_train_coin_rate"] <= 1.0 and -1.0 <= feats["coin_exit_cosine"] <= 1.0
        assert feats["coin_vector_norm"] > 0.0 and feats["sae_goal_change"] > 0.0
    again = run_audit(coinrun_pop["out"], episodes=16, seed=0, n_boot=50)
    assert strict_json(again.features) == strict_json(result.features)  # deterministic (NaN-safe comparison)
    assert "coin_vector_norm" in result.markdown()
    png = population_figure(result, tmp_path / "coinrun.png")
    assert png.stat().st_size > 1000
    quick = run_audit(coinrun_pop["out"], episodes=16, seed=0, n_boot=50, sae=False)
    assert "sae_goal_change" not in quick.table["detectors"]
    assert quick.features["s0000"]["coin_vector_norm"] == result.features["s0000"]["coin_vector_norm"]


def test_audit_refuses_mixed_kinds(coinrun_pop, tmp_path):
    from workbench.audit import proxy_rates

    rec = json.loads((coinrun_pop["out"] / "runs" / "s0000" / "record.json").read_text())
    with pytest.raises(WorkbenchError, match="mix env kinds"):
        proxy_rates([rec, {**rec, "env_kind": "maze"}])
