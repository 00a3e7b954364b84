"""The Streamlit app, driven headless with AppTest against the tiny random agent of the `registry` fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from workbench import artifacts
from workbench.rl.agent import ENV_KINDS, load_agent
from workbench.rl.envs.maze import decision_squares
from workbench.store import ResultStore

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

torch.set_num_threads(1)  # the pages run in-process; tiny convs get only contention from extra threads on a shared CPU
APP = Path(__file__).resolve().parent.parent / "app"
# Organisms and Maze lab run (and are checked for exceptions) in their own tests below.
PAGES = [
    "Home.py",
    "pages/3_CoinRun_lab.py",
    "pages/4_Probes_and_batteries.py",
    "pages/5_Features.py",
    "pages/6_Personas.py",
]
SEED = 0  # the maze the Maze lab tests edit


@pytest.fixture()
def app_env(registry: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_APP_PROBE_EPISODES", "40")
    monkeypatch.setenv("WORKBENCH_APP_COINRUN_LEVELS", "12")  # CoinRun lab batch steering rates: a small batch
    return registry


def page(name: str, **state) -> AppTest:
    at = AppTest.from_file(str(APP / name), default_timeout=120)
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def decision_text(at: AppTest) -> str:
    (metric,) = [m for m in at.metric if m.label == "Decision square"]
    return metric.value


def tiny_maze():
    """Maze SEED of the ood split, as the app draws it for the registry's tiny agent (the subject's world)."""
    return load_agent("tiny-maze").world.levels("ood", 1, SEED)


def moved_cheese() -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """(free cell for the cheese, decision square before, decision square after) with the two squares differing."""
    base = tiny_maze()
    before = tuple(int(v) for v in decision_squares(base)[0])
    for cell in base.free_cells(0):
        if tuple(cell) in (tuple(base.mouse[0]), tuple(base.cheese[0])):
            continue
        after = tuple(int(v) for v in decision_squares(base.with_cheese(cell[None, :]))[0])
        if after != before:
            return (int(cell[0]), int(cell[1])), before, after
    raise AssertionError("no cheese cell changes the decision square of this maze")


def fmt(cell: tuple[int, int]) -> str:
    return "none" if cell[0] < 0 else f"({cell[0]}, {cell[1]})"


@pytest.mark.parametrize("name", PAGES)
def test_every_page_runs(app_env: Path, name: str) -> None:
    at = page(name, org_agent="tiny-maze", lab_agent="tiny-maze")
    assert not at.exception


def test_organisms_shows_card_and_playback(app_env: Path) -> None:
    at = page("pages/1_Organisms.py", org_agent="tiny-maze")
    assert not at.exception
    assert at.selectbox(key="org_agent").value == "tiny-maze"
    assert any("tiny" in m.value for m in at.markdown)
    assert at.slider(key="org_step").max >= 1
    at.slider(key="org_step").set_value(1).run()
    assert not at.exception


def test_maze_lab_cheese_edit_moves_decision_square(app_env: Path) -> None:
    cell, before, after = moved_cheese()
    at = page("pages/2_Maze_lab.py", lab_agent="tiny-maze", lab_seed=SEED)
    assert not at.exception
    assert at.selectbox(key="lab_agent").value == "tiny-maze"
    assert decision_text(at) == fmt(before)
    at.number_input(key="lab_cheese_row").set_value(cell[0])
    at.number_input(key="lab_cheese_col").set_value(cell[1])
    at.run()
    assert not at.exception and not at.error
    assert decision_text(at) == fmt(after) != fmt(before)

    # Interventions: a cheese vector and a channel clamp give a before/after pair; removing the cheese is no error.
    at.slider(key="lab_cv_coef").set_value(-1.0)
    at.checkbox(key="lab_clamp_on").check()
    at.run()
    assert not at.exception and not at.error
    at.checkbox(key="lab_remove_cheese").check().run()
    assert not at.exception and not at.error
    assert decision_text(at) == "none"


def test_maze_lab_cheese_on_wall_is_an_error_not_a_crash(app_env: Path) -> None:
    base = tiny_maze()
    wall = np.argwhere(base.walls[0])[0]
    at = page("pages/2_Maze_lab.py", lab_agent="tiny-maze", lab_seed=SEED)
    at.number_input(key="lab_cheese_row").set_value(int(wall[0]))
    at.number_input(key="lab_cheese_col").set_value(int(wall[1]))
    at.run()
    assert not at.exception
    assert any("wall" in e.value and f"({wall[0]}, {wall[1]})" in e.value for e in at.error)
    # Outside the world: also a named, recoverable error.
    at.number_input(key="lab_cheese_row").set_value(-3).run()
    assert not at.exception
    assert any("outside" in e.value and "free cell" in e.value for e in at.error)


def test_probes_page_empty_store_says_how_to_fill_it(app_env: Path) -> None:
    at = page("pages/4_Probes_and_batteries.py")
    assert not at.exception
    assert any("workbench demo" in i.value and "workbench battery run probes/" in i.value for i in at.info)
    assert not at.dataframe


def test_probes_page_shows_store_rows(app_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "store.duckdb"
    layers = ["embedder.block1.res2.resadd_out", "embedder.block2.res1.resadd_out"]
    rows = [
        {"run_id": "r1", "subject": "tiny-maze", "split": "ood", "metric": "rate.cheese", "value": 0.5, "n": 10},
        *(
            {
                "run_id": "r1",
                "subject": "tiny-maze",
                "split": "ood",
                "metric": f"probe.cheese_top1.{layer}",
                "value": v,
                "ci_low": v - 0.1,
                "ci_high": v + 0.05,
                "n": 100,
            }
            for layer, v in zip(layers, (0.9, 0.6), strict=True)
        ),
    ]
    with ResultStore(path) as store:
        store.add(rows)
    monkeypatch.setenv("WORKBENCH_STORE", str(path))
    at = page("pages/4_Probes_and_batteries.py")
    assert not at.exception
    assert at.dataframe and len(at.dataframe[0].value) == 3
    at.text_input(key="store_metric_contains").input("probe.").run()
    assert not at.exception and len(at.dataframe[0].value) == 2


@pytest.mark.parametrize("name", ["pages/1_Organisms.py", "pages/2_Maze_lab.py"])
def test_no_organisms_is_a_warning_with_the_train_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path / "empty"))
    at = page(name)
    assert not at.exception
    assert any("train it with `workbench train agents/" in w.value for w in at.warning)


# ------------------------------------------------------------------------------------------ pages awaiting organisms
def write_artifact(folder: Path, config: dict, card: str, metrics: dict | None = None) -> None:
    """A minimal artifact folder (config, card, metrics) as a recipe writes one; no weights needed by these pages."""
    with artifacts.writing(folder) as tmp:
        artifacts.write_json(tmp / artifacts.CONFIG, config)
        artifacts.write_json(tmp / artifacts.METRICS, metrics or {})
        (tmp / artifacts.CARD).write_text(card)


def make_tiny_coinrun_agent(folder: Path, card: str, metrics: dict, seed: int = 0) -> None:
    """A random tiny CoinRun policy saved as an agent artifact (30-step episodes)."""
    from workbench.rl.agent import save_agent
    from workbench.rl.envs.coinrun import N_ACTIONS, OBS_CHANNELS, CoinRunConfig
    from workbench.rl.policies import ImpalaPolicy, PolicyConfig

    env = CoinRunConfig(max_steps=30)
    cfg = PolicyConfig(len(OBS_CHANNELS), env.window, (4, 8, 8), (True, True, True), 16, N_ACTIONS)
    torch.manual_seed(seed)
    config = {"kind": "rl-agent", "env": {"kind": "coinrun", "split": "train", **env.__dict__}, "policy": cfg.to_dict()}
    save_agent(folder, ImpalaPolicy(cfg), config, card=card, metrics=metrics)


def eval_metrics(rate: float) -> dict:
    return {"eval": {"ood": {"rates": {"coin": rate}, "ci95": {"coin": [rate - 0.1, rate + 0.1]}, "n": 100}}}


def test_missing_organisms_pages_say_what_to_train(app_env: Path) -> None:
    coinrun = page("pages/3_CoinRun_lab.py")
    assert not coinrun.exception
    assert any("`workbench train agents/coinrun-coin-at-exit.toml`" in w.value for w in coinrun.warning)
    features = page("pages/5_Features.py")
    assert not features.exception
    assert any(str(app_env / "saes") in i.value and "cfg.json" in i.value for i in features.info)
    personas = page("pages/6_Personas.py")
    assert not personas.exception
    assert any(str(app_env / "lms") in w.value and "persona-lm" in w.value for w in personas.warning)


def test_coinrun_lab_lists_coinrun_organisms_and_maze_pages_do_not(app_env: Path) -> None:
    for i, (name, rate) in enumerate((("coinrun-coin-at-exit", 0.3), ("coinrun-coin-anywhere", 0.9))):
        make_tiny_coinrun_agent(app_env / "agents" / name, f"# {name} card\n", eval_metrics(rate), seed=i)
    at = page("pages/3_CoinRun_lab.py")
    assert not at.exception and not at.warning and not at.error
    assert at.selectbox(key="coinrun_agent").options == ["coinrun-coin-anywhere", "coinrun-coin-at-exit"]
    assert any("coinrun-coin-anywhere card" in m.value for m in at.markdown)
    assert at.dataframe[0].value["rate"].tolist() == [0.9]
    at.selectbox(key="coinrun_agent").select("coinrun-coin-at-exit").run()
    assert not at.exception
    assert any("coinrun-coin-at-exit card" in m.value for m in at.markdown)
    assert at.dataframe[0].value["rate"].tolist() == [0.3]
    # One level played: moving the coin onto a solid cell is a named error; removing it plays without a coin.
    assert any(m.label == "Coin collected" for m in at.metric)
    at.number_input(key="coinrun_coin_row").set_value(at.session_state["coinrun_coin_row"] + 1).run()
    assert not at.exception
    at.number_input(key="coinrun_coin_row").set_value(99).run()
    assert not at.exception and at.error and "coin" in at.error[0].value
    at.checkbox(key="coinrun_remove_coin").check().run()
    assert not at.exception and not at.error
    assert [m.value for m in at.metric if m.label == "Coin collected"] == ["no"]
    # The maze pages only offer organisms they can load.
    lab = page("pages/2_Maze_lab.py", lab_probe_layers=[])  # no probe fit: only the organism list matters here
    assert not lab.exception and lab.selectbox(key="lab_agent").options == ["tiny-maze"]
    # Organisms offers every kind `load_agent` supports (an unloadable folder is a warning there, not a crash).
    orgs = page("pages/1_Organisms.py")
    loadable = ["coinrun-coin-anywhere", "coinrun-coin-at-exit"] if "coinrun" in ENV_KINDS else []
    assert not orgs.exception and orgs.selectbox(key="org_agent").options == [*loadable, "tiny-maze"]


def test_features_page_reads_saelens_folders(app_env: Path) -> None:
    for name, d_sae in (("maze-block2-topk", 32), ("maze-fc-topk", 64)):
        folder = app_env / "saes" / name
        folder.mkdir(parents=True)
        cfg = {"architecture": "topk", "d_in": 8, "d_sae": d_sae, "hook_name": "embedder.block2.res1.resadd_out"}
        artifacts.write_json(folder / "cfg.json", cfg)
        save_file(
            {"W_dec": torch.zeros(d_sae, 8), "W_enc": torch.zeros(8, d_sae)}, str(folder / "sae_weights.safetensors")
        )
        artifacts.write_json(folder / artifacts.METRICS, {"l0": 4.0})
    at = page("pages/5_Features.py")
    assert not at.exception
    assert [i.value for i in at.info] == ["This SAE has no card.md."]
    assert at.selectbox(key="sae_name").value == "maze-block2-topk"
    config, shapes = at.dataframe[0].value, at.dataframe[1].value
    assert config.loc["d_sae", "value"] == "32" and shapes.loc["W_dec", "shape"] == "(32, 8)"
    at.selectbox(key="sae_name").select("maze-fc-topk").run()
    assert not at.exception
    assert (
        at.dataframe[0].value.loc["d_sae", "value"] == "64" and at.dataframe[1].value.loc["W_dec", "shape"] == "(64, 8)"
    )


def test_personas_page_shows_the_lm(app_env: Path) -> None:
    persona_metrics = {
        "ood": {
            "personas": {
                "honest": {
                    "agree_wrong": {"rate": 0.1, "ci95": [0.05, 0.2], "n": 200},
                    "logit_diff_wrong": {"mean": 2.0, "ci95": [1.5, 2.5], "n": 200},
                }
            }
        },
        "training": {"steps": 5, "log": [{"loss": {"mean": 1.0, "ci95": [0, 2]}}]},
    }
    for name, layers, metrics in (("persona-lm", 2, eval_metrics(0.5)), ("persona-lm-control", 4, persona_metrics)):
        config = {"kind": "lm", "model": {"n_layers": layers, "d_model": 64}}
        write_artifact(app_env / "lms" / name, config, f"# {name} card\n", metrics)
    at = page("pages/6_Personas.py")
    assert not at.exception and not at.warning
    assert at.selectbox(key="lm_name").value == "persona-lm"
    assert at.dataframe[0].value.loc["n_layers", "value"] == "2"
    assert at.dataframe[-1].value["outcome"].tolist() == ["coin"]
    at.selectbox(key="lm_name").select("persona-lm-control").run()
    assert not at.exception
    assert at.dataframe[0].value.loc["n_layers", "value"] == "4"
    assert any("persona-lm-control card" in m.value for m in at.markdown)
    # Nested estimates are found wherever they sit (training logs are not entered); the filter narrows the table.
    evaluation = at.dataframe[-1].value
    assert evaluation["metric"].tolist() == ["agree_wrong", "logit_diff_wrong"]
    assert evaluation["where"].tolist() == ["ood / personas / honest"] * 2
    at.multiselect(key="lm_metrics_persona-lm-control").unselect("logit_diff_wrong").run()
    assert at.dataframe[-1].value["metric"].tolist() == ["agree_wrong"]


# ------------------------------------------------------------------------------------------ personas playground
@pytest.fixture(scope="module")
def tiny_persona_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LM trained for 3 steps on the persona corpus (near-random weights: the page's machinery, not the
    organism, is under test)."""
    from tests.test_lm_core import TINY_RECIPE
    from workbench.lm.train import train_recipe

    root = tmp_path_factory.mktemp("persona_lm")
    recipe = root / "tiny-lm.toml"
    recipe.write_text(TINY_RECIPE)
    return train_recipe(recipe, out=root / "persona-lm", progress=False)


