"""Feature views (`workbench.sae.views`): each kind's sample / top examples / steering on small samples, the generic
RL views on a kind that registers none (keys-chests), the registry lookup, and the controls' validation."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.sae.views import RL_VIEWS, Control, FeatureViews, views_for
from workbench.subjects import SubjectKind, get_kind, register_kind

torch.set_num_threads(1)
HOOK = "embedder.block2.res1.resadd_out"
SAES = artifacts.repo_root() / "artifacts" / "saes"


@pytest.fixture(autouse=True)
def _close_figures():
    """Views return open matplotlib figures (the page closes them after drawing); close them after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def shipped_sae(name: str):
    """A shipped SAE and its subject; skipped when the SAE or its organism is not in this checkout."""
    from workbench.sae.subjects import load_subject
    from workbench.sae.train import load_sae, sae_info

    if not (SAES / name / "cfg.json").is_file():
        pytest.skip(f"SAE {name} is not shipped in this checkout")
    sae = load_sae(SAES / name)
    try:
        subject = load_subject(sae_info(sae)["subject"])
    except WorkbenchError as err:
        pytest.skip(f"the subject of {name} does not load here: {err}")
    return sae, subject


def check_rates_table(table: pd.DataFrame, outcomes: tuple[str, ...], n: int) -> None:
    """Conditions x outcomes, each rate inside its Wilson interval, n episodes, no difference for the baseline."""
    assert list(dict.fromkeys(table["condition"])) == ["baseline", "steered", "control"]
    assert list(dict.fromkeys(table["outcome"])) == list(outcomes)
    assert (table["n"] == n).all()
    assert ((table["ci95 low"] <= table["rate"]) & (table["rate"] <= table["ci95 high"])).all()
    base = table[table["condition"] == "baseline"]
    assert base["diff vs baseline"].isna().all()
    rest = table[table["condition"] != "baseline"]
    assert (
        (rest["diff ci95 low"] <= rest["diff vs baseline"]) & (rest["diff vs baseline"] <= rest["diff ci95 high"])
    ).all()


# ---------------------------------------------------------------------------------------------- shipped SAEs
@pytest.mark.shipped
def test_maze_views_on_the_shipped_maze_sae() -> None:
    """Start states of OOD mazes, the top states drawn as mazes, and the vector field moved by adding the latent's
    decoder direction, next to its random-direction control."""
    from workbench.rl.maze.features import MODES, VIEWS
    from workbench.sae.analysis import latent_acts

    sae, subject = shipped_sae("maze-cheese-corner")
    views = views_for(subject)
    assert views is VIEWS and views is get_kind("maze").features
    sample = views.sample(sae, subject, 6)
    assert sample.unit == "levels" and "start states of 6 ood levels" in sample.note
    direct = subject.collect([HOOK], split="ood", n=6, seed=0, states="start", progress=False)
    torch.testing.assert_close(sample.feats, latent_acts(sae, direct[HOOK]))
    assert sample.feats.shape == (6, 64, 8, 8)

    latent = int(sample.feats.amax(dim=(0, 2, 3)).argmax())
    top = views.top_examples(sample, latent)
    assert len(top.table) == 6 and {"level_seed", "cheese_cell", "max_activation"} <= set(top.table.columns)
    assert top.table["max_activation"].is_monotonic_decreasing
    assert top.figure is not None and "Maze renders" in top.caption

    result = views.run_steer(sae, subject, latent, mode=MODES[1], coef=5.0, seed=2)
    assert result.figure is not None and result.settings == {"mode": MODES[1], "coef": 5.0, "seed": 2}
    moved = float(result.metrics["Mean arrow change per cell"])
    assert moved > 0 and "Mean arrow change per cell (control)" in result.metrics
    assert result.to_json()["arrow_change"] == pytest.approx(moved, abs=5e-4)
    zero = views.run_steer(sae, subject, latent, mode=MODES[1], coef=0.0, seed=2)
    assert float(zero.metrics["Mean arrow change per cell"]) == 0.0  # adding nothing moves nothing
    again = views.run_steer(sae, subject, latent, mode=MODES[1], coef=5.0, seed=2)
    assert again.metrics == result.metrics  # seeded: the same maze and control direction


