"""The app on subjects that are not shipped organisms: a published-format procgen checkpoint written here (random
weights) typed into the Maze lab and Organisms pages, short-episode procgen subjects registered from Python (random
procgen policies rarely finish, so episodes are capped at 30 steps where a test plays them), and the Organisms
playback checked against the world's own evaluation, episode for episode."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.rl.agent import load_agent, make_agent
from workbench.rl.envs.procgen import ProcgenConfig
from workbench.rl.policies import ImpalaPolicy
from workbench.rl.published import published_config, save_published
from workbench.rl.rollout import run_episodes
from workbench.rl.steering import DEFAULT_LAYER
from workbench.subjects import load_subject, register_subject

pytest.importorskip("streamlit")
pytest.importorskip("procgen")
from streamlit.testing.v1 import AppTest  # noqa: E402

torch.set_num_threads(1)
APP = Path(__file__).resolve().parent.parent / "app"
MAZE_30 = "app-test-procgen-maze-30"  # registered subjects: procgen worlds with 30-step episodes
COINRUN_30 = "app-test-procgen-coinrun-30"


def random_published(seed: int = 0) -> ImpalaPolicy:
    torch.manual_seed(seed)
    return ImpalaPolicy(published_config())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight checkpoint in the published goal-misgeneralization format."""
    return save_published(random_published(), tmp_path_factory.mktemp("ckpt") / "model.pth")


@pytest.fixture(scope="module", autouse=True)
def short_procgen_subjects() -> None:
    """Two subjects registered from Python, as a user would: the same kind of policy, procgen worlds of 30 steps."""
    for name, game in ((MAZE_30, "maze"), (COINRUN_30, "coinrun")):
        policy = random_published(1)
        register_subject(
            name,
            lambda p=policy, g=game, n=name: make_agent(
                p, env=f"procgen-{g}", env_config=ProcgenConfig(game=g, max_steps=30), name=n
            ),
        )


@pytest.fixture()
def app_env(registry: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_APP_PROBE_EPISODES", "24")
    return registry


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(APP / name), default_timeout=180)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def shown(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def images(at: AppTest) -> int:
    return len(at.get("image"))


def app_common():
    if str(APP) not in sys.path:
        sys.path.insert(0, str(APP))
    import common

    return common


# ------------------------------------------------------------------------------------------------------- Maze lab
def test_maze_lab_on_a_published_checkpoint(app_env: Path, checkpoint: Path) -> None:
    """The .pth typed into the Maze lab: procgen's own maze 0, its vector field and decision square, a cheese vector
    before/after, a channel clamp and the cheese probe heatmap; moving the cheese moves the decision square."""
    from workbench.rl.maze_parity import decision_squares_by

    agent = load_subject(checkpoint, env="procgen-maze")
    base = agent.world.levels("ood", 1, 0)
    at = page(
        "pages/2_Maze_lab.py",
        lab_agent_path=str(checkpoint),
        lab_agent_env="procgen-maze",
        lab_probe_layers=[DEFAULT_LAYER],
    )
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="lab_agent").disabled  # the typed checkpoint wins over the organism list
    assert (at.number_input(key="lab_mouse_row").value, at.number_input(key="lab_mouse_col").value) == tuple(
        int(v) for v in base.mouse[0]
    )
    ds = decision_squares_by(base, "workbench")[0]
    assert shown(at)["Decision square"] == ("none" if ds[0] < 0 else f"({ds[0]}, {ds[1]})")
    assert images(at) == 3  # the vector field, the probe heatmap and the retarget panel's fields
    assert any(f"{base.world_size}x{base.world_size}" in c.value for c in at.caption)

    # Another cheese cell: the decision square follows the procgen maze's own grid.
    taken = {tuple(int(v) for v in base.mouse[0]), tuple(int(v) for v in base.cheese[0])}
    for cell in base.free_cells(0):
        cell = (int(cell[0]), int(cell[1]))
        if cell in taken:
            continue
        moved = decision_squares_by(base.with_cheese(np.array([cell])), "workbench")[0]
        if tuple(moved) != tuple(ds):
            break
    at.number_input(key="lab_cheese_row").set_value(cell[0])
    at.number_input(key="lab_cheese_col").set_value(cell[1])
    at.session_state["lab_probe_layers"] = []
    at.run()
    assert not at.exception and not at.error
    assert shown(at)["Decision square"] == ("none" if moved[0] < 0 else f"({moved[0]}, {moved[1]})")

    # A cheese vector and a channel clamp draw the field before and after (one figure, two panels).
    at.slider(key="lab_cv_coef").set_value(-1.0)
    at.checkbox(key="lab_clamp_on").check()
    at.run()
    assert not at.exception and not at.error
    assert images(at) == 2  # that figure and the retarget panel's
    # The mouse on the cheese's cell: where the world does not count it as a free cell (procgen: the episode would be
    # over), a named error, never a crash.
    at.number_input(key="lab_mouse_row").set_value(cell[0])
    at.number_input(key="lab_mouse_col").set_value(cell[1])
    at.run()
    assert not at.exception
    free = base.with_cheese(np.array([cell])).free_cells(0)
    if not np.all(free == np.array(cell), axis=1).any():
        assert at.error and "cheese" in at.error[0].value


