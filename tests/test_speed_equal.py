"""The speed paths of the policy forward (a max-pool run in the channels-last layout) and of the rollout loop (each
distinct observation forwarded once), and so rollouts, outcome labels and collected activations, give the same
numbers as the plain paths they replace (issue #16): bit-identical, since a maximum does no arithmetic and a row's
logits do not depend on the batch it is in. The vector field's channels-last batch changes the convolutions'
summation order, so it is checked allclose against one forward per cell, as before.

The references are rebuilt here rather than stored: the same policy with torch's own `nn.MaxPool2d` back in place,
and a rollout loop that forwards every env at every step."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import workbench
from workbench.hooks import run_with_cache
from workbench.policy import policy_logits
from workbench.rl import loop
from workbench.rl.envs.maze import MazeVecEnv
from workbench.rl.policies import ImpalaPolicy, MaxPool, PolicyConfig
from workbench.rl.rollout import EpisodeTracker
from workbench.rl.vector_field import vector_field, vector_field_loop

torch.set_num_threads(1)

HOOKS = ["embedder.block2.maxpool", "embedder.block2.res1.resadd_out", "embedder.block3.res2.resadd_out"]


@pytest.fixture(scope="module")
def agent():
    return workbench.load_subject("maze-cheese-corner")


def plain_pool(policy: nn.Module) -> nn.Module:
    """A copy of `policy` whose max-pools are torch's `nn.MaxPool2d` (the forward as it was before `MaxPool`)."""
    ref = copy.deepcopy(policy)
    for module in ref.modules():
        for name, child in module.named_children():
            if isinstance(child, MaxPool):
                setattr(module, name, nn.MaxPool2d(child.kernel_size, child.stride, child.padding))
    return ref


def test_policy_uses_the_layout_pool(agent):
    pools = [m for m in agent.policy.modules() if isinstance(m, nn.MaxPool2d)]
    assert pools and all(isinstance(m, MaxPool) for m in pools)
    assert all(not isinstance(m, MaxPool) for m in plain_pool(agent.policy).modules())


@pytest.mark.parametrize("batch", [1, 7, 64, 300])
def test_forward_and_cached_activations_bit_identical(agent, batch):
    obs = torch.as_tensor(agent.world.levels("ood", batch, 3).observe())
    ref = plain_pool(agent.policy)
    with torch.no_grad():
        (logits, value), cache = run_with_cache(agent.policy, obs, names_filter=HOOKS)
        (ref_logits, ref_value), ref_cache = run_with_cache(ref, obs, names_filter=HOOKS)
    assert torch.equal(logits, ref_logits) and torch.equal(value, ref_value)
    for hook in HOOKS:
        assert torch.equal(cache[hook], ref_cache[hook]), hook
        assert cache[hook].is_contiguous() == ref_cache[hook].is_contiguous(), hook  # hooks see the same layout


def test_pool_on_every_layout_and_with_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 8, 15, 15, generator=gen)
    x[:, :, 3:9, 3:9] = 0.25  # ties inside windows
    pool, ref = MaxPool(3, 2, 1), nn.MaxPool2d(3, 2, 1)
    for inp in (x, x.contiguous(memory_format=torch.channels_last), x[:, :, :, 1:], x[0]):
        assert torch.equal(pool(inp), ref(inp))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    pool(a).square().sum().backward()
    ref(b).square().sum().backward()
    assert torch.equal(a.grad, b.grad)  # with autograd the layout trick is off: the same tie-breaking