@pytest.mark.shipped
def test_coinrun_views_on_the_shipped_coinrun_sae() -> None:
    """Rollout states with their coin labels, and steering through the generic RL comparison: coin / exit rates of the
    un-intervened, steered and random-direction runs on the same levels; coefficient 0 is the un-intervened run."""
    from workbench.rl.coinrun.features import VIEWS

    sae, subject = shipped_sae("coinrun-coin-at-exit")
    views = views_for(subject)
    assert views is VIEWS and get_kind("procgen-coinrun").features is VIEWS
    sample = views.sample(sae, subject, 4)
    assert "rollout states of 4 ood levels" in sample.note
    assert sample.feats.shape[1:] == (128, 4, 4) and len(sample.data) == sample.feats.shape[0] > 4
    top = views.top_examples(sample, 0)
    assert {"coin_visible", "coin_dx", "coin_dy", "max_activation"} <= set(top.table.columns) and top.figure is None

    outcomes = tuple(subject.agent.world.rate_keys)
    result = views.run_steer(sae, subject, 0, coef=2.0, episodes=24, seed=0)
    check_rates_table(result.table, outcomes, 24)
    assert result.figure is not None and result.metrics["Episodes"] == "24"
    json = result.to_json()
    assert json["settings"] == {"coef": 2.0, "episodes": 24, "seed": 0} and len(json["table"]) == 3 * len(outcomes)
    zero = views.run_steer(sae, subject, 0, coef=0.0, episodes=24, seed=0).table.set_index(["condition", "outcome"])
    np.testing.assert_array_equal(zero.loc["steered", "rate"].to_numpy(), zero.loc["baseline", "rate"].to_numpy())
    base = result.table.set_index(["condition", "outcome"]).loc["baseline", "rate"].to_numpy()
    np.testing.assert_array_equal(base, zero.loc["baseline", "rate"].to_numpy())  # the same levels and action seed


@pytest.mark.shipped
def test_lm_views_on_the_shipped_persona_sae() -> None:
    """Every token of a few dialogues, the top tokens in context, and one prompt answered three ways."""
    from workbench.lm.features import GROUPS, VIEWS

    sae, subject = shipped_sae("persona-lm")
    views = views_for(subject)
    assert views is VIEWS and views.unit == "dialogues"
    sample = views.sample(sae, subject, 4)
    words, feats = sample.data
    assert len(words) == 4 and sample.feats.shape == (sum(len(w) for w in words), 256)
    latent = int(sample.feats.amax(0).argmax())
    top = views.top_examples(sample, latent)
    assert not top.table.empty and all("[[" in c for c in top.table["context"])
    assert top.table["activation"].iloc[0] == pytest.approx(float(sample.feats[:, latent].max()), rel=1e-5)

    result = views.run_steer(sae, subject, latent, polarity=-1, group=GROUPS[0], coef=2.0)
    assert result.table["condition"].tolist() == ["none", "steered", "random"]
    assert result.prompt is not None and result.settings["polarity"] == -1 and "x-1" in result.caption
    flipped = views.run_steer(sae, subject, latent, polarity=1, group=GROUPS[0], coef=2.0)
    assert flipped.table["logit_diff"].iloc[0] == pytest.approx(result.table["logit_diff"].iloc[0])  # no hook
    assert flipped.table["logit_diff"].iloc[1] != pytest.approx(result.table["logit_diff"].iloc[1], abs=1e-6)


# ------------------------------------------------------------------------------- generic RL views (keys-chests)
@pytest.fixture(scope="module")
def keys_chests():
    """A random tiny keys-chests policy with 20-step episodes and an SAE trained on its rollout activations."""
    from workbench.rl.agent import make_agent
    from workbench.rl.keys_chests.env import OBS_CHANNELS, KeysChestsConfig
    from workbench.rl.policies import ImpalaPolicy, PolicyConfig
    from workbench.rl.verbs import collect
    from workbench.sae.train import SAESpec, train_sae

    config = KeysChestsConfig(max_steps=20)
    torch.manual_seed(0)
    policy = ImpalaPolicy(PolicyConfig(len(OBS_CHANNELS), config.size + 2, (4, 8, 8), (False, True, True), 16, 4))
    agent = make_agent(policy, env="keys-chests", env_config=config, name="tiny-keys-chests")
    ds = collect(agent, HOOK, split="ood", episodes=8, seed=1, states="rollout", max_states_per_episode=8)
    sae = train_sae(
        ds,
        HOOK,
        SAESpec(width=16, k=2, tokens=4096, batch_size=256),
        metadata={"model_name": agent.name},
        progress=False,
    )
    return agent, sae


