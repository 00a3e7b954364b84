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
    `tracker.records()`. `tracker.update(info)` reads each step's masked episode info (first episodes only).
    Without hooks or `on_step`, envs whose first episode has ended are left out of the forward pass (a rollout then
    costs the sum of the episode lengths, not levels x the longest episode). A policy whose output for a row depends
    on the row's position in the batch (a wrapper that tracks each env) sets the attribute `needs_full_batch = True`
    and always gets the whole batch."""
    gen = torch.Generator().manual_seed(seed)
    # Hooks, callbacks and policies that track envs by batch position (`needs_full_batch = True`) see every row.
    skip_finished = on_step is None and not fwd_hooks and not getattr(policy, "needs_full_batch", False)
    with torch.no_grad(), hooks(policy, fwd_hooks):
        for t in range(max_steps):
            x = torch.as_tensor(obs)
            live = np.flatnonzero(~tracker.done) if skip_finished and t > 0 else None
            if live is None or live.size == x.shape[0]:
                logits = policy_logits(policy, x)
            else:
                # Envs whose first episode has ended are never recorded again: forward only the live ones. The
                # finished rows get uniform probabilities. torch.multinomial (one sample, no replacement) draws
                # one Exp(1) number per (env, action) cell in order, so a live env's action depends only on its own
                # row and the generator's position: the same draws as a full-batch forward, up to the float
                # differences a sub-batch forward may have (none seen in tests/test_rollout_live.py).
                logits = torch.zeros((x.shape[0], logits.shape[1]), dtype=logits.dtype)
                if live.size:
                    logits[torch.as_tensor(live)] = policy_logits(policy, x[torch.as_tensor(live)])
            if on_step is not None:
                on_step(t, obs, logits)
            probs = torch.softmax(logits, dim=-1)
            action = probs.argmax(-1) if greedy else torch.multinomial(probs, 1, generator=gen).squeeze(1)
            obs, _, _, _, info = env.step(action.numpy())
            tracker.update(info)
            if tracker.done.all():
                break
    return tracker.records()