def test_training_gradients_unchanged():
    torch.manual_seed(0)
    policy = ImpalaPolicy(PolicyConfig(channels=(8, 16, 32), pool=(False, True, True), hidden=64))
    ref = plain_pool(policy)
    obs = torch.randint(0, 2, (16, 3, 15, 15), dtype=torch.uint8)
    for net in (policy, ref):
        logits, value = net(obs)
        (logits.logsumexp(-1).sum() + value.sum()).backward()
    for (name, p), q in zip(policy.named_parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name


def _records(rec) -> dict:
    return {k: v for k, v in vars(rec).items() if isinstance(v, np.ndarray)}


def _every_row(policy, env, obs, tracker, max_steps, seed=0):
    """The rollout loop without its shortcuts: every env forwarded at every step."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(max_steps):
            probs = torch.softmax(policy_logits(policy, torch.as_tensor(obs)), dim=-1)
            obs, _, _, _, info = env.step(torch.multinomial(probs, 1, generator=gen).squeeze(1).numpy())
            tracker.update(info)
            if tracker.done.all():
                break
    return tracker.records()


def _maze_rollout(agent, policy, levels, play, seed):
    env = MazeVecEnv(len(levels), split="ood", config=agent.env_config)
    obs, _ = env.reset(options={"levels": levels})
    return _records(play(policy, env, obs, EpisodeTracker(levels), agent.env_config.max_steps, seed))


@pytest.mark.parametrize("key_bytes", [loop.EXACT_KEY_BYTES, 0])  # 0: every observation keyed by its digest
def test_memo_forwards_each_observation_once_and_keeps_the_records(agent, key_bytes, monkeypatch):
    levels = agent.world.levels("ood", 60, 9)
    ref = _maze_rollout(agent, plain_pool(agent.policy), levels, _every_row, seed=3)
    seen: list[np.ndarray] = []

    def counting(policy, x):
        seen.extend(x.numpy())
        return policy_logits(policy, x)

    monkeypatch.setattr(loop, "policy_logits", counting)
    monkeypatch.setattr(loop, "EXACT_KEY_BYTES", key_bytes)
    got = _maze_rollout(agent, agent.policy, levels, loop.play_until_done, seed=3)
    assert ref.keys() == got.keys() and ref
    for key in ref:
        np.testing.assert_array_equal(ref[key], got[key], err_msg=key)
    distinct = {row.tobytes() for row in seen}
    assert len(distinct) == len(seen)  # no observation forwarded twice
    assert len(seen) < got["length"].sum()  # and the memo saved forwards (stuck episodes repeat observations)


def test_rollout_records_identical(agent):
    levels = agent.world.levels("ood", 40, 2)
    ref = _records(agent.world.run(plain_pool(agent.policy), levels, seed=4))
    got = _records(agent.world.run(agent.policy, levels, seed=4))
    assert ref.keys() == got.keys() and ref
    for key in ref:
        np.testing.assert_array_equal(ref[key], got[key], err_msg=key)


def test_start_collection_labels_and_activations_identical(agent, monkeypatch):
    from workbench.activations import collect_maze
    from workbench.rl import rollout

    hooks = ["embedder.block2.res1.resadd_out", "embedder.block3.maxpool"]
    fast = collect_maze(agent, hooks, episodes=48, seed=6, states="start", batch_size=20, progress=False)
    # the reference: torch's max-pool, and outcome rollouts that forward every env at every step
    calls: list[int] = []

    def every_row(policy, env, obs, tracker, max_steps, seed=0, *_):
        calls.append(len(obs))
        return _every_row(policy, env, obs, tracker, max_steps, seed)

    monkeypatch.setattr(rollout, "play_until_done", every_row)
    slow_agent = dataclasses.replace(agent, policy=plain_pool(agent.policy))
    slow = collect_maze(slow_agent, hooks, episodes=48, seed=6, states="start", batch_size=20, progress=False)
    assert calls == [48]  # the reference loop really ran
    assert len(fast) == len(slow) == 48
    assert fast.labels.equals(slow.labels)
    assert fast.labels["outcome_length"].nunique() > 1  # real outcome rollouts of different lengths
    for hook in hooks:
        assert torch.equal(fast[hook], slow[hook]), hook


def test_vector_field_matches_one_forward_per_cell(agent):
    levels = agent.world.levels("ood", 8, 1)
    level = levels.select(np.array([int(np.argmax(levels.size))]))
    batched, looped = vector_field(agent.policy, level), vector_field_loop(agent.policy, level)
    np.testing.assert_array_equal(batched.cells, looped.cells)
    np.testing.assert_allclose(batched.probs, looped.probs, atol=1e-5)
    np.testing.assert_allclose(batched.probs.sum(1), 1.0, atol=1e-6)
