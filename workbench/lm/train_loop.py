"""The training pieces both LM trainers share: the `[train]` / `[eval]` sections, the learning-rate schedule, one
AdamW step with the loss on masked target tokens, and the `training` block of metrics.json.

Why one module: persona-lm's trainer (`workbench.lm.train`, a HookedTransformer on a word tokenizer) and
register-lm's (`workbench.lm.train_hf`, a GPT-2 saved as a Hugging Face folder) differ in model, tokenizer, data and
saving, but take exactly the same optimisation step. Keeping that step here means a change to it (schedule, clipping,
loss) reaches both organisms at once, and the same seed keeps giving the same weights in each.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError


@dataclass(frozen=True)
class TrainSection:
    """`[train]`: the AdamW run (persona-lm's defaults; register-lm's `HFTrainSection` changes a few)."""

    seed: int = 0
    """Seeds the model's initialisation and the batch of step s (seed * 1_000_003 + s)."""
    steps: int = 3000
    """AdamW steps, one freshly sampled batch each."""
    batch_size: int = 64
    """Texts per step."""
    lr: float = 1e-3
    """Peak learning rate, reached after warmup; cosine decay to 10% of it."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    grad_clip: float = 1.0
    """Gradient-norm clip."""
    threads: int = 1
    """CPU threads torch may use."""
    log_every: int = 250
    """Steps between log lines (and the last step)."""


@dataclass(frozen=True)
class EvalSection:
    """`[eval]`: the size and seed of the evaluation written to the card."""

    n: int = 1200
    """Prompts per split."""
    seed: int = 20_251_123
    """Seed of the evaluation prompts."""


def with_steps(recipe: Any, steps: int | None) -> Any:
    """`recipe` with its `[train] steps` replaced by `steps` (smoke runs); `None` keeps the recipe's."""
    if steps is None:
        return recipe
    if steps < 1:
        raise WorkbenchError(f"steps must be >= 1, got {steps}")
    return replace(recipe, train=replace(recipe.train, steps=int(steps)))


def adamw(model: torch.nn.Module, t: TrainSection) -> torch.optim.AdamW:
    return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, betas=(0.9, 0.98))


def lr_at(step: int, t: TrainSection) -> float:
    """Linear warmup, then cosine decay to 10% of lr."""
    if step < t.warmup_steps:
        return t.lr * (step + 1) / t.warmup_steps
    frac = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    return t.lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * frac)))


def train_step(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    *,
    step: int,
    t: TrainSection,
    logits_of: Callable[[Any], torch.Tensor] = lambda out: out,
) -> torch.Tensor:
    """One AdamW step on next-token cross-entropy over the targets where `mask` (N, T) is set; returns the loss.
    `logits_of` turns the model's output into logits (N, T, V) (a Hugging Face model returns an object)."""
    for g in opt.param_groups:
        g["lr"] = lr_at(step, t)
    logits = logits_of(model(tokens))
    nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), tokens[:, 1:], reduction="none")
    w = mask[:, 1:].float()
    loss = (nll * w).sum() / w.sum()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    opt.step()
    return loss


def due(step: int, every: int, t: TrainSection) -> bool:
    """Whether step `step` (0-based) ends a period of `every` steps or is the last step."""
    return (step + 1) % every == 0 or step + 1 == t.steps


def training_record(seconds: float, t: TrainSection, model: torch.nn.Module, d_vocab: int, log: list) -> dict:
    """The `training` block of metrics.json."""
    return {
        "seconds": seconds,
        "steps": t.steps,
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "d_vocab": d_vocab,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "log": log,
    }
