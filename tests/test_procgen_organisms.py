"""Procgen maze organisms (`agents/procgen-maze-*.toml`): the recipe path on real procgen pixels (validation,
resumable behaviour cloning, `workbench train` end to end on a tiny recipe, artifact folders loading through the
`procgen-maze` kind and exporting to the published format) and, once trained, the shipped artifacts against their
cards. The shipped-artifact tests skip while `artifacts/agents/procgen-maze-*` are absent: on the 2-core CPU the
recipes' behaviour cloning stays at the label prior (see the recipes' header comments). Cheap: under a minute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.metrics import wilson_ci

ROOT = Path(__file__).resolve().parent.parent
NAMES = ("procgen-maze-cheese-corner", "procgen-maze-cheese-anywhere")

SHIPPED = [n for n in NAMES if (ROOT / "artifacts" / "agents" / n / "config.json").is_file()]
shipped = pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.skipif(n not in SHIPPED, reason=f"{n} not trained yet")) for n in NAMES],
)


def _metrics(name: str) -> dict:
    return json.loads((ROOT / "artifacts" / "agents" / name / "metrics.json").read_text())


@shipped
def test_card_reports_decision_square_steering_on_enough_mazes(name: str) -> None:
    st = _metrics(name)["decision_square"]["workbench"]
    assert st["n"] >= 200
    for cond in ("baseline", "steered", "control"):
        assert 0.0 <= st[cond]["mean"] <= 1.0 and len(st[cond]["mean_ci95"]) == 2
    card = (ROOT / "artifacts" / "agents" / name / "card.md").read_text()
    assert "0.81 -> 0.03" in card and "Wilson 95%" in card


@shipped
def test_artifacts_are_small_published_shape_safetensors(name: str) -> None:
    from workbench.rl.published import published_config

    folder = ROOT / "artifacts" / "agents" / name
    assert {p.name for p in folder.iterdir()} == {"weights.safetensors", "config.json", "card.md", "metrics.json"}
    assert sum(p.stat().st_size for p in folder.iterdir()) < 5_000_000
    config = json.loads((folder / "config.json").read_text())
    assert config["env"]["kind"] == "procgen-maze"
    assert config["policy"] == json.loads(json.dumps(published_config(1).to_dict()))
    assert config["recipe_path"] == f"agents/{name}.toml" and (ROOT / config["recipe_path"]).is_file()


@shipped
def test_loads_through_the_procgen_kind_and_exports_published(name: str, tmp_path: Path) -> None:
    from workbench.hooks import hook_names
    from workbench.rl.published import load_published, save_published
    from workbench.subjects import load_subject

    agent = load_subject(name)
    assert agent.kind == "procgen-maze" and agent.train_split in ("train", "ood")
    assert agent.world.config.max_steps == 500
    assert "embedder.block2.res1.resadd_out" in hook_names(agent.policy)
    with pytest.raises(WorkbenchError, match="not maze"):
        load_subject(name, env="maze")
    path = save_published(agent.policy, tmp_path / f"{name}.pth")
    back = load_published(path)
    x = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        assert torch.equal(back(x)[0], agent.policy(x)[0])
    assert load_subject(path, env="procgen-maze").kind == "procgen-maze"


# ------------------------------------------------------------------------------------- fresh measurements (procgen)
@pytest.fixture(scope="module")
def procgen():
    return pytest.importorskip("procgen")


@shipped
def test_fresh_expert_agreement_agrees_with_the_card(name: str, procgen) -> None:
    """256 new training-split frames: agreement with the expert's direction within the card's 99.9% interval."""
    from workbench.rl.procgen.train import collect_expert_frames, expert_agreement
    from workbench.subjects import load_subject

    agent = load_subject(name)
    cfg = agent.config["bc"]
    from workbench.rl.procgen.train import ProcgenBCConfig

    bc = ProcgenBCConfig(**{**cfg, "num_envs": 64})
    obs, actions, _ = collect_expert_frames("train", agent.world.config, bc, 256, seed=4242)
    fresh = expert_agreement(agent.policy, obs, actions)
    card = agent.metrics["expert_agreement"]["train"]
    lo, hi = wilson_ci(round(fresh["rate"] * fresh["n"]), fresh["n"], z=3.29)
    c_lo, c_hi = wilson_ci(round(card["rate"] * card["n"]), card["n"], z=3.29)
    assert lo <= c_hi and c_lo <= hi, (fresh, card)


@shipped
def test_fresh_decision_square_baseline_agrees_with_the_card(name: str, procgen) -> None:
    """48 new ood mazes: mean P(cheese-ward move) at the decision square, without intervention, near the card's."""
    from workbench.rl.steering import decision_square_probs
    from workbench.subjects import load_subject

    agent = load_subject(name)
    levels = agent.world.levels("ood", 48, 4242)
    found = decision_square_probs(agent, levels, {"baseline": None}, "embedder.block2.res1.resadd_out", -1.0)
    card = agent.metrics["decision_square"]["workbench"]["baseline"]["mean"]
    assert found["n"] >= 15
    assert abs(found["baseline"]["mean"] - card) < 0.25, (found["baseline"]["mean"], card)


