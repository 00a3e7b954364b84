"""The top-right vector (Turner et al.) and the decision-square convention through the maze steering verb."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.rl.agent import load_agent
from workbench.rl.steering import steer_maze, top_right_vectors


def test_top_right_vectors_are_zero_only_where_no_path_can_be_cut(registry):
    agent = load_agent("tiny-maze")
    levels = agent.world.levels("ood", 40, seed=0)
    vecs, full = top_right_vectors(agent, levels, "embedder.block2.res1.resadd_out")
    fills = levels.offset <= 0
    assert full == int(fills.sum()) and 0 < full < len(levels)
    norms = torch.linalg.vector_norm(vecs.flatten(1), dim=1).numpy()
    assert (norms[fills] == 0).all() and (norms[~fills] > 0).all()


def test_steer_top_right_with_either_convention(registry):
    agent = load_agent("tiny-maze")
    out = {
        conv: steer_maze(agent, vector="top-right", coef=1.0, episodes=12, seed=1, convention=conv)
        for conv in ("workbench", "procgen-tools")
    }
    for conv, res in out.items():
        assert res["vector"] == "top-right" and res["decision_square"]["convention"] == conv
        assert res["top_right"]["mazes_filling_the_world"] >= 0 and res["baseline"]["n"] == 12
    assert out["procgen-tools"]["decision_square"]["n"] >= out["workbench"]["decision_square"]["n"]
    with pytest.raises(WorkbenchError, match="procgen-tools"):
        steer_maze(agent, vector="top-right", episodes=4, convention="procgen_tools")


def test_unknown_vector_names_the_choices(registry):
    with pytest.raises(WorkbenchError, match="top-right"):
        steer_maze(load_agent("tiny-maze"), vector="top_right", episodes=2)
