"""The Maze lab's retarget panel, driven headless with AppTest against the registry's tiny random agent: a free
target cell gives the un-clamped and clamped fields and a greedy path; a wall target is one error, not a crash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from workbench.rl.agent import load_agent
from workbench.rl.envs.maze import distances_to

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

torch.set_num_threads(1)
APP = Path(__file__).resolve().parent.parent / "app"
SEED = 0


@pytest.fixture()
def app_env(registry: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WORKBENCH_APP_PROBE_EPISODES", "20")
    return registry


def _cells():
    """A usable target (free, reachable, not the mouse or the cheese, not behind the cheese) and a wall cell."""
    level = load_agent("tiny-maze").world.levels("ood", 1, SEED)
    d = distances_to(level, level.mouse)[0]
    dc = distances_to(level, level.cheese)[0]
    s_cheese = d[tuple(level.cheese[0])]
    ok = (d > 0) & (d != s_cheese + dc)
    ok[tuple(level.cheese[0])] = False
    target = tuple(int(v) for v in np.argwhere(ok)[0])
    wall = tuple(int(v) for v in np.argwhere(level.walls[0])[0])
    return target, wall


def test_retarget_panel(app_env: Path) -> None:
    target, wall = _cells()
    at = AppTest.from_file(str(APP / "pages/2_Maze_lab.py"), default_timeout=180)
    at.session_state["lab_agent"] = "tiny-maze"
    at.session_state["lab_seed"] = SEED
    at.session_state["lab_rt_auto"] = False  # the cell typed in, not the one drawn off the routes
    at.session_state["lab_rt_row"], at.session_state["lab_rt_col"] = target
    at.run()
    assert not at.exception and not at.error
    path_text = [m.value for m in at.markdown if m.value.startswith("**Greedy path with the clamp:**")]
    assert len(path_text) == 1 and any(w in path_text[0] for w in ("target", "cheese", "step limit"))
    at.number_input(key="lab_rt_row").set_value(wall[0])
    at.number_input(key="lab_rt_col").set_value(wall[1])
    at.run()
    assert not at.exception
    assert any("is a wall" in e.value for e in at.error)


def test_retarget_panel_draws_a_target_off_the_routes(app_env: Path) -> None:
    """By default the panel draws its target as `workbench retarget` does, so a fresh page never opens on a wall."""
    at = AppTest.from_file(str(APP / "pages/2_Maze_lab.py"), default_timeout=180)
    at.session_state["lab_agent"] = "tiny-maze"
    at.session_state["lab_seed"] = SEED
    at.run()
    assert not at.exception and not at.error
    drawn = [c.value for c in at.caption if c.value.startswith("Target (")]
    assert len(drawn) == 1
    row, col = (int(v) for v in drawn[0].split("(")[1].split(")")[0].split(","))
    level = load_agent("tiny-maze").world.levels("ood", 1, SEED)
    assert not level.walls[0, row, col] and (row, col) != tuple(level.cheese[0]) and (row, col) != tuple(level.mouse[0])