def test_procgen_artifact_folder_loads_through_the_kind_and_exports(tmp_path: Path) -> None:
    """An agent folder whose config.json says env kind procgen-maze (what the recipes write) loads by folder through
    the procgen-maze kind, keeps the published hook names, round-trips through the published format; `.pth` loading
    is unchanged."""
    from dataclasses import asdict

    from workbench.hooks import hook_names
    from workbench.rl.agent import save_agent
    from workbench.rl.envs.procgen import ProcgenConfig
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import load_published, published_config, save_published
    from workbench.subjects import load_subject

    torch.manual_seed(0)
    policy = ImpalaPolicy(published_config(1))
    env = {"kind": "procgen-maze", "split": "train", **asdict(ProcgenConfig(game="maze", max_steps=40))}
    folder = save_agent(tmp_path / "pg-agent", policy, {"kind": "rl-agent", "env": env, "policy": asdict(policy.cfg)})
    agent = load_subject(folder)
    assert agent.kind == "procgen-maze" and agent.train_split == "train" and agent.name == "pg-agent"
    assert agent.world.config == ProcgenConfig(game="maze", max_steps=40)
    assert "embedder.block2.res1.resadd_out" in hook_names(agent.policy)
    assert load_subject(folder, env="procgen-maze").kind == "procgen-maze"
    with pytest.raises(WorkbenchError, match="not maze"):
        load_subject(folder, env="maze")
    x = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    path = save_published(agent.policy, tmp_path / "pg.pth")
    with torch.no_grad():
        assert torch.equal(load_published(path)(x)[0], policy(x)[0])
    assert load_subject(path, env="procgen-maze").policy.cfg == published_config(1)


def test_workbench_train_runs_a_tiny_procgen_recipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli, procgen
) -> None:
    """`workbench train` on a procgen-maze recipe: expert frames, BC, evaluation, decision-square steering, card;
    the folder loads as a procgen-maze subject and `--resume` reuses every finished phase."""
    from workbench.rl.procgen import train as ptrain
    from workbench.subjects import load_subject

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ptrain, "DECISION_LEVELS", 6)
    text = (ROOT / "agents" / f"{NAMES[0]}.toml").read_text()
    for old, new in [
        ('name = "procgen-maze-cheese-corner"', 'name = "pg-tiny"'),
        ("max_steps = 500", "max_steps = 20"),
        ("states = 60_000", "states = 96"),
        ("epochs = 2", "epochs = 1"),
        ("num_envs = 256", "num_envs = 16"),
        ("holdout = 2000", "holdout = 32"),
        ("episodes = 200", "episodes = 6"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(text)
    code, _, err = cli("train", str(recipe), "--out", str(tmp_path / "out"), "--no-progress")
    assert code == 0, err
    agent = load_subject(tmp_path / "out")
    assert agent.kind == "procgen-maze" and agent.world.config.max_steps == 20
    m = agent.metrics
    assert m["eval"]["train"]["n"] == 6 and m["training"]["bc_states"] == 96
    assert set(m["decision_square"]) == {"workbench", "procgen-tools"}
    assert "## Evaluation (6 episodes per split" in agent.card and "no PPO" in agent.card
    before = (tmp_path / "out" / "weights.safetensors").read_bytes()
    code, _, err = cli("train", str(recipe), "--out", str(tmp_path / "out2"), "--no-progress", "--resume")
    assert code == 0, err
    assert (tmp_path / "out2" / "weights.safetensors").read_bytes() == before


# ------------------------------------------------------------------------------------------------ the recipe path
def test_procgen_recipes_validate_and_refuse_other_networks(tmp_path: Path) -> None:
    from workbench.rl.procgen.train import ProcgenBCConfig
    from workbench.rl.train import load_recipe

    for name in NAMES:
        recipe = load_recipe(ROOT / "agents" / f"{name}.toml")
        assert recipe.env.kind == "procgen-maze" and isinstance(recipe.bc, ProcgenBCConfig)
        assert recipe.policy.obs_size == 64 and recipe.policy.n_actions == 15
    text = (ROOT / "agents" / f"{NAMES[0]}.toml").read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("[bc]", "[policy]\nhidden = 128\n\n[bc]"))
    with pytest.raises(WorkbenchError, match=r"\[policy\].*published IMPALA.*hidden = 128"):
        load_recipe(bad)
    bad.write_text(text.replace("keep = 0.25", "keep = 0.0"))
    with pytest.raises(WorkbenchError, match=r"\[bc\].*keep"):
        load_recipe(bad)


class _Interrupt(Exception):
    pass


def test_behaviour_cloning_resume_is_bit_identical(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from workbench.rl.policies import ImpalaPolicy, PolicyConfig
    from workbench.rl.procgen import train as ptrain

    tiny = PolicyConfig(in_channels=3, obs_size=64, channels=(4, 8), pool=(True, True), hidden=16, n_actions=15,
                        input_scale=1 / 255)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    obs = torch.randint(0, 256, (48, 3, 64, 64), dtype=torch.uint8, generator=gen)
    actions = torch.as_tensor(np.array([5, 3, 1, 7])[torch.randint(0, 4, (48,), generator=gen).numpy()])
    cfg = ptrain.ProcgenBCConfig(states=48, epochs=2, batch_size=8, checkpoint_every=4, seed=3)

    def run(folder: Path, resume: bool = False):
        torch.manual_seed(0)
        policy = ImpalaPolicy(tiny)
        history, _ = ptrain.behaviour_clone(policy, obs, actions, cfg, folder, resume=resume, progress=False)
        return policy, history

    whole, whole_hist = run(tmp_path / "a")
    save = ptrain._save_progress
    calls = {"n": 0}

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # after the checkpoint of minibatch 8 (of 12)
            raise _Interrupt

    monkeypatch.setattr(ptrain, "_save_progress", save_then_die)
    with pytest.raises(_Interrupt):
        run(tmp_path / "b")
    assert json.loads((tmp_path / "b" / ptrain.PROGRESS_STATE).read_text())["step"] == 8
    monkeypatch.setattr(ptrain, "_save_progress", save)
    resumed, resumed_hist = run(tmp_path / "b", resume=True)
    for (k, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), f"{k} differs after resume"
    assert resumed_hist == whole_hist and len(whole_hist) == 2