def test_generic_rl_views_on_a_kind_without_its_own(keys_chests) -> None:
    """keys-chests registers no feature views: it gets the generic RL ones, with its own labels and goal rates."""
    from workbench.sae.subjects import PolicySubject

    agent, sae = keys_chests
    assert get_kind("keys-chests").features is None
    subject = PolicySubject(agent)
    views = views_for(subject)
    assert views is RL_VIEWS and views_for(agent) is RL_VIEWS
    sample = views.sample(sae, subject, 5)
    assert sample.feats.shape[1] == 16 and "rollout states of 5 ood levels" in sample.note
    assert sample.data.labels["split"].eq("ood").all() and "has_key" in sample.data.labels.columns
    latent = int(sample.feats.amax(dim=(0, 2, 3)).argmax())
    top = views.top_examples(sample, latent)
    assert len(top.table) == 6 and {"has_key", "keys_left", "max_activation"} <= set(top.table.columns)
    assert top.table["max_activation"].iloc[0] == pytest.approx(float(sample.feats[:, latent].max()))

    result = views.run_steer(sae, agent, latent, episodes=10)  # a registry subject works as well
    check_rates_table(result.table, tuple(agent.world.rate_keys), 10)
    assert result.settings == {"coef": 1.0, "episodes": 10, "seed": 0}  # the controls' defaults
    assert result.to_json()["activation_norm"] > 0 and result.metrics["Added norm"] == "1.000"  # unit decoder rows
    assert "equal-norm random direction" in result.caption and result.to_json()["hook"] == HOOK
    zero = views.run_steer(sae, agent, latent, coef=0.0, episodes=10).table.set_index(["condition", "outcome"])
    np.testing.assert_array_equal(zero.loc["steered", "rate"].to_numpy(), zero.loc["baseline", "rate"].to_numpy())
    big = views.run_steer(sae, agent, latent, coef=-5.0, episodes=10)
    diffs = big.table[big.table["condition"] != "baseline"]["diff vs baseline"].to_numpy()
    assert np.isfinite(diffs).all()


