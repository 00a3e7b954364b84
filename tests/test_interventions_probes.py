"""Interventions (shape rules and algebra), spatial probes (golden cases), imitation data (expert correctness)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.hooks import Hook
from workbench.interventions import ablate_direction, add_vector, clamp_channel, patch_with, random_like
from workbench.probes import downsample_cells, fit_spatial_probe, top1_accuracy
from workbench.rl.envs.maze import MazeConfig, distances_to, generate_levels
from workbench.rl.imitation import BCConfig, behaviour_clone, collect_expert_data, expert_actions
from workbench.rl.policies import ImpalaPolicy

from .conftest import TINY_POLICY

HOOK = Hook("layer", torch.nn.Identity())


def test_add_vector_broadcasts_shared_and_per_example() -> None:
    act = torch.zeros(3, 2, 4, 4)
    shared = torch.ones(2, 4, 4)
    assert torch.equal(add_vector(shared, -2.0)(act, HOOK), torch.full_like(act, -2.0))
    per = torch.arange(3.0)[:, None, None, None].expand(3, 2, 4, 4)
    assert torch.equal(add_vector(per, 1.0)(act, HOOK)[:, 0, 0, 0], torch.arange(3.0))
    channel = torch.tensor([1.0, 5.0])
    assert torch.equal(add_vector(channel)(act, HOOK)[:, 1], torch.full((3, 4, 4), 5.0))
    resid = torch.zeros(2, 7, 8)
    assert add_vector(torch.ones(8))(resid, HOOK).sum() == 2 * 7 * 8
    with pytest.raises(WorkbenchError, match="does not fit"):
        add_vector(torch.ones(5))(act, HOOK)


def test_ablate_direction_removes_exactly_that_component() -> None:
    torch.manual_seed(0)
    resid = torch.randn(4, 5, 16)
    r = torch.randn(16)
    out = ablate_direction(r)(resid, HOOK)
    assert torch.allclose(out @ (r / r.norm()), torch.zeros(4, 5), atol=1e-5)
    assert torch.allclose(out - resid, -(resid @ r / r.norm())[..., None] * (r / r.norm()), atol=1e-5)
    conv = torch.randn(2, 3, 4, 4)
    c = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(ablate_direction(c)(conv, HOOK)[:, 0], torch.zeros(2, 4, 4))
    assert torch.equal(ablate_direction(c)(conv, HOOK)[:, 1:], conv[:, 1:])


def test_clamp_and_patch() -> None:
    act = torch.zeros(2, 3, 4, 4)
    out = clamp_channel(1, 7.0, cell=(2, 3))(act, HOOK)
    assert out[:, 1, 2, 3].eq(7.0).all() and out.sum() == 14.0 and act.sum() == 0
    with pytest.raises(WorkbenchError, match="channel 9"):
        clamp_channel(9, 1.0)(act, HOOK)
    src = torch.ones(2, 3, 4, 4)
    mask = torch.zeros(1, 3, 1, 1, dtype=torch.bool)
    mask[0, 2] = True
    patched = patch_with(src, mask)(act, HOOK)
    assert patched[:, 2].eq(1).all() and patched[:, :2].eq(0).all()


def test_random_like_matches_norm_per_example() -> None:
    vec = torch.randn(5, 3, 4, 4) * torch.arange(1.0, 6.0)[:, None, None, None]
    ctrl = random_like(vec, seed=0)
    norms = torch.linalg.vector_norm
    assert torch.allclose(norms(ctrl.flatten(1), dim=1), norms(vec.flatten(1), dim=1), rtol=1e-5)
    assert torch.equal(ctrl, random_like(vec, seed=0)) and not torch.equal(ctrl, random_like(vec, seed=1))
    cos = torch.nn.functional.cosine_similarity(ctrl.flatten(1), vec.flatten(1), dim=1)
    assert cos.abs().max() < 0.6


def test_spatial_probe_golden_cases() -> None:
    rng = np.random.default_rng(0)
    n, c, h = 300, 4, 5
    targets = torch.as_tensor(rng.integers(0, h * h, n))
    acts = torch.as_tensor(rng.normal(size=(n, c, h, h)))
    acts[:, 2].view(n, -1)[torch.arange(n), targets] += 8.0  # channel 2 marks the target cell (far above the noise)
    probe = fit_spatial_probe(acts[:200], targets[:200])
    held = top1_accuracy(probe, acts[200:], targets[200:])
    assert held["rate"] == 1.0 and held["n"] == 100
    assert probe.weight.abs().argmax().item() == 2
    shuffled = fit_spatial_probe(acts[:200], targets[:200][torch.as_tensor(rng.permutation(200))])
    assert top1_accuracy(shuffled, acts[200:], targets[200:])["rate"] < 0.5
    with pytest.raises(WorkbenchError, match="labels"):
        fit_spatial_probe(acts, targets[:10])


def test_downsample_cells_follows_maxpool_geometry() -> None:
    cells = np.array([[0, 1], [2, 3], [14, 14], [7, 8]])
    assert (downsample_cells(cells, 15, 15) == cells).all()
    assert (downsample_cells(cells, 15, 8) == cells // 2).all()
    assert (downsample_cells(cells, 15, 4) == cells // 4).all()
    # Pooled output i (kernel 3, stride 2, pad 1) covers inputs 2i-1..2i+1: the mapped cell must be inside.
    pooled = torch.nn.functional.max_pool2d(torch.eye(15)[None, None], 3, 2, 1)[0, 0]
    for r in range(15):
        assert pooled[r // 2, r // 2] == 1.0
    with pytest.raises(WorkbenchError):
        downsample_cells(cells, 15, 5)


def test_expert_actions_follow_a_shortest_path() -> None:
    lv = generate_levels(np.arange(50), "ood")
    dist = distances_to(lv, lv.cheese)
    rows = np.arange(50)
    a = expert_actions(lv)
    from workbench.rl.envs.maze import ACTION_DELTAS

    nxt = lv.mouse + ACTION_DELTAS[a]
    assert (dist[rows, nxt[:, 0], nxt[:, 1]] == dist[rows, lv.mouse[:, 0], lv.mouse[:, 1]] - 1).all()


def test_behaviour_cloning_fits_expert_data() -> None:
    cfg = BCConfig(states=2048, epochs=3, batch_size=256, learning_rate=3e-3, num_envs=64, seed=0)
    obs, actions = collect_expert_data("train", MazeConfig(), cfg)
    assert obs.shape == (2048, 3, 15, 15) and actions.shape == (2048,) and int(actions.max()) <= 3
    again, _ = collect_expert_data("train", MazeConfig(), cfg)
    assert torch.equal(obs, again), "same seed, same data"
    torch.manual_seed(0)
    history = behaviour_clone(ImpalaPolicy(TINY_POLICY), obs, actions, cfg, progress=False)
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[-1]["accuracy"] > 0.4  # four actions: chance is 0.25
