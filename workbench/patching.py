"""Batched activation patching sweeps for TransformerLens `HookedTransformer` models.

Activation patching (Heimersheim & Nanda 2024) runs the model on one input, swaps one activation for its value on
another input, and measures how far the output moves. *Denoising* runs the corrupted prompt and patches in clean
activations (is this activation sufficient to restore the behaviour?); *noising* runs the clean prompt and patches
in corrupted ones (is it necessary?). The metric defaults to the logit difference between a right and a wrong answer
token, and the effect is normalised so that the clean run scores 1 and the corrupted run 0:

    effect = (mean patched - mean corrupt) / (mean clean - mean corrupt)      (means over prompt pairs)

Why this module instead of `transformer_lens.patching`: TransformerLens runs one full forward per index (layer x
position, layer x head), so a sweep costs n_layers * T forwards. Here patch variants of one layer become rows of
one batch (N pairs x V variants, chunked by `max_batch`), and more savings apply, each exact:
- a patch at layer l cannot change anything before block l, so the batched forward starts at block l from the base
  run's cached `resid_pre` (TransformerLens `start_at_layer`) instead of re-running blocks 0..l-1;
- in a causal model a patch at position p cannot change positions < p, so per-position sweeps recompute only
  positions p0.. (p0 = the first patched position of a chunk), with the keys and values of the earlier positions
  taken from the base run through a frozen TransformerLens KV cache (`truncate=True`; chunks span <= T/8 positions);
- the metric reads one answer position per pair, so only that position goes through `ln_final` and the unembedding
  (on a real vocabulary the unembedding of every position is a large part of a small model's forward);
- only the activations the sweep needs are cached (workbench `run_with_cache(names_filter=...)`).
The numbers agree with TransformerLens's own patching functions to float32 rounding (tests/test_patching.py).

Patches are applied with `workbench.interventions.patch_with` through `workbench.hooks`, the same hook machinery as
every other intervention in the workbench.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache, run_with_hooks
from workbench.interventions import patch_with

if TYPE_CHECKING:  # heavy imports only for type checkers
    import pandas as pd
    from transformer_lens import HookedTransformer

__all__ = [
    "ACTIVATIONS",
    "MODES",
    "PER",
    "Metric",
    "PatchResult",
    "auto_batch",
    "logit_diff",
    "patch_block_every",
    "patch_sweep",
    "results_frame",
]

ACTIVATIONS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
"""Activation kinds, named as TransformerLens `get_act_name` names them (`z` is the per-head attention output)."""
MODES = ("denoising", "noising")
PER = {
    "pos": ("layer", "pos"),
    "head": ("layer", "head"),
    "head_pos": ("layer", "pos", "head"),
    "layer": ("layer",),
}
"""What one patch covers -> the result's index axes. pos: one position (all channels / heads); head: one head at
every position (`z` only); head_pos: one head at one position (`z` only); layer: the whole activation of a layer."""

Metric = Callable[[Tensor, Tensor], Tensor]
"""`metric(logits (R, d_vocab), pair (R,) long) -> (R,)`: the metric of each row, given the logits at that row's
answer position and the index of the prompt pair the row belongs to (so per-pair answer tokens can be looked up)."""

DEFAULT_BUDGET_MB = 64.0


def logit_diff(answer: Tensor, wrong: Tensor) -> Metric:
    """Metric: logit(answer[pair]) - logit(wrong[pair]) per row. `answer`, `wrong`: (N,) token ids, one per pair."""
    answer = torch.as_tensor(answer, dtype=torch.long).reshape(-1)
    wrong = torch.as_tensor(wrong, dtype=torch.long).reshape(-1)
    if answer.shape != wrong.shape:
        raise WorkbenchError(f"answer and wrong tokens differ in length: {answer.numel()} vs {wrong.numel()}")

    def metric(logits: Tensor, pair: Tensor) -> Tensor:
        a = answer.to(logits.device)[pair]
        w = wrong.to(logits.device)[pair]
        return logits.gather(1, a[:, None])[:, 0] - logits.gather(1, w[:, None])[:, 0]

    return metric


# --------------------------------------------------------------------------------------------------- the result
@dataclass
class PatchResult:
    """One sweep: the normalised effect of every patch, the raw per-pair metric behind it, and bootstrap intervals.

    Shapes (L = swept layers, T = positions, H = heads, N = prompt pairs), by `per`:
    pos -> effect (L, T); head -> (L, H); head_pos -> (L, T, H) (TransformerLens's by-pos axis order); layer -> (L,).
    `per_pair` is effect's shape + (N,): the raw metric of each patched run for each pair. `clean`, `corrupt`: (N,)
    raw metric of the unpatched runs. `ci_low` / `ci_high`: percentile bootstrap 95% interval of the effect,
    resampling prompt pairs (None when n_boot = 0).
    """

    activation: str
    mode: str
    per: str
    layers: list[int]
    effect: Tensor
    per_pair: Tensor
    clean: Tensor
    corrupt: Tensor
    ci_low: Tensor | None = None
    ci_high: Tensor | None = None
    n_boot: int = 0
    seed: int = 0
    forwards: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def index(self) -> tuple[str, ...]:
        return PER[self.per]

    @property
    def n(self) -> int:
        return int(self.clean.numel())

    def frame(self) -> pd.DataFrame:
        """One row per patch: activation, mode, layer, pos/head, effect, ci_low, ci_high, n (tidy, for plotting)."""
        import pandas as pd

        grids = np.meshgrid(*[np.arange(s) for s in self.effect.shape], indexing="ij")
        cols: dict[str, Any] = {"activation": self.activation, "mode": self.mode}
        for axis, grid in zip(self.index, grids, strict=True):
            flat = grid.reshape(-1)
            cols[axis] = np.asarray(self.layers)[flat] if axis == "layer" else flat
        cols["effect"] = self.effect.reshape(-1).double().numpy()
        nan = np.full(self.effect.numel(), np.nan)
        cols["ci_low"] = self.ci_low.reshape(-1).double().numpy() if self.ci_low is not None else nan
        cols["ci_high"] = self.ci_high.reshape(-1).double().numpy() if self.ci_high is not None else nan
        cols["n"] = self.n
        return pd.DataFrame(cols)

    def top(self, k: int = 5) -> pd.DataFrame:
        """The k patches with the largest |effect|."""
        df = self.frame()
        return df.reindex(df["effect"].abs().sort_values(ascending=False).index).head(k).reset_index(drop=True)

    def to_json(self) -> dict:
        """Plain-JSON summary: settings, clean/corrupt means and the effect grid (nested lists)."""

        def grid(t: Tensor | None) -> Any:
            return None if t is None else t.double().tolist()

        return {
            "activation": self.activation,
            "mode": self.mode,
            "per": self.per,
            "index": list(self.index),
            "layers": self.layers,
            "n": self.n,
            "clean_mean": float(self.clean.double().mean()),
            "corrupt_mean": float(self.corrupt.double().mean()),
            "effect": grid(self.effect),
            "ci_low": grid(self.ci_low),
            "ci_high": grid(self.ci_high),
            "n_boot": self.n_boot,
            "seed": self.seed,
            "forwards": self.forwards,
            **self.notes,
        }


def results_frame(results: Iterable[PatchResult]) -> pd.DataFrame:
    """Concatenate the tidy frames of several sweeps (one row per patch, `activation` column tells them apart)."""
    import pandas as pd

    frames = [r.frame() for r in results]
    if not frames:
        raise WorkbenchError("no patching results to tabulate")
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------------------------------- helpers
def auto_batch(model: HookedTransformer, seq_len: int, budget_mb: float = DEFAULT_BUDGET_MB) -> int:
    """Rows per batched forward that keep the live activations of one block under about `budget_mb` MiB.

    A rough estimate on purpose (the right number depends on the backend): per row and position, the block holds
    the residual stream a few times over, q/k/v/z, the MLP hidden layer and the attention scores and pattern.
    """
    cfg = model.cfg
    d_mlp = cfg.d_mlp or 4 * cfg.d_model
    per_pos = 6 * cfg.d_model + 4 * cfg.n_heads * cfg.d_head + 2 * d_mlp + 3 * cfg.n_heads * seq_len
    bytes_per_row = 4 * seq_len * per_pos
    return max(1, int(budget_mb * 2**20 // bytes_per_row))


def _tokens(x: Any, what: str) -> Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 2 or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise WorkbenchError(f"{what} must be an integer token tensor of shape (N, T), got {tuple(t.shape)} {t.dtype}")
    return t.long()


def _variant_masks(per: str, activation: str, act_shape: Sequence[int]) -> Tensor:
    """Boolean masks (V, *act_shape-broadcastable): variant v patches where mask[v] is True.

    act_shape is one example's activation shape: (T, d_model) for residual-like hooks, (T, H, d_head) for `z`.
    """
    t = act_shape[0]
    trailing = len(act_shape) - 1
    if per == "layer":
        return torch.ones((1,) + (1,) * len(act_shape), dtype=torch.bool)
    if per == "pos":
        return torch.eye(t, dtype=torch.bool).reshape(t, t, *([1] * trailing))
    if activation != "z":
        raise WorkbenchError(f"per={per!r} needs per-head activations (activation 'z'), got {activation!r}")
    h = act_shape[1]
    if per == "head":
        return torch.eye(h, dtype=torch.bool).reshape(h, 1, h, 1)
    # head_pos: variant index = pos * H + head, so the result reshapes to (T, H)
    eye_t = torch.eye(t, dtype=torch.bool)[:, None, :, None]  # (T, 1, T, 1)
    eye_h = torch.eye(h, dtype=torch.bool)[None, :, None, :]  # (1, H, 1, H)
    return (eye_t & eye_h).reshape(t * h, t, h, 1)


@dataclass
class _Run:
    """What a run from the embedding needs to be restarted at any block: inputs to `forward(start_at_layer=...)`."""

    resid0: Tensor  # (N, T, d_model) residual stream entering block 0
    shortformer: Tensor | None  # (N, T, d_model) for shortformer positional embeddings, else None
    attention_mask: Tensor | None  # (N, T) when the model needs one (left padding), else None

    def kwargs(self, repeat: int, from_pos: int = 0) -> dict[str, Any]:
        """forward() keyword arguments for `repeat` stacked copies of the batch, positions from_pos.. only."""

        def rep(x: Tensor | None) -> Tensor | None:
            return None if x is None else x[:, from_pos:].repeat(repeat, *([1] * (x.ndim - 1)))

        return {"shortformer_pos_embed": rep(self.shortformer), "attention_mask": rep(self.attention_mask)}


def _can_truncate(model: HookedTransformer, base: _Run) -> bool:
    """Causal truncation needs a causal model without a padding mask and positions that a KV cache can offset."""
    cfg = model.cfg
    return (
        cfg.attention_dir == "causal"
        and base.attention_mask is None
        and cfg.positional_embedding_type in ("standard", "rotary", "shortformer")
    )


def _variant_positions(per: str, act_shape: Sequence[int]) -> Tensor | None:
    """The patched position of each variant (sorted ascending), or None when variants span every position."""
    if per == "pos":
        return torch.arange(act_shape[0])
    if per == "head_pos":
        return torch.arange(act_shape[0]).repeat_interleave(act_shape[1])
    return None


def _chunks(n_var: int, per_chunk: int, var_pos: Tensor | None, seq_len: int) -> list[tuple[int, int]]:
    """Consecutive variant ranges [v0, v1) of at most `per_chunk` variants. With truncation a chunk also spans at
    most seq_len // 8 positions, since every row of a chunk recomputes from the chunk's first patched position."""
    if var_pos is None:
        return [(v0, min(v0 + per_chunk, n_var)) for v0 in range(0, n_var, per_chunk)]
    span = max(1, seq_len // 8)
    chunks, v0 = [], 0
    while v0 < n_var:
        v1 = v0 + 1
        while v1 < n_var and v1 - v0 < per_chunk and int(var_pos[v1]) - int(var_pos[v0]) < span:
            v1 += 1
        chunks.append((v0, v1))
        v0 = v1
    return chunks


def _base_kv(model: HookedTransformer, base: _Run, first_layer: int, to_end: dict) -> dict[int, tuple[Tensor, Tensor]]:
    """Keys and values of the base run at every block from `first_layer` (hook_k / hook_v outputs: what a KV cache
    stores, before rotary)."""
    layers = range(first_layer, model.cfg.n_layers)
    names = [f"blocks.{i}.attn.hook_{kind}" for i in layers for kind in ("k", "v")]
    _, cache = run_with_cache(model, base.resid0, start_at_layer=0, **base.kwargs(1), **to_end, names_filter=names)
    return {i: (cache[f"blocks.{i}.attn.hook_k"], cache[f"blocks.{i}.attn.hook_v"]) for i in layers}


def _kv_entries(model: HookedTransformer, kv: dict, layer: int, p0: int, repeat: int) -> list:
    """A frozen TransformerLens KV cache holding the base run's positions < p0 for blocks layer.. (None before)."""
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    entries: list = [None] * model.cfg.n_layers
    for i in range(layer, model.cfg.n_layers):
        k, v = kv[i]
        entries[i] = TransformerLensKeyValueCacheEntry(
            past_keys=k[:, :p0].repeat(repeat, 1, 1, 1), past_values=v[:, :p0].repeat(repeat, 1, 1, 1), frozen=True
        )
    return entries


def _embed(model: HookedTransformer, tokens: Tensor) -> _Run:
    resid, _, shortformer, mask = model.input_to_embed(tokens)
    return _Run(resid, shortformer, mask)


def _metric_at(model: HookedTransformer, final_resid: Tensor, pos: Tensor, pair: Tensor, metric: Metric) -> Tensor:
    """Metric of each row from the residual after the last block: ln_final + unembed at the answer position only.

    final_resid: (R, T, d_model); pos, pair: (R,). Mirrors the tail of `HookedTransformer.forward` (ln_final, unembed,
    logit soft-cap) so the logits equal the full forward's logits at those positions.
    """
    from transformer_lens.utilities import apply_softcap

    rows = torch.arange(final_resid.shape[0], device=final_resid.device)
    x = final_resid[rows, pos.to(final_resid.device)][:, None, :]  # (R, 1, d_model)
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    logits = apply_softcap(model.unembed(x), model.cfg.output_logits_soft_cap)[:, 0]  # (R, d_vocab)
    values = metric(logits, pair.to(logits.device))
    if values.shape != (x.shape[0],):
        raise WorkbenchError(f"metric must return one value per row, shape ({x.shape[0]},), got {tuple(values.shape)}")
    return values.detach().float().cpu()


def _bootstrap(
    per_pair: np.ndarray, clean: np.ndarray, corrupt: np.ndarray, n_boot: int, seed: int, alpha: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of the normalised ratio-of-means effect, resampling prompt pairs; all patches at once.

    per_pair: (P, N); clean, corrupt: (N,). Each resample is a vector of pair multiplicities w (N,), so every mean is
    one matrix product: effect_b = (per_pair @ w - corrupt @ w) / (clean @ w - corrupt @ w). Resamples where the
    clean and corrupt means coincide are dropped (the effect is undefined there).
    """
    n = clean.size
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    w = np.zeros((n_boot, n))
    np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
    co = w @ corrupt
    denom = w @ clean - co  # (B,)
    with np.errstate(divide="ignore", invalid="ignore"):
        stats = (per_pair @ w.T - co[None, :]) / np.where(denom == 0, np.nan, denom)[None, :]  # (P, B)
    lo, hi = np.nanquantile(stats, [alpha / 2, 1 - alpha / 2], axis=1)
    return lo, hi


# --------------------------------------------------------------------------------------------------- the sweep
def patch_sweep(
    model: HookedTransformer,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    activation: str = "resid_pre",
    *,
    per: str = "pos",
    mode: str = "denoising",
    metric: Metric | None = None,
    answer_tokens: Tensor | Sequence[int] | None = None,
    wrong_tokens: Tensor | Sequence[int] | None = None,
    answer_pos: Tensor | Sequence[int] | int | None = None,
    layers: Sequence[int] | None = None,
    max_batch: int | None = None,
    budget_mb: float = DEFAULT_BUDGET_MB,
    truncate: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = False,
) -> PatchResult:
    """Patch `activation` at every layer x position (or head, head x position, whole layer) in batched forwards.

    clean_tokens, corrupt_tokens: (N, T) token ids; row i of each is one prompt pair (same length, same answer slot).
    metric: `Metric`; default `logit_diff(answer_tokens, wrong_tokens)` (both (N,)). answer_pos: position whose logits
    the metric reads, an int or (N,) per pair (default T - 1; use lengths - 1 for right-padded batches).
    mode: denoising (run corrupt, patch in clean) or noising (run clean, patch in corrupt); either way the effect is
    normalised so clean = 1 and corrupt = 0. max_batch: rows per forward (default: `auto_batch` under `budget_mb`);
    one variant (N rows) always goes in whole. truncate: for per-position patches recompute only the positions from
    the patch on (exact for causal models; False = the plain batched forward, for checking). n_boot: bootstrap
    resamples of the pairs for the 95% interval (0 = off).

    Returns a PatchResult: effect (L, T) for per="pos", (L, H) for "head", (L, T, H) for "head_pos", (L,) for "layer".
    """
    if activation not in ACTIVATIONS:
        raise unknown("activation", activation, ACTIVATIONS)
    if mode not in MODES:
        raise unknown("mode", mode, MODES)
    if per not in PER:
        raise unknown("per", per, PER)
    clean = _tokens(clean_tokens, "clean_tokens")
    corrupt = _tokens(corrupt_tokens, "corrupt_tokens")
    if clean.shape != corrupt.shape:
        raise WorkbenchError(
            f"clean and corrupt tokens must have the same shape (N, T), got {tuple(clean.shape)} and "
            f"{tuple(corrupt.shape)}"
        )
    n_pairs, seq_len = clean.shape
    if n_pairs == 0 or seq_len == 0:
        raise WorkbenchError(f"need at least one prompt pair with one token, got shape {tuple(clean.shape)}")
    n_layers = model.cfg.n_layers
    layer_list = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    bad = [x for x in layer_list if not 0 <= x < n_layers]
    if bad or not layer_list:
        raise WorkbenchError(f"layers must be a non-empty subset of 0..{n_layers - 1}, got {list(layers or [])}")

    if metric is None:
        if answer_tokens is None or wrong_tokens is None:
            raise WorkbenchError("pass answer_tokens and wrong_tokens (one per pair) or a metric")
        metric = logit_diff(torch.as_tensor(answer_tokens), torch.as_tensor(wrong_tokens))
        if torch.as_tensor(answer_tokens).numel() != n_pairs:
            raise WorkbenchError(
                f"need one answer token per pair ({n_pairs}), got {torch.as_tensor(answer_tokens).numel()}"
            )
    pos = _answer_positions(answer_pos, n_pairs, seq_len)

    from transformer_lens.utilities import get_act_name

    device = next(model.parameters()).device
    clean, corrupt, pos = clean.to(device), corrupt.to(device), pos.to(device)
    base_tokens, donor_tokens = (corrupt, clean) if mode == "denoising" else (clean, corrupt)
    names = {layer: get_act_name(activation, layer) for layer in layer_list}
    starts = {layer: get_act_name("resid_pre", layer) for layer in layer_list}
    pair = torch.arange(n_pairs, device=device)
    to_end = {"stop_at_layer": n_layers}

    with torch.no_grad():
        base, donor = _embed(model, base_tokens), _embed(model, donor_tokens)
        final_b, cache_b = run_with_cache(
            model, base.resid0, start_at_layer=0, **base.kwargs(1), **to_end, names_filter=list(starts.values())
        )
        final_d, cache_d = run_with_cache(
            model, donor.resid0, start_at_layer=0, **donor.kwargs(1), **to_end, names_filter=list(names.values())
        )
        missing = [name for name in names.values() if name not in cache_d]
        if missing:
            raise WorkbenchError(
                f"hook {missing[0]!r} exists but never ran in this model (e.g. mlp_out in an attn-only model); "
                f"patch another activation"
            )
        base_m = _metric_at(model, final_b, pos, pair, metric)
        donor_m = _metric_at(model, final_d, pos, pair, metric)
        clean_m, corrupt_m = (donor_m, base_m) if mode == "denoising" else (base_m, donor_m)
        if float(clean_m.double().mean()) == float(corrupt_m.double().mean()):
            raise WorkbenchError(
                "clean and corrupt runs give the same mean metric, so the normalised effect is undefined; "
                "check that the prompts differ and the answer tokens are right"
            )

        act_shape = tuple(cache_d[names[layer_list[0]]].shape[1:])
        masks = _variant_masks(per, activation, act_shape).to(device)
        n_var = masks.shape[0]
        rows_cap = max_batch if max_batch is not None else auto_batch(model, seq_len, budget_mb)
        if rows_cap < 1:
            raise WorkbenchError(f"max_batch must be >= 1, got {rows_cap}")
        per_chunk = max(1, rows_cap // n_pairs)
        # causal truncation: a patch at position p leaves positions < p untouched in every layer, so a chunk whose
        # patches all sit at >= p0 only recomputes positions p0.. (keys/values before p0 come from the base run)
        var_pos = _variant_positions(per, act_shape) if truncate and _can_truncate(model, base) else None
        kv = _base_kv(model, base, min(layer_list), to_end) if var_pos is not None else None
        chunks = _chunks(n_var, per_chunk, var_pos, seq_len)
        out = torch.empty(len(layer_list), n_var, n_pairs)
        forwards = 2 + (kv is not None)
        bar = _progress(len(layer_list) * len(chunks), progress, f"patch {activation}")
        first_answer = int(pos.min())
        for li, layer in enumerate(layer_list):
            donor_act = cache_d[names[layer]]  # (N, *act_shape)
            start = cache_b[starts[layer]]  # (N, T, d_model): nothing before block `layer` changes
            for v0, v1 in chunks:
                v = v1 - v0
                p0 = 0 if var_pos is None else min(int(var_pos[v0]), first_answer)
                m = masks[v0:v1]
                if m.shape[1] > 1:  # per-position masks: keep positions p0..
                    m = m[:, p0:]
                source = donor_act[:, p0:].repeat(v, *([1] * (donor_act.ndim - 1)))  # row r: variant r // N, pair r % N
                hook = patch_with(source, m.repeat_interleave(n_pairs, dim=0))
                extra = base.kwargs(v, p0)
                if p0 > 0:
                    extra["past_kv_cache"] = _kv_entries(model, kv, layer, p0, v)
                final = run_with_hooks(
                    model,
                    start[:, p0:].repeat(v, 1, 1),
                    start_at_layer=layer,
                    **extra,
                    **to_end,
                    fwd_hooks=[(names[layer], hook)],
                )
                values = _metric_at(model, final, (pos - p0).repeat(v), pair.repeat(v), metric)
                out[li, v0:v1] = values.reshape(v, n_pairs)
                forwards += 1
                bar.update(1)
        bar.close()

    grid = _grid_shape(per, len(layer_list), act_shape)
    per_pair = out.reshape(*grid, n_pairs)
    effect = torch.as_tensor(
        _normalised(
            per_pair.double().mean(-1).numpy(), clean_m.double().mean().item(), corrupt_m.double().mean().item()
        )
    )
    result = PatchResult(
        activation=activation,
        mode=mode,
        per=per,
        layers=layer_list,
        effect=effect.float(),
        per_pair=per_pair,
        clean=clean_m,
        corrupt=corrupt_m,
        n_boot=int(n_boot),
        seed=int(seed),
        forwards=forwards,
        notes={"max_batch": rows_cap, "seq_len": seq_len, "truncated": var_pos is not None},
    )
    if n_boot > 0:
        flat = per_pair.reshape(-1, n_pairs).double().numpy()
        lo, hi = _bootstrap(flat, clean_m.double().numpy(), corrupt_m.double().numpy(), int(n_boot), int(seed))
        result.ci_low = torch.as_tensor(lo.reshape(grid)).float()
        result.ci_high = torch.as_tensor(hi.reshape(grid)).float()
    return result


def _normalised(patched: np.ndarray, clean: float, corrupt: float) -> np.ndarray:
    from workbench.metrics import normalised_effect

    return np.asarray(normalised_effect(patched, clean, corrupt), dtype=np.float64)


def _grid_shape(per: str, n_layers: int, act_shape: Sequence[int]) -> tuple[int, ...]:
    if per == "pos":
        return (n_layers, act_shape[0])
    if per == "head":
        return (n_layers, act_shape[1])
    if per == "head_pos":
        return (n_layers, act_shape[0], act_shape[1])
    return (n_layers,)


def _answer_positions(answer_pos: Any, n_pairs: int, seq_len: int) -> Tensor:
    if answer_pos is None:
        return torch.full((n_pairs,), seq_len - 1, dtype=torch.long)
    p = torch.as_tensor(answer_pos, dtype=torch.long).reshape(-1)
    if p.numel() == 1:
        p = p.expand(n_pairs).clone()
    if p.numel() != n_pairs:
        raise WorkbenchError(f"answer_pos needs one position per pair ({n_pairs}) or one int, got {p.numel()}")
    p = torch.where(p < 0, p + seq_len, p)
    if bool(((p < 0) | (p >= seq_len)).any()):
        raise WorkbenchError(f"answer_pos must lie in 0..{seq_len - 1}")
    return p


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def patch_block_every(
    model: HookedTransformer,
    clean_tokens: Tensor,
    corrupt_tokens: Tensor,
    activations: Sequence[str] = ("resid_pre", "attn_out", "mlp_out"),
    **kwargs: Any,
) -> dict[str, PatchResult]:
    """One layer x position sweep per activation (TransformerLens `get_act_patch_block_every`, batched).

    kwargs go to `patch_sweep` (mode, metric or answer/wrong tokens, answer_pos, max_batch, n_boot, seed ...).
    """
    return {name: patch_sweep(model, clean_tokens, corrupt_tokens, name, per="pos", **kwargs) for name in activations}