def test_maze_lab_says_what_it_cannot_serve(app_env: Path, checkpoint: Path) -> None:
    """A CoinRun world is one info line on the Maze lab; a missing checkpoint one error line; neither a traceback."""
    at = page("pages/2_Maze_lab.py", lab_agent_path=str(checkpoint), lab_agent_env="procgen-coinrun")
    assert not at.exception and not at.error
    assert [i.value for i in at.info if "maze worlds" in i.value and "procgen-coinrun" in i.value]
    at = page("pages/2_Maze_lab.py", lab_agent_path=str(checkpoint.with_name("missing.pth")))
    assert not at.exception
    assert at.error and "missing.pth" in at.error[0].value and "does not exist" in at.error[0].value


# ------------------------------------------------------------------------------------------------------ Organisms
def test_organisms_plays_a_published_checkpoint(app_env: Path, checkpoint: Path) -> None:
    """The .pth on Organisms: no card, procgen frames played back (capped at 20 steps), 15 named actions."""
    at = page("pages/1_Organisms.py", org_agent_path=str(checkpoint), org_agent_env="procgen-maze", org_max_steps=20)
    assert not at.exception and not at.error, [e.value for e in at.error]
    out = shown(at)
    assert {"Cheese reached", "Corner region first", "Episode ended", "Steps"} <= set(out)
    assert out["Steps"] == "20" or out["Episode ended"] == "yes"
    assert 1 <= at.slider(key="org_step").max <= 20
    at.slider(key="org_step").set_value(1).run()
    assert not at.exception
    assert any("Action taken at step 1" in m.value for m in at.markdown)
    assert any("stops after 20" in c.value for c in at.caption)


def test_organisms_rates_and_playback_of_a_registered_subject(app_env: Path) -> None:
    """A registered procgen subject: the page evaluates it (the eval verb: rates with CIs) and plays back the very
    episode the world's own `run` plays on that level with that action seed."""
    at = page("pages/1_Organisms.py", org_agent_path=MAZE_30, org_eval=True, org_eval_episodes=3, org_seed=2)
    assert not at.exception and not at.error, [e.value for e in at.error]
    (rates,) = [d.value for d in at.dataframe if "outcome" in d.value]
    assert set(rates["outcome"]) == {"cheese", "corner_first", "timeout"}
    assert rates.loc[rates["episodes"] == "all", "n"].tolist() == [3, 3, 3]
    agent = load_subject(MAZE_30)
    rec = agent.world.run(agent.policy, agent.world.levels("ood", 1, 2), seed=0)
    out = shown(at)
    assert out["Episode ended"] == ("yes" if rec.length[0] else "no")
    assert out["Steps"] == str(int(rec.length[0]) or 30)
    assert out["Cheese reached"] == ("yes" if rec.cheese_reached[0] else "no")


