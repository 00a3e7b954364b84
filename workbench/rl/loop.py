"""The one seeded rollout loop: step a reset vector env with a policy until every env's first episode has ended.

Why one loop: evaluation, steering conditions, collection and every env kind must mean the same thing by "one
episode per level, actions sampled with seed S, hooks on every forward pass". Variants pass `on_step(t, obs, logits)`
(called before each step's action with the forward pass's logits) instead of writing a loop of their own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from workbench.hooks import hooks
from workbench.policy import policy_logits

OnStep = Callable[[int, np.ndarray, torch.Tensor], None]


def play_until_done(
    policy: nn.Module,
    env,
    obs: np.ndarray,
    tracker,
    max_steps: int,
    seed: int = 0,
    fwd_hooks: list | tuple = (),
    greedy: bool = False,
    on_step: OnStep | None = None,
):
    """Play from `obs` (a reset env's first observation) until `tracker.done.all()` or `max_steps`; returns
    `tracker.records()`. `tracker.update(info)` reads each step's masked episode info (first episodes only)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), hooks(policy, fwd_hooks):
        for t in range(max_steps):
            logits = policy_logits(policy, torch.as_tensor(obs))
            if on_step is not None:
                on_step(t, obs, logits)
            probs = torch.softmax(logits, dim=-1)
            action = probs.argmax(-1) if greedy else torch.multinomial(probs, 1, generator=gen).squeeze(1)
            obs, _, _, _, info = env.step(action.numpy())
            tracker.update(info)
            if tracker.done.all():
                break
    return tracker.records()
