"""The procgen vector field our way equals procgen-tools' method (one env state per free cell, a venv of them,
observed and run through the policy; reimplemented in benchmarks/bench_procgen_field.py), on one small real maze.

Also: `ProcgenMazeLevels.observe()` (state bytes edited at the mouse's offsets, without the RNG texts, set_state +
observe, no step) draws byte for byte the frames of the old path (each full state copied, clock rewound, one NOOP
step in a side env), in both distribution modes.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

procgen = pytest.importorskip("procgen")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_procgen_field.py"
SMALL_SEED = 26  # a 7x7 hard-mode maze


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_procgen_field", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_procgen_field_equals_procgen_tools_method(bench):
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.procgen.levels import ProcgenMazeLevels
    from workbench.rl.procgen_state import parse
    from workbench.rl.published import published_config
    from workbench.rl.vector_field import vector_field

    torch.manual_seed(0)
    policy = ImpalaPolicy(published_config()).eval()
    venv = bench.create_venv(num=1, start_level=SMALL_SEED, num_levels=1)
    state = parse(venv.callmethod("get_state")[0])
    assert state.tail["maze_dim"] == 7
    level = ProcgenMazeLevels.from_states([state], region=5, mode="hard")
    ours = vector_field(policy, level)
    cells, probs = bench.reference_as_ours(bench.procgen_tools_vector_field(venv, bench.categorical_policy(policy)))
    assert len(cells) > 10 and np.array_equal(cells, ours.cells)
    assert tuple(level.cheese[0]) not in {tuple(c) for c in cells}  # the cheese cell is left out on both sides
    np.testing.assert_allclose(ours.probs, probs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["hard", "easy"])
def test_observe_draws_the_noop_step_frames_of_edited_states(mode):
    """observe() renders bytes edited at the mouse's offsets and stripped of the RNG texts; every frame must be the
    one the full state draws after a clock-rewound NOOP step (the old path, and what ProcgenVecEnv shows)."""
    from workbench.errors import WorkbenchError
    from workbench.rl.envs.procgen import NOOP, ProcgenConfig, _SideEnvs
    from workbench.rl.procgen.levels import RENDER_CHUNK, ProcgenMazeLevels
    from workbench.rl.procgen_state import parse

    env = procgen.ProcgenGym3Env(num=3, env_name="maze", rand_seed=11, distribution_mode=mode)
    levels = ProcgenMazeLevels.from_states([parse(b) for b in env.callmethod("get_state")], 5, mode)
    rng = np.random.default_rng(0)
    batch = levels.select(rng.integers(0, 3, RENDER_CHUNK + 9))  # two render chunks, rows sharing states
    cells = np.array([batch.free_cells(i)[rng.integers(len(batch.free_cells(i)))] for i in range(len(batch))])
    batch = batch.with_mouse(cells)
    cheese = batch.cheese.copy()
    cheese[::4] = -1  # some rows without cheese
    batch = batch.with_cheese(cheese)
    frames = batch.observe()
    assert frames.shape == (len(batch), 3, 64, 64) and frames.dtype == np.uint8 and frames.flags.c_contiguous
    states = batch.current_states()
    assert [bytes(b) for b in batch.state_blobs()] == [s.to_bytes() for s in states]
    rewound = []
    for s in states:
        s = s.copy()
        s.head["cur_time"] -= 1
        rewound.append(s.to_bytes())
    side = _SideEnvs(ProcgenConfig(distribution_mode=mode))
    stepped = np.concatenate([side.step(rewound[lo : lo + 32], NOOP)[0] for lo in range(0, len(rewound), 32)])
    np.testing.assert_array_equal(frames, stepped.transpose(0, 3, 1, 2))
    walled = batch.select(np.arange(1))
    walled.mouse[0] = np.argwhere(walled.walls[0])[0]
    with pytest.raises(WorkbenchError, match="wall"):
        walled.observe()