def test_playback_is_the_episode_evaluation_plays(registry: Path) -> None:
    """The app's playback (the one loop with an on_step callback) reports, for native mazes, exactly what
    `run_episodes` reports, with one probability row per action and one frame per state reached (the last one with
    the mouse on the cheese when it got there)."""
    common = app_common()
    agent = load_agent("tiny-maze")
    ref = common.subject_ref("tiny-maze")
    reached = 0
    for seed in range(4):
        level = agent.world.levels("ood", 1, seed)
        for action_seed in range(3):
            ep = common.playback(ref, "ood", seed, action_seed)
            rec = run_episodes(agent.policy, level, agent.env_config, seed=action_seed)
            flags = {k: bool(v[0]) for k, v in rec.flags().items()}
            assert ep["outcome"] == {**flags, "ended": True, "steps": int(rec.length[0])}
            assert len(ep["actions"]) == len(ep["probs"]) == int(rec.length[0])
            assert len(ep["frames"]) == len(ep["actions"]) + int(rec.cheese_reached[0])
            assert np.allclose(ep["probs"].sum(1), 1.0)
            reached += int(rec.cheese_reached[0])
    assert reached  # the comparison covers episodes that end at the cheese, not only timeouts


# ---------------------------------------------------------------------------------------------------- CoinRun lab
def test_coinrun_lab_on_a_procgen_coinrun_subject(app_env: Path) -> None:
    """Procgen CoinRun gets what its kind supports, said in one info line: evaluation and coin-vector steering."""
    at = page(
        "pages/3_CoinRun_lab.py",
        coinrun_agent_path=COINRUN_30,
        coinrun_verb_levels=3,
        coinrun_eval=True,
        coinrun_verb_steer=True,
    )
    assert not at.exception and not at.error and not at.warning, [e.value for e in [*at.error, *at.warning]]
    (line,) = [i.value for i in at.info if "procgen-coinrun" in i.value]
    assert "eval, steer" in line and "native CoinRun" in line
    frames = [d.value for d in at.dataframe]
    (rates,) = [f for f in frames if "outcome" in f and "condition" not in f]
    assert {"coin", "exit"} <= set(rates["outcome"])
    (steer,) = [f for f in frames if "condition" in f]
    assert set(steer["condition"]) == {"baseline", "steered", "control"}
    assert any("mean norm" in c.value for c in at.caption)
    # A maze subject here is the same one line the Maze lab gives a CoinRun subject.
    at = page("pages/3_CoinRun_lab.py", coinrun_agent_path=MAZE_30)
    assert not at.exception and [i.value for i in at.info if "coinrun worlds" in i.value]


# ------------------------------------------------------------------------------------------------------- Features
def test_features_explorer_on_a_procgen_subject(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SAE trained on a procgen maze subject the app cannot find by name: the page asks for its checkpoint, and
    with the subject typed in it encodes procgen start states and steers the procgen vector field with a latent."""
    from workbench.sae.subjects import load_subject as sae_subject
    from workbench.sae.train import SAESpec, train_sae

    monkeypatch.setenv("WORKBENCH_APP_SAE_SAMPLE", "6")
    subject = sae_subject(MAZE_30)
    ds = subject.collect([DEFAULT_LAYER], n=6, seed=0, states="start", progress=False)
    train_sae(
        ds,
        DEFAULT_LAYER,
        SAESpec(width=16, k=2, tokens=1024, batch_size=256),
        out=app_env / "saes" / "procgen-sae",
        metadata={"model_name": "someone-elses-model.pth"},
        progress=False,
    )
    at = page("pages/5_Features.py")
    assert not at.exception
    assert any("someone-elses-model.pth" in w.value and "checkpoint path" in w.value for w in at.warning)
    at = page("pages/5_Features.py", feat_subject_path=MAZE_30, feat_latent=0)
    assert not at.exception and not at.warning and not at.error, [w.value for w in [*at.warning, *at.error]]
    assert {"Density", "Mean arrow change per cell"} <= set(shown(at))
    assert any("procgen frames" in c.value for c in at.caption)
    at.radio(key="feat_mode").set_value("add decoder direction").run()
    assert not at.exception and not at.error