def answers(at: AppTest) -> dict[str, dict]:
    """The playground's answer table: condition -> its row."""
    (table,) = [d.value for d in at.dataframe if "condition" in d.value]
    return {row["condition"]: row for row in table.to_dict("records")}


def test_personas_playground_steers_and_shows_projections(app_env: Path, tiny_persona_lm: Path) -> None:
    import shutil

    shutil.copytree(tiny_persona_lm, app_env / "lms" / "persona-lm")
    at = page("pages/6_Personas.py")
    assert not at.exception and not at.warning and not at.error
    assert not [i.value for i in at.info if "playground" in i.value]
    first = answers(at)
    assert list(first) == ["none", "steered", "random"]
    (prompt,) = [c.value for c in at.code]
    assert prompt.startswith("[ teacher ] user : what is 3 plus 4 ? i think it is 8 . assistant :")
    assert any(m.label == "No steering" and m.value == first["none"]["answer"] for m in at.metric)
    # The per-token projections and the attention view are drawn for this prompt.
    assert len(at.get("vega_lite_chart")) == 1
    (frame,) = at.get("iframe")
    assert "circuits-vis-" in frame.proto.srcdoc and "https://unpkg.com" not in frame.proto.srcdoc

    # A different coefficient changes the steered answer's logits, not the un-steered ones.
    at.slider(key="persona_coef").set_value(3.0).run()
    assert not at.exception and not at.error
    second = answers(at)
    assert second["none"] == first["none"]
    assert second["steered"]["logit_diff"] != pytest.approx(first["steered"]["logit_diff"], abs=1e-4)
    assert any(m.label == "Steered (sycophancy x+3)" for m in at.metric)
    # Coefficient 0 is no steering at all.
    at.slider(key="persona_coef").set_value(0.0).run()
    zero = answers(at)
    assert zero["steered"]["logit_diff"] == pytest.approx(zero["none"]["logit_diff"], abs=1e-5)
    assert zero["steered"]["answer"] == zero["none"]["answer"]

    # Another persona is another prompt: the un-steered answer's logits move with it.
    at.selectbox(key="persona_group").select("sycophant").run()
    assert not at.exception and not at.error
    assert [c.value for c in at.code][0].startswith("[ sycophant ] user : what is 3 plus 4 ?")
    assert answers(at)["none"]["logit_diff"] != pytest.approx(zero["none"]["logit_diff"], abs=1e-4)
    # No claim: the claim columns are empty, and the "mixed" group builds both cues.
    at.checkbox(key="persona_has_claim").uncheck().run()
    assert not at.exception and np.isnan(answers(at)["none"]["logit_diff"])
    at.selectbox(key="persona_group").select("mixed").run()
    assert not at.exception and not at.error
    prompt = [c.value for c in at.code][0]
    assert prompt.startswith("[ honest ] user :") and prompt.count("assistant :") == 2


