"""The rollout loop forwards only envs still in their first episode (`workbench.rl.loop`): the records must be the
ones a full-batch forward gives, on every native env kind, since finished envs are never recorded and
`torch.multinomial` draws each row's noise independently of the other rows' probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import workbench
from workbench.hooks import hooks
from workbench.policy import policy_logits
from workbench.rl import loop

torch.set_num_threads(1)


CALLS: list[int] = []


def _full_batch(policy, env, obs, tracker, max_steps, seed=0, fwd_hooks=(), greedy=False, on_step=None):
    """The loop as it was: every env forwarded at every step."""
    CALLS.append(len(obs))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), hooks(policy, fwd_hooks):
        for _ in range(max_steps):
            probs = torch.softmax(policy_logits(policy, torch.as_tensor(obs)), dim=-1)
            action = probs.argmax(-1) if greedy else torch.multinomial(probs, 1, generator=gen).squeeze(1)
            obs, _, _, _, info = env.step(action.numpy())
            tracker.update(info)
            if tracker.done.all():
                break
    return tracker.records()


def _records(rec) -> dict:
    return {k: v for k, v in vars(rec).items() if isinstance(v, np.ndarray)}


@pytest.mark.parametrize("name", ["maze-cheese-corner", "coinrun-coin-at-exit", "keys-chests", "maze-colour-shape"])
def test_live_rows_only_gives_the_full_batch_records(name, monkeypatch):
    agent = workbench.load_subject(name)
    levels = agent.world.levels("ood", 48, 5)
    fast = agent.world.run(agent.policy, levels, seed=11)
    monkeypatch.setattr(loop, "play_until_done", _full_batch)
    import sys

    for mod in list(sys.modules.values()):  # every module that imported the loop by name
        if getattr(mod, "play_until_done", None) is not None and getattr(mod, "__name__", "").startswith("workbench"):
            monkeypatch.setattr(mod, "play_until_done", _full_batch)
    CALLS.clear()
    slow = agent.world.run(agent.policy, levels, seed=11)
    assert CALLS == [48]  # the reference loop really ran
    a, b = _records(fast), _records(slow)
    assert a.keys() == b.keys() and a
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    lengths = next(v for k, v in a.items() if "length" in k or "steps" in k)
    assert lengths.min() < lengths.max()  # episodes of different lengths: some rows really were left out
