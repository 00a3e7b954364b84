"""A published-format checkpoint (random weights, written by the test) through every verb on real procgen.

The maze verbs (hooks, eval, steer with the decision-square measure, probe, vector-field, collect, a battery check
and an SAE) run on `procgen-maze`; CoinRun runs eval, hooks and coin-vector steering. Levels are replayed exactly:
the same levels under every condition, and `observe()` of a parsed level equals procgen's own first frame.
"""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

procgen = pytest.importorskip("procgen")

from workbench.rl.policies import ImpalaPolicy  # noqa: E402
from workbench.rl.published import published_config, save_published  # noqa: E402
from workbench.subjects import load_subject, verb  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_published(ImpalaPolicy(published_config()), tmp_path_factory.mktemp("ckpt") / "random.pth")


@pytest.fixture(scope="module")
def short(checkpoint):
    """The same checkpoint registered as `pg-short` with 30-step episodes: random weights never find the cheese, so
    procgen's own 500-step timeout would dominate the test's time."""
    from workbench.rl.envs.procgen import ProcgenConfig
    from workbench.rl.procgen.kind import ProcgenWorld
    from workbench.subjects import register_subject

    def factory():
        agent = load_subject(checkpoint, env="procgen-maze")
        agent.world = ProcgenWorld(ProcgenConfig(game="maze", max_steps=30))
        return agent

    register_subject("pg-short", factory)
    return "pg-short"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "results.duckdb"))


def test_procgen_levels_replay_and_render_like_procgen(checkpoint):
    agent = load_subject(checkpoint, env="procgen-maze")
    assert agent.kind == "procgen-maze" and agent.env_kind == "maze"
    levels = agent.world.levels("ood", 3, seed=5)
    again = agent.world.levels("ood", 3, seed=5)
    assert (levels.seeds == again.seeds).all() and (levels.cheese == again.cheese).all()
    from workbench.rl.envs.procgen import ProcgenVecEnv

    env = ProcgenVecEnv(3, "ood", agent.world.config)
    obs, _ = env.reset(seed=5, options={"states": levels.current_states()})
    np.testing.assert_array_equal(obs, levels.observe())  # our render of the parsed level == procgen's first frame
    train = agent.world.levels("train", 6, seed=5)
    assert train.in_region(train.cheese).all()  # the train split's edit: cheese in the top-right 5x5
    gone = levels.without_cheese()
    assert not gone.has_cheese().any() and (gone.observe() != levels.observe()).any()


def test_every_maze_verb_on_a_published_checkpoint(checkpoint, short, cli, tmp_path, store):
    ref = (str(checkpoint), "--env", "procgen-maze")
    code, out, err = cli("hooks", *ref, "--json")
    assert code == 0, err
    hooks = {h["hook"]: h["shape"] for h in json.loads(out)["hooks"]}
    assert hooks["embedder.block2.res1.resadd_out"] == [32, 16, 16]
    code, out, err = cli("steer", short, "--episodes", "3", "--seed", "1", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["subject_kind"] == "procgen-maze" and res["baseline"]["n"] == 3
    assert {"baseline", "steered", "control", "effects", "decision_square"} <= set(res)
    png = tmp_path / "field.png"
    code, out, err = cli("vector-field", *ref, "--out", str(png), "--coef", "-1", "--seed", "2", "--json")
    assert code == 0, err
    assert png.stat().st_size > 0 and json.loads(out)["cells"] > 10
    code, out, err = cli(
        "probe", *ref, "--layer", "embedder.block2.res1.resadd_out", "--n-fit", "24", "--n-test", "8", "--json"
    )
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {r["test_split"] for r in rows} == {"train", "ood"} and all(r["grid"] == "16x16" for r in rows)
    code, out, err = cli("collect", short, "--hook", "embedder.fc", "--episodes", "4", "--out", str(tmp_path / "ds"))
    assert code == 0, err
    from workbench.activations import ActivationDataset

    ds = ActivationDataset.load(tmp_path / "ds")
    assert ds["embedder.fc"].shape == (4, 256) and (ds.label("cheese_row") >= 0).all()
    code, _, err = cli("collect", *ref, "--hook", "embedder.fc", "--episodes", "2", "--states", "rollout")
    assert code == 2 and "use states='start'" in err and err.count("\n") == 1


def test_battery_check_on_a_checkpoint_path(checkpoint, cli, tmp_path, store):
    spec = tmp_path / "procgen.toml"
    spec.write_text(
        textwrap.dedent(
            f"""
            [[check]]
            name = "random procgen maze: goal rates are measured"
            kind = "behaviour"
            subject = "{checkpoint}"
            env = "procgen-maze"
            data = {{ split = "ood", episodes = 2, seed = 0 }}
            expect = {{ timeout = ">= 0" }}
            """
        )
    )
    code, out, err = cli("battery", "run", str(spec), "--json", "--store", str(tmp_path / "s.duckdb"))
    assert code == 0, err
    spec.write_text(spec.read_text().replace('env = "procgen-maze"', 'env = "procgen-mze"'))
    code, _, err = cli("battery", "run", str(spec))
    assert code == 2 and "procgen-maze" in err


def test_coinrun_checkpoint_eval_hooks_and_steer(checkpoint):
    agent = load_subject(checkpoint, env="procgen-coinrun")
    names = [h["hook"] for h in verb(agent, "hooks")(agent).to_json()["hooks"]]
    assert "embedder.block2.res1.resadd_out" in names
    res = verb(agent, "steer")(agent, episodes=2, seed=0).to_json()
    assert res["baseline"]["n"] == 2 and set(res["effects"]["steered"]) == {
        "coin",
        "exit",
        "exit_without_coin",
        "timeout",
    }
    with pytest.raises(Exception, match="not available for procgen-coinrun"):
        verb(agent, "vector-field")


def test_a_checkpoint_without_env_is_one_line(checkpoint, cli):
    code, _, err = cli("hooks", str(checkpoint))
    assert code == 2 and "--env" in err and err.count("\n") == 1
    code, _, err = cli("hooks", str(checkpoint) + ".missing", "--env", "procgen-maze")
    assert code == 2 and "does not exist" in err


def test_sae_train_and_eval_on_a_checkpoint(short, cli, tmp_path, store):
    out = tmp_path / "sae"
    args = ["sae", "train", short, "--hook", "embedder.block3.res2.resadd_out"]
    small = ["--width", "32", "--k", "4", "--tokens", "4000", "--batch-size", "256", "--episodes", "6"]
    small += ["--eval-episodes", "3", "--fidelity-episodes", "2", "--steer-episodes", "2", "--align-episodes", "6"]
    code, _, err = cli(*args, *small, "--out", str(out), "--no-progress")
    assert code == 0, err
    assert (out / "cfg.json").is_file() and (out / "card.md").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["subject_kind"] == "maze" and "fidelity" in metrics
    code, res, err = cli("sae", "eval", str(out), "--subject", short, "--episodes", "2", "--json")
    assert code == 0, err
    assert "reconstruction" in json.loads(res)