def test_views_follow_the_registry(keys_chests, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kind's own views win over the generic ones; a kind with neither views nor a world is one line."""
    from workbench import subjects

    monkeypatch.setattr(subjects, "_KINDS", dict(subjects._KINDS))  # test kinds vanish with the test
    agent, _ = keys_chests
    own = FeatureViews(unit="rooms", sample=RL_VIEWS.sample, top_examples=RL_VIEWS.top_examples)
    register_kind(replace(get_kind("keys-chests"), name="features-test-kind", features=own))
    assert views_for(replace(agent, kind="features-test-kind")) is own
    with pytest.raises(WorkbenchError, match="steering with SAE latents is not available for features-test-kind"):
        own.run_steer(None, replace(agent, kind="features-test-kind"), 0)

    class Bare:
        kind = "features-test-bare"

    register_kind(SubjectKind(name="features-test-bare", summary="no world", load=lambda ref: Bare()))
    with pytest.raises(WorkbenchError, match=r"no feature views.*SubjectKind\(features="):
        views_for(Bare())


def test_a_kind_registered_from_python_brings_its_own_card_analyses(
    keys_chests, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`workbench sae train` reaches a kind's card analyses through its views: metrics, card sections and files of
    a kind registered from Python land in its SAE folder; the same agent under a kind without them gets none."""
    import json

    from workbench import subjects
    from workbench.sae.artifact import build_sae_artifact
    from workbench.sae.train import SAESpec
    from workbench.sae.views import CardAnalyses

    monkeypatch.setattr(subjects, "_KINDS", dict(subjects._KINDS))  # test kinds and subjects vanish with the test
    monkeypatch.setattr(subjects, "_SUBJECTS", dict(subjects._SUBJECTS))
    agent, _ = keys_chests
    calls = []

    def card(sae, subject, hook, *, align_episodes, steer_episodes, seed, progress):
        calls.append((subject.name, hook, align_episodes, steer_episodes, seed, progress))
        d_sae = int(sae.W_dec.shape[0])
        return CardAnalyses(
            metrics={"room_latents": {"d_sae": d_sae}},
            sections=(f"## Rooms\n\nThe card-test analysis saw {d_sae} latents.",),
            files={"rooms.txt": "rooms\n"},
        )

    register_kind(replace(get_kind("keys-chests"), name="card-test-kind", features=replace(RL_VIEWS, card=card)))
    subjects.register_subject("card-test-agent", lambda: replace(agent, kind="card-test-kind"))
    subjects.register_subject("card-test-plain", lambda: agent)
    spec = SAESpec(width=8, k=2, tokens=256 * 2, batch_size=256)
    sizes = dict(episodes=4, eval_episodes=2, fidelity_episodes=2, align_episodes=6, steer_episodes=3, seed=5)
    own = build_sae_artifact(
        "card-test-agent", HOOK, spec, out=tmp_path / "own", progress=False, work=tmp_path / "w", **sizes
    )
    assert calls == [("tiny-keys-chests", HOOK, 6, 3, 5, False)]
    metrics = json.loads((own / "metrics.json").read_text())
    card_md = (own / "card.md").read_text()
    assert metrics["room_latents"] == {"d_sae": 8} and (own / "rooms.txt").read_text() == "rooms\n"
    assert "## Rooms\n\nThe card-test analysis saw 8 latents." in card_md
    assert card_md.index("## Downstream fidelity") < card_md.index("## Rooms")
    plain = build_sae_artifact(
        "card-test-plain", HOOK, spec, out=tmp_path / "plain", progress=False, work=tmp_path / "w2", **sizes
    )
    assert len(calls) == 1 and "## Rooms" not in (plain / "card.md").read_text()
    assert "room_latents" not in json.loads((plain / "metrics.json").read_text())
    assert not (plain / "rooms.txt").exists()
    ood = metrics["fidelity"]["ood"]
    assert ood["score"] == ood["goal_keys"][0]  # no score in the views: the first goal rate


def test_controls_are_checked_before_anything_runs() -> None:
    from workbench.rl.maze.features import VIEWS

    assert VIEWS.settings({}) == {c.name: c.default for c in VIEWS.controls}
    assert [c.key for c in VIEWS.controls] == ["feat_mode", "feat_coef", "feat_seed"]  # the app's widget keys
    with pytest.raises(WorkbenchError, match="unknown steering setting 'coeff'.*coef"):
        VIEWS.settings({"coeff": 1.0})
    with pytest.raises(WorkbenchError, match="coef must be in"):
        VIEWS.settings({"coef": 99.0})
    with pytest.raises(WorkbenchError, match="unknown mode"):
        VIEWS.settings({"mode": "nudge"})
    with pytest.raises(WorkbenchError, match="not one of"):
        Control("mode", "k", "Mode", "radio", "c", options=("a", "b"))
    with pytest.raises(WorkbenchError, match="control widget"):
        Control("x", "k", "X", "dial", 0)
    assert RL_VIEWS.settings({"episodes": "12"})["episodes"] == 12


def test_views_are_registered_for_every_builtin_kind_that_has_them() -> None:
    from workbench.lm.features import VIEWS as LM
    from workbench.rl.coinrun.features import VIEWS as COINRUN
    from workbench.rl.maze.features import VIEWS as MAZE

    assert get_kind("maze").features is MAZE and get_kind("procgen-maze").features is MAZE
    assert get_kind("coinrun").features is COINRUN and get_kind("procgen-coinrun").features is COINRUN
    assert get_kind("lm").features is LM
    assert get_kind("colour-shape").features is None  # generic RL views through views_for


def test_the_features_page_names_no_kind() -> None:
    """The page reaches every kind through its views: no `kind ==` tests, no family names in its logic."""
    import re

    text = (Path(__file__).resolve().parent.parent / "app" / "pages" / "5_Features.py").read_text()
    assert not re.search(r"""kind\s*[!=]=|==\s*["'](maze|coinrun|lm)["']""", text)


def test_policy_subject_collects_through_its_kind(keys_chests, monkeypatch: pytest.MonkeyPatch) -> None:
    """`PolicySubject.collect` (what `workbench sae train` reads) goes through the kind's `collect` verb: keys-chests
    gets its own labels (it failed inside the maze collector before), and a kind without the verb is one line."""
    from dataclasses import replace

    import workbench.subjects as subjects
    from workbench.errors import WorkbenchError
    from workbench.sae.subjects import PolicySubject

    agent, _ = keys_chests
    ds = PolicySubject(agent).collect(HOOK, split="ood", n=3, seed=2, progress=False)
    assert {"has_key", "keys_left"} <= set(ds.labels.columns) and len(ds) > 3
    kind = subjects.get_kind("keys-chests")
    verbs = {k: v for k, v in kind.verbs.items() if k != "collect"}
    monkeypatch.setitem(subjects._KINDS, "no-collect-kind", replace(kind, name="no-collect-kind", verbs=verbs))
    monkeypatch.setattr(agent, "kind", "no-collect-kind")
    with pytest.raises(WorkbenchError, match="`collect` is not available for no-collect-kind"):
        PolicySubject(agent).collect(HOOK, n=2)
