"""Our activation shards as SAELens's data provider: an endless, seeded, shuffled iterator of (batch, d_in) tokens.

Why tokens: an SAE reads vectors. A conv activation (C, H, W) is read as H*W tokens of d = C, one per spatial
position (layout "position": the same dictionary at every cell, as a 1x1 conv would be, so a latent is a channel
pattern and its activation over cells is a heatmap), or as one token of d = C*H*W (layout "flat": position-specific
features, far more parameters). A residual stream row (d_model,) is already one token. SAELens's `SAETrainer`
takes any `Iterator[Tensor]` of raw (unscaled) batches as its `data_provider`; `ShardTokens` is that iterator.

Memory stays bounded: shards are read one at a time (in a seeded order per epoch) into a mixing buffer of at most
`buffer_tokens` tokens, which is shuffled and served in batches. The same seed gives the same batch sequence, so a
resumed run that skips the batches already trained on sees exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from workbench.errors import WorkbenchError, unknown

LAYOUTS = ("position", "flat")


def token_dim(shape: tuple[int, ...], layout: str) -> int:
    """d_in of an SAE reading rows of `shape` (without the batch dimension) in `layout`."""
    if layout not in LAYOUTS:
        raise unknown("layout", layout, LAYOUTS)
    if len(shape) == 0:
        raise WorkbenchError("activation rows are scalars; an SAE needs vectors")
    if layout == "flat":
        return int(torch.Size(shape).numel())
    return int(shape[0]) if len(shape) == 3 else int(shape[-1])


def to_tokens(acts: Tensor, layout: str = "position") -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Activations (B, ...) -> (tokens (M, d), back) where `back(tokens_like)` restores the (B, ...) shape.

    "position": (B, C, H, W) -> (B*H*W, C) in (b, h, w) order; (B, T, d) or (B, d) -> (B*T, d) / (B, d).
    "flat": (B, ...) -> (B, prod(...)).
    """
    if layout not in LAYOUTS:
        raise unknown("layout", layout, LAYOUTS)
    if acts.ndim < 2:
        raise WorkbenchError(f"activations of shape {tuple(acts.shape)} have no batch dimension and feature axis")
    shape = acts.shape
    if layout == "flat":
        return acts.reshape(shape[0], -1), lambda t: t.reshape(shape)
    if acts.ndim == 4:
        b, c, h, w = shape
        tokens = acts.permute(0, 2, 3, 1).reshape(b * h * w, c)
        return tokens, lambda t: t.reshape(b, h, w, c).permute(0, 3, 1, 2)
    return acts.reshape(-1, shape[-1]), lambda t: t.reshape(shape)


def from_tokens(tokens: Tensor, shape: tuple[int, ...], layout: str = "position") -> Tensor:
    """Inverse of `to_tokens` for rows of `shape` (without batch): (M, d) -> (B, *shape)."""
    d = token_dim(shape, layout)
    if tokens.ndim != 2 or tokens.shape[1] != d:
        raise WorkbenchError(f"tokens of shape {tuple(tokens.shape)} do not fit rows of {shape} ({layout}: d={d})")
    if layout == "flat":
        return tokens.reshape(-1, *shape)
    if len(shape) == 3:
        c, h, w = shape
        return tokens.reshape(-1, h, w, c).permute(0, 3, 1, 2)
    return tokens.reshape(-1, *shape)


def _blocks(ds, hook: str) -> list[Callable[[], Tensor]]:
    """Loaders, one per shard of a saved dataset (read on demand), or one for an in-memory dataset."""
    path, meta = ds.path, ds.meta
    if path is None or "shards" not in meta:
        return [lambda: ds[hook]]
    loaders = []
    for shard in meta["shards"]:
        file = Path(path) / str(shard["file"])

        def load(file: Path = file) -> Tensor:
            try:
                with safe_open(str(file), framework="pt") as f:
                    return f.get_tensor(hook).to(torch.float32)
            except Exception as err:  # safetensors raises its own error types
                raise WorkbenchError(f"{file}: unreadable shard ({err})") from None

        loaders.append(load)
    return loaders


class ShardTokens(Iterator[Tensor]):
    """Endless iterator of (batch_size, d_in) float32 token batches from one hook of an `ActivationDataset`.

    Each epoch visits the shards in a seeded random order; tokens pass through a mixing buffer of up to
    `buffer_tokens` tokens that is shuffled before being served, so batches mix rows from several shards. The
    sequence is a pure function of (dataset, hook, layout, batch_size, buffer_tokens, seed). `skip(n)` advances by n
    batches (used on resume). `rows` restricts to a subset of dataset rows (e.g. a training split); it needs an
    in-memory read of the hook.
    """

    def __init__(
        self,
        ds,
        hook: str,
        batch_size: int = 4096,
        layout: str = "position",
        seed: int = 0,
        buffer_tokens: int = 1 << 20,
    ) -> None:
        if hook not in ds.shapes:
            raise unknown("hook", hook, ds.hooks)
        if int(batch_size) < 1:
            raise WorkbenchError(f"batch_size must be >= 1, got {batch_size}")
        self.d_in = token_dim(ds.shapes[hook], layout)
        per_row = int(torch.Size(ds.shapes[hook]).numel()) // self.d_in
        self.n_tokens = len(ds) * per_row
        if self.n_tokens < batch_size:
            raise WorkbenchError(
                f"the dataset holds {self.n_tokens} tokens at {hook!r}, fewer than one batch of {batch_size}; "
                "collect more rows or lower the batch size"
            )
        self.hook, self.layout, self.batch_size, self.seed = hook, layout, int(batch_size), int(seed)
        self.buffer_tokens = max(int(buffer_tokens), 2 * self.batch_size)
        self._loaders = _blocks(ds, hook)
        self.batches_served = 0
        self._it = self._generate()

    def _generate(self) -> Iterator[Tensor]:
        epoch = 0
        carry = torch.zeros(0, self.d_in)
        while True:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self._loaders), generator=gen).tolist()
            buffer: list[Tensor] = [carry]
            size = carry.shape[0]
            for i in order:
                tokens, _ = to_tokens(self._loaders[i](), self.layout)
                buffer.append(tokens)
                size += tokens.shape[0]
                if size >= self.buffer_tokens:
                    carry = yield from self._serve(torch.cat(buffer), gen)
                    buffer, size = [carry], carry.shape[0]
            carry = yield from self._serve(torch.cat(buffer), gen)
            epoch += 1

    def _serve(self, tokens: Tensor, gen: torch.Generator) -> Iterator[Tensor]:
        """Yield shuffled full batches from `tokens`; return the leftover (fewer than one batch) to carry over."""
        tokens = tokens[torch.randperm(tokens.shape[0], generator=gen)]
        full = tokens.shape[0] // self.batch_size * self.batch_size
        for start in range(0, full, self.batch_size):
            yield tokens[start : start + self.batch_size]
        return tokens[full:]

    def __iter__(self) -> ShardTokens:
        return self

    def __next__(self) -> Tensor:
        self.batches_served += 1
        return next(self._it)

    def skip(self, n: int) -> None:
        """Advance by `n` batches without returning them (resume)."""
        for _ in range(int(n)):
            next(self)
