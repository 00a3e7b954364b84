"""The Streamlit app, driven headless with AppTest against the tiny random agent of the `registry` fixture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from workbench.rl.agent import load_agent
from workbench.rl.envs.maze import decision_squares, generate_levels
from workbench.store import ResultStore

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "app"
# Organisms and Maze lab run (and are checked for exceptions) in their own tests below.
PAGES = ["Home.py", "pages/3_Probes_and_batteries.py", "pages/4_Not_yet.py"]
SEED = 0  # the maze the Maze lab tests edit


@pytest.fixture()
def app_env(registry: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_APP_PROBE_EPISODES", "40")
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
    """Maze SEED of the ood split, as the app generates it for the registry's tiny agent."""
    return generate_levels(np.array([SEED]), "ood", load_agent("tiny-maze").env_config)


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
    at = page("pages/3_Probes_and_batteries.py")
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
    at = page("pages/3_Probes_and_batteries.py")
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
