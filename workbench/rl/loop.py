"""The one seeded rollout loop: step a reset vector env with a policy until every env's first episode has ended.

Why one loop: evaluation, steering conditions, collection and every env kind must mean the same thing by "one
episode per level, actions sampled with seed S, hooks on every forward pass". Variants pass `on_step(t, obs, logits)`
(called before each step's action with the forward pass's logits) instead of writing a loop of their own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from workbench.hooks import hooks
from workbench.policy import policy_logits

OnStep = Callable[[int, np.ndarray, torch.Tensor], None]

EXACT_KEY_BYTES = 4096
"""Observations up to this size are remembered by their bytes; larger ones (procgen frames) by a 128-bit BLAKE2b
digest of their bytes, so the memory stays small (a collision is about as likely as 2^-128 per pair)."""


class _LogitsMemo:
    """Logits already computed in this rollout, by observation. Why: a stuck policy walks back and forth over the same
    few cells until the step cap, so most of a rollout's rows repeat an observation already seen (maze, 2,000 ood
    levels: 89,723 forwarded rows, 25,574 distinct observations). A policy maps each row to its logits on its own
    (the contract the live-row forward already relies on), so a repeated observation gets the logits it got before."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}
        self.table = np.zeros((0, 0), dtype=np.float32)
        self.size = 0

    def logits(self, policy: nn.Module, obs: np.ndarray, x: torch.Tensor, live: np.ndarray) -> torch.Tensor:
        """(len(live), A) logits of the rows `live` of `obs` (`x` is `obs` as a tensor); forwards only the rows
        whose observation has not been seen, each distinct observation once."""
        rows = np.ascontiguousarray(np.asarray(obs)[live]).reshape(live.size, -1).view(np.uint8)
        exact = rows.shape[1] <= EXACT_KEY_BYTES
        slot = np.empty(live.size, dtype=np.int64)
        fresh: dict[bytes, int] = {}
        forward: list[int] = []
        for j in range(live.size):
            row = rows[j].tobytes()
            key = row if exact else hashlib.blake2b(row, digest_size=16).digest()
            i = self.index.get(key)
            if i is None:
                i = fresh.get(key)
                if i is None:
                    i = fresh[key] = self.size + len(forward)
                    forward.append(int(live[j]))
            slot[j] = i
        if forward:
            new = policy_logits(policy, x[torch.as_tensor(forward)]).numpy()
            if self.size + len(forward) > self.table.shape[0]:
                grown = np.zeros((max(2 * self.table.shape[0], self.size + len(forward)), new.shape[1]), np.float32)
                if self.size:
                    grown[: self.size] = self.table[: self.size]
                self.table = grown
            self.table[self.size : self.size + len(forward)] = new
            self.size += len(forward)
            self.index.update(fresh)
        return torch.from_numpy(self.table[slot])


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
    costs the sum of the episode lengths, not levels x the longest episode), and an observation already forwarded
    in this rollout reuses its logits (a rollout then costs its distinct observations). A policy whose output for a
    row depends on the row's position in the batch (a wrapper that tracks each env) sets the attribute
    `needs_full_batch = True` and always gets the whole batch."""
    gen = torch.Generator().manual_seed(seed)
    memo = _LogitsMemo()
    # Hooks, callbacks and policies that track envs by batch position (`needs_full_batch = True`) see every row.
    skip_finished = on_step is None and not fwd_hooks and not getattr(policy, "needs_full_batch", False)
    with torch.no_grad(), hooks(policy, fwd_hooks):
        for t in range(max_steps):
            x = torch.as_tensor(obs)
            if skip_finished:
                # Envs whose first episode has ended are never recorded again: forward only the live ones, and each
                # observation seen before in this rollout not at all (`_LogitsMemo`). The finished rows get uniform
                # probabilities. torch.multinomial (one sample, no replacement) draws one Exp(1) number per
                # (env, action) cell in order, so a live env's action depends only on its own row and the
                # generator's position: the same draws as a full-batch forward, up to the float differences a
                # sub-batch forward may have (none seen in tests/test_rollout_live.py, tests/test_speed_equal.py).
                live = np.flatnonzero(~tracker.done) if t > 0 else np.arange(x.shape[0])
                known = memo.logits(policy, obs, x, live)
                if live.size == x.shape[0]:
                    logits = known
                else:
                    logits = torch.zeros((x.shape[0], known.shape[1]), dtype=known.dtype)
                    logits[torch.as_tensor(live)] = known
            else:
                logits = policy_logits(policy, x)
            if on_step is not None:
                on_step(t, obs, logits)
            probs = torch.softmax(logits, dim=-1)
            action = probs.argmax(-1) if greedy else torch.multinomial(probs, 1, generator=gen).squeeze(1)
            obs, _, _, _, info = env.step(action.numpy())
            tracker.update(info)
            if tracker.done.all():
                break
    return tracker.records()
