"""Labelled activation datasets from language models: prompts in, one row per prompt position out.

Why apart from the RL collectors: a token model needs padding-aware positions (`last`, `all`, or an index), not
levels and rollouts; the dataset format and writers are the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from workbench.data.dataset import (
    DEFAULT_SHARD_SIZE,
    ActivationDataset,
    LabelsLike,
    ShardWriter,
    _as_frame,
    _check_hooks,
    _device,
    _MemoryWriter,
    _Writer,
)
from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache

# ---------------------------------------------------------------------------------------------------- prompt collect
PROMPT_POSITIONS = ("last", "all")


def _prompt_tokens(tokens: Any, lengths: Any) -> tuple[Tensor, np.ndarray]:
    """(N, T) int64 tokens (right-padded with 0 for a list) and the (N,) true lengths, validated."""
    if isinstance(tokens, (list, tuple)):
        if lengths is not None:
            raise WorkbenchError("lengths is only for a padded (N, T) tensor; a list of prompts gives its own lengths")
        rows = []
        for i, t in enumerate(tokens):
            t = torch.as_tensor(t)
            if t.ndim != 1 or (t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)):
                raise WorkbenchError(f"prompt {i} must be a 1-D tensor of token ids, got {t.dtype} {tuple(t.shape)}")
            rows.append(t.to(dtype=torch.long, device="cpu"))
        n = len(rows)
        lens = np.array([r.numel() for r in rows], dtype=np.int64)
        width = int(lens.max()) if n else 0
        padded = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(rows):
            padded[i, : r.numel()] = r
    else:
        t = torch.as_tensor(tokens)
        if t.ndim != 2 or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise WorkbenchError(
                f"tokens must be an (N, T) integer tensor or a list of 1-D token tensors, got {t.dtype} "
                f"{tuple(t.shape)}"
            )
        padded = t.to(dtype=torch.long, device="cpu")
        n, width = padded.shape
        if lengths is None:
            lens = np.full(n, width, dtype=np.int64)
        else:
            la = lengths.detach().cpu().numpy() if isinstance(lengths, Tensor) else np.asarray(lengths)
            if la.shape != (n,) or not np.issubdtype(la.dtype, np.integer):
                raise WorkbenchError(f"lengths must be ({n},) integers (one per prompt), got {la.dtype} {la.shape}")
            lens = la.astype(np.int64)
            bad = np.flatnonzero(lens > width)
            if bad.size:
                i = int(bad[0])
                raise WorkbenchError(f"prompt {i} has length {lens[i]} but tokens has only {width} columns")
    if n == 0:
        raise WorkbenchError("no prompts to collect")
    empty = np.flatnonzero(lens < 1)
    if empty.size:
        raise WorkbenchError(f"prompt {int(empty[0])} has length {int(lens[empty[0]])}; every prompt needs a token")
    return padded, lens


def _prompt_positions(positions: Any, lens: np.ndarray) -> np.ndarray | None:
    """Per-prompt position for "last" / an int (checked against each prompt's length); None for "all"."""
    if isinstance(positions, str):
        if positions not in PROMPT_POSITIONS:
            raise unknown("positions", positions, PROMPT_POSITIONS)
        return None if positions == "all" else lens - 1
    if isinstance(positions, (bool, np.bool_)) or not isinstance(positions, (int, np.integer)):
        raise WorkbenchError(f'positions must be "last", "all" or an int, got {positions!r}')
    p = int(positions)
    pos = lens + p if p < 0 else np.full(lens.shape, p, dtype=np.int64)
    bad = np.flatnonzero((pos < 0) | (pos >= lens))
    if bad.size:
        i = int(bad[0])
        raise WorkbenchError(
            f"position {p} is outside prompt {i} (length {int(lens[i])}); "
            f"an int position must lie in [-length, length) for every prompt"
        )
    return pos.astype(np.int64)


def collect_prompts(
    model: nn.Module,
    tokens: Tensor | Sequence[Tensor],
    labels: LabelsLike | None,
    hooks: str | Sequence[str],
    positions: str | int = "last",
    batch_size: int = 32,
    out: str | Path | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    seed: int | None = None,
    progress: bool = True,
    *,
    lengths: Tensor | Sequence[int] | None = None,
) -> ActivationDataset:
    """Activations of a token model at `hooks` for N prompts, with the prompts' labels.

    `model` is any nn.Module called as `model(tokens)` on a (B, T) LongTensor (e.g. a TransformerLens
    HookedTransformer) whose activations at `hooks` are (B, T, ...); each row keeps the per-position shape (d_model,
    or n_heads x d_head, ...). `tokens` is an (N, T) integer tensor, right-padded, with the true lengths in `lengths`
    ((N,); default: all T), or a list of 1-D token tensors of varying length (padded with 0 here).
    `labels` is an N-row DataFrame or dict of columns (or None).

    `positions`:
    - "last": one row per prompt, at its last real token (length - 1);
    - "all": one row per (prompt, real position), in prompt then position order, the prompt's labels repeated;
    - an int: one row per prompt at that position; a negative int counts back from each prompt's last real token
      (-1 is the last). It must be inside every prompt.
    The labels table gains the columns `prompt` (row of `tokens`) and `position` (token index).

    Everything is checked before the model runs: labels vs prompt count, hook names, each prompt against
    `model.cfg.n_ctx` (when the model has one) and `model.cfg.d_vocab`, positions vs lengths. Only the named hooks are
    cached, under `torch.no_grad`, `batch_size` prompts at a time; padding after the longest prompt is dropped. Rows at
    real positions do not depend on padding for a causal model (a bidirectional one sees the pad tokens). The model's
    train/eval mode is left alone; with `seed`, torch's RNG is seeded for the forward passes (in a forked RNG state,
    so the caller's is untouched) so stochastic modules are reproducible too; `seed` is recorded in the meta either way.
    With `out` the rows are streamed to that folder in shards of `shard_size` rows (nothing is left there on error)
    and the dataset is returned loaded from it; otherwise it is built in memory. Same arguments, same dataset.
    """
    padded, lens = _prompt_tokens(tokens, lengths)
    n = len(lens)
    frame = _as_frame(labels, n)
    if len(frame) != n:
        raise WorkbenchError(f"{n} prompts but {len(frame)} labels")
    clash = [c for c in ("prompt", "position") if c in set(map(str, frame.columns))]
    if clash:
        raise WorkbenchError(f"label column {clash[0]!r} is reserved: collect_prompts adds it; rename yours")
    hooks = _check_hooks(model, hooks)
    cfg = getattr(model, "cfg", None)
    n_ctx, d_vocab = getattr(cfg, "n_ctx", None), getattr(cfg, "d_vocab", None)
    if isinstance(n_ctx, int) and n_ctx > 0:
        long = np.flatnonzero(lens > n_ctx)
        if long.size:
            i = int(long[0])
            raise WorkbenchError(f"prompt {i} has {int(lens[i])} tokens but the model's n_ctx is {n_ctx}")
    width = int(lens.max())
    padded = padded[:, :width]
    real = torch.arange(width)[None, :] < torch.as_tensor(lens)[:, None]
    ids = padded[real]
    vocab = d_vocab if isinstance(d_vocab, int) and d_vocab > 0 else None
    bad_ids = (ids < 0) | (ids >= vocab) if vocab is not None else ids < 0
    if bool(bad_ids.any()):
        flat = int(torch.nonzero(bad_ids)[0, 0])
        rows = np.repeat(np.arange(n), lens)
        i = int(rows[flat])
        tok = int(ids[flat])
        limit = f" (the model's d_vocab is {vocab})" if vocab is not None else ""
        raise WorkbenchError(f"prompt {i} has token id {tok}, outside the vocabulary{limit}")
    pos = _prompt_positions(positions, lens)
    if int(batch_size) < 1:
        raise WorkbenchError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = int(batch_size)

    source = {
        "kind": "prompts",
        "description": f"{positions} positions of {n} prompts through {type(model).__name__}",
        "model": type(model).__name__,
        "positions": positions if isinstance(positions, str) else int(positions),
        "prompts": n,
        "max_length": width,
    }
    writer: _Writer
    if out is not None:
        writer = ShardWriter(out, hooks, shard_size, source=source, seed=seed)
    else:
        writer = _MemoryWriter(hooks, source=source, seed=seed)
    device = _device(model)
    rng = torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], enabled=seed is not None)
    with writer, rng, torch.no_grad():
        if seed is not None:
            torch.manual_seed(int(seed))
        with tqdm(total=n, desc="collect prompts", unit="prompt", disable=not progress) as bar:
            for lo in range(0, n, batch_size):
                idx = np.arange(lo, min(lo + batch_size, n))
                _, cache = run_with_cache(model, padded[lo : lo + idx.size].to(device), names_filter=hooks)
                if pos is None:
                    mask = real[lo : lo + idx.size]
                    prompt = np.repeat(idx, lens[idx])
                    where = np.concatenate([np.arange(k) for k in lens[idx]])
                else:
                    mask = None
                    prompt, where = idx, pos[idx]
                acts: dict[str, Tensor] = {}
                for h in hooks:
                    t = cache[h]
                    if t.ndim < 2 or tuple(t.shape[:2]) != (idx.size, width):
                        raise WorkbenchError(
                            f"hook {h!r} output has shape {tuple(t.shape)}; collect_prompts needs (batch, position, "
                            f"...) = ({idx.size}, {width}, ...) -- pick a per-position hook"
                        )
                    if mask is not None:
                        acts[h] = t[mask.to(t.device)]
                    else:
                        sel = torch.as_tensor(where, device=t.device)
                        acts[h] = t[torch.arange(idx.size, device=t.device), sel]
                rows = frame.iloc[prompt].reset_index(drop=True)
                rows["prompt"] = prompt.astype(np.int64)
                rows["position"] = where.astype(np.int64)
                writer.add(acts, rows)
                bar.update(idx.size)
        return writer.close()


__all__ = ["PROMPT_POSITIONS", "collect_prompts"]