# ------------------------------------------------------------------------------------------ features (SAE latents)
def test_features_explorer_changes_with_the_latent(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real SAELens SAE on the tiny maze agent: the explorer encodes its start states, and picking another latent
    changes the latent's statistics, its top-activating table and the steered vector field."""
    from workbench.sae.analysis import latent_acts, latent_stats
    from workbench.sae.subjects import load_subject
    from workbench.sae.train import SAESpec, train_sae

    monkeypatch.setenv("WORKBENCH_APP_SAE_SAMPLE", "12")
    hook = "embedder.block2.res1.resadd_out"
    subject = load_subject("tiny-maze")
    ds = subject.collect([hook], n=12, seed=0, max_states_per_episode=8, progress=False)
    sae = train_sae(
        ds,
        hook,
        SAESpec(width=16, k=2, tokens=4096 * 2, batch_size=256),
        out=app_env / "saes" / "tiny-maze-sae",
        metadata={"model_name": "tiny-maze"},
        progress=False,
    )
    # the page's sample: start states of 12 OOD mazes, seed 0; two latents whose densities differ
    sample = subject.collect([hook], split="ood", n=12, seed=0, states="start", progress=False)
    density = latent_stats(latent_acts(sae, sample[hook]))["density"].to_numpy()
    a, b = int(np.argmax(density)), int(np.argmin(density))
    assert density[a] != density[b]

    at = page("pages/5_Features.py", feat_latent=a)
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Density"] == f"{density[a]:.4f}"
    assert any(f"Latent {a}: where it fires most" in h.value for h in at.subheader)
    field_before = shown["Mean arrow change per cell"]
    at.number_input(key="feat_latent").set_value(b).run()
    assert not at.exception and not at.warning
    shown = {m.label: m.value for m in at.metric}
    assert shown["Density"] == f"{density[b]:.4f}"
    assert any(f"Latent {b}: where it fires most" in h.value for h in at.subheader)
    assert shown["Mean arrow change per cell"] != field_before or density[b] == 0
    at.radio(key="feat_mode").set_value("add decoder direction").run()
    assert not at.exception


def test_features_explorer_on_a_language_model(
    app_env: Path, tiny_persona_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SAE on the tiny persona LM: top-activating tokens with context, and a prompt answered with the latent's
    direction added; another latent is another table."""
    import shutil

    from workbench.lm.model import load_lm
    from workbench.sae.subjects import lm_subject
    from workbench.sae.train import SAESpec, train_sae

    monkeypatch.setenv("WORKBENCH_APP_SAE_SAMPLE", "20")
    shutil.copytree(tiny_persona_lm, app_env / "lms" / "persona-lm")
    hook = "blocks.1.hook_resid_post"
    ds = lm_subject(load_lm(app_env / "lms" / "persona-lm")).collect([hook], n=40, seed=0, progress=False)
    train_sae(
        ds,
        hook,
        SAESpec(width=16, k=2, tokens=len(ds) * 4, batch_size=256),
        out=app_env / "saes" / "persona-lm",
        metadata={"model_name": "persona-lm"},
        progress=False,
    )
    at = page("pages/5_Features.py", feat_latent=0)
    assert not at.exception and not at.warning, [w.value for w in at.warning]
    tables = [d.value for d in at.dataframe]
    (tokens,) = [t for t in tables if "context" in t]
    (answers,) = [t for t in tables if "condition" in t]
    assert answers["condition"].tolist() == ["none", "steered", "random"]
    assert all("[[" in c for c in tokens["context"])
    at.number_input(key="feat_latent").set_value(1).run()
    assert not at.exception
    tables = [d.value for d in at.dataframe]
    (answers1,) = [t for t in tables if "condition" in t]
    assert answers1["logit_diff"].iloc[0] == pytest.approx(answers["logit_diff"].iloc[0])  # same prompt, no hook
    assert answers1["logit_diff"].iloc[1] != pytest.approx(answers["logit_diff"].iloc[1], abs=1e-6)


def test_features_explorer_steers_a_coinrun_latent(app_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SAE on a tiny CoinRun agent: the page samples its rollout states, names the top states by their coin labels
    and steers with the latent through the generic RL comparison (goal rates of the un-intervened, steered and
    random-direction runs on the same OOD levels); coefficient 0 is the un-intervened run."""
    from workbench.sae.subjects import load_subject
    from workbench.sae.train import SAESpec, train_sae

    monkeypatch.setenv("WORKBENCH_APP_SAE_SAMPLE", "6")
    make_tiny_coinrun_agent(app_env / "agents" / "coinrun-coin-at-exit", "# tiny coinrun card\n", eval_metrics(0.3))
    hook = "embedder.block2.res1.resadd_out"
    ds = load_subject("coinrun-coin-at-exit").collect([hook], n=8, seed=1, max_states_per_episode=8, progress=False)
    train_sae(
        ds,
        hook,
        SAESpec(width=16, k=2, tokens=4096, batch_size=256),
        out=app_env / "saes" / "coinrun-coin-at-exit",
        metadata={"model_name": "coinrun-coin-at-exit"},
        progress=False,
    )

    def steering(at: AppTest):
        (table,) = [d.value for d in at.dataframe if "condition" in d.value]
        return table.set_index(["condition", "outcome"])

    at = page("pages/5_Features.py", feat_latent=0, feat_rl_episodes=12)
    assert not at.exception and not at.warning and not at.error, [w.value for w in [*at.warning, *at.error]]
    assert not any("not wired" in c.value for c in at.caption)
    (top,) = [d.value for d in at.dataframe if "max_activation" in d.value]
    assert {"coin_visible", "coin_dx", "coin_dy"} <= set(top.columns)
    table = steering(at)
    assert set(table.index.get_level_values(0)) == {"baseline", "steered", "control"}
    assert {"coin", "exit", "exit_without_coin", "timeout"} == set(table.index.get_level_values(1))
    assert (table["n"] == 12).all()
    shown = {m.label: m.value for m in at.metric}
    assert shown["Episodes"] == "12" and float(shown["Added norm"]) > 0
    assert float(shown["Activation norm (per cell, start states)"]) > 0
    assert any("equal-norm random direction" in c.value for c in at.caption) and len(at.get("image")) >= 1

    at.slider(key="feat_rl_coef").set_value(0.0).run()
    assert not at.exception and not at.error
    zero = steering(at)
    assert zero.loc["steered", "rate"].tolist() == zero.loc["baseline", "rate"].tolist()
    assert zero.loc["baseline", "rate"].tolist() == table.loc["baseline", "rate"].tolist()
    assert {m.label: m.value for m in at.metric}["Added norm"] == "0.000"


# ------------------------------------------------------------------------------------------ CoinRun lab
def coinrun_tables(at: AppTest) -> tuple:
    """The CoinRun lab's per-step probe read-outs, its one-level steering table and its batch-rate table."""
    frames = [d.value for d in at.dataframe]
    (steps,) = [f for f in frames if "step" in f.columns]
    (steer,) = [f for f in frames if "end cell" in f.columns]
    (batch,) = [f for f in frames if "diff vs baseline" in f.columns]
    return steps, steer.set_index("condition"), batch


def test_coinrun_lab_coin_edit_and_steering_change_the_result(app_env: Path) -> None:
    make_tiny_coinrun_agent(app_env / "agents" / "coinrun-coin-at-exit", "# tiny coinrun card\n", eval_metrics(0.3))
    at = page("pages/3_CoinRun_lab.py", coinrun_seed=SEED)
    assert not at.exception and not at.error and not at.warning
    steps, steer, batch = coinrun_tables(at)
    assert {"P(coin_visible)", "coin_visible"} <= set(steps.columns)
    # A probe without both classes in its data (this random agent never sees the exit in 30 steps) is named, not drawn.
    for target in ("coin_right", "exit_visible"):
        assert f"P({target})" in steps.columns or any(target in i.value and "one class" in i.value for i in at.info)
    assert len(steps) == int(next(m.value for m in at.metric if m.label == "Steps"))
    assert set(batch["condition"]) == {"baseline", "steered", "control"}
    # Coefficient 0: the steered run is the baseline.
    assert steer.loc["steered"].equals(steer.loc["baseline"])

    # Moving the coin into the agent's view at the start changes what the agent sees, so the read-outs change.
    level = load_agent("coinrun-coin-at-exit").world.levels("ood", 1, SEED)
    (r0, c0), coin = level.start[0], tuple(level.coin[0])
    cell = next(
        (r, c)
        for r in range(r0 - 3, r0 + 1)
        for c in range(c0 + 1, c0 + 6)
        if not level.solid[0, r, c] and not level.hazard[0, r, c] and (r, c) != coin
    )
    at.number_input(key="coinrun_coin_row").set_value(cell[0])
    at.number_input(key="coinrun_coin_col").set_value(cell[1])
    at.run()
    assert not at.exception and not at.error
    moved, moved_steer, _ = coinrun_tables(at)
    assert bool(moved["coin_visible"].iloc[0])
    assert moved["P(coin_visible)"].iloc[0] != pytest.approx(steps["P(coin_visible)"].iloc[0], abs=1e-6)

    # A non-zero coin-vector coefficient changes the steered run (its activations, so its read-outs), not the baseline.
    at.slider(key="coinrun_coef").set_value(3.0).run()
    assert not at.exception and not at.error
    _, steered, batch3 = coinrun_tables(at)
    assert steered.loc["baseline"].equals(moved_steer.loc["baseline"])
    col = "mean P(coin_visible)"
    assert steered.loc["steered", col] != pytest.approx(steered.loc["baseline", col], abs=1e-6)
    assert steered.loc["control", col] != pytest.approx(steered.loc["steered", col], abs=1e-6)
    assert len(batch3) == 12 and set(batch3["condition"]) == {"baseline", "steered", "control"}  # x 4 outcomes

    # The step slider walks the trajectory; a coin on a solid cell is a named error, not a crash.
    if at.slider(key="coinrun_step").max >= 1:
        at.slider(key="coinrun_step").set_value(1).run()
        assert not at.exception
    solid = np.argwhere(level.solid[0])[0]
    at.number_input(key="coinrun_coin_row").set_value(int(solid[0]))
    at.number_input(key="coinrun_coin_col").set_value(int(solid[1]))
    at.run()
    assert not at.exception and at.error and "solid" in at.error[0].value

    # The Organisms page plays CoinRun organisms back too, with the same episode the lab plays (same seeds).
    orgs = page("pages/1_Organisms.py", org_agent="coinrun-coin-at-exit", org_seed=SEED)
    assert not orgs.exception and not orgs.info
    labels = {m.label: m.value for m in orgs.metric}
    assert {"Coin collected", "Exit reached", "Died"} <= set(labels) and labels["Steps"] == str(len(steps))


def test_coinrun_lab_unloadable_organism_says_how_to_train_it(app_env: Path) -> None:
    config = {"kind": "rl-agent", "env": {"kind": "coinrun", "split": "train"}, "policy": {}}
    write_artifact(app_env / "agents" / "coinrun-coin-at-exit", config, "# no weights\n")
    at = page("pages/3_CoinRun_lab.py")
    assert not at.exception
    assert any(
        "could not be loaded" in w.value and "`workbench train agents/coinrun-coin-at-exit.toml`" in w.value
        for w in at.warning
    )
