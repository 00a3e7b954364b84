"""Batched activation patching sweeps for TransformerLens `HookedTransformer` models.

Activation patching (Heimersheim & Nanda 2024) runs the model on one input, swaps one activation for its value on
another input, and measures how far the output moves. *Denoising* runs the corrupted prompt and patches in clean
activations (is this activation sufficient to restore the behaviour?); *noising* runs the clean prompt and patches
in corrupted ones (is it necessary?). The metric defaults to the logit difference between a right and a wrong answer
token, and the effect is normalised so that the clean run scores 1 and the corrupted run 0:

    effect = (mean patched - mean corrupt) / (mean clean - mean corrupt)      (means over prompt pairs)

Why this module instead of `transformer_lens.patching`: TransformerLens runs one full forward per index (layer x
position, layer x head), so a sweep costs n_layers * T forwards. Here every (variant, prompt pair) is one row of a
batched forward, and more savings apply, each exact:
- a row whose patched values equal the base run's own, bitwise (e.g. positions before the first token where clean
  and corrupt differ), is the base run, so it is not computed; in a causal model a row whose first changed position
  lies after its answer position is the base run too;
- a patch at layer l cannot change anything before block l, so the forward starts at block l (and for `z`,
  `attn_out`, ... after block l's attention) from the base run's cached activations;
- in a causal model a row whose first changed position is p cannot change positions < p, so it recomputes only
  positions p.., with the base run's keys and values for the earlier ones (rows are sorted by p and batched);
- the metric reads one answer position per pair, so the last block computes keys and values and then only that
  position (query, attention output, MLP), and only it goes through `ln_final` and the unembedding.
The forward itself is `_Lean`, a hook-free re-implementation of the block on the model's own parameters (fused
q/k/v matmul, fused attention kernel), checked against the model's own forward before each sweep. Models it does
not cover (`lean_unsupported`: rotary, grouped-query attention, gated MLPs, ...) run the same sweep through
TransformerLens's forward with a patching hook (`engine="hooks"`). Either way the numbers agree with
TransformerLens's own patching functions to float32 rounding (tests/test_patching.py, tests/test_patching_lean.py).

On the hook path, patches are applied with `workbench.interventions.patch_with` through `workbench.hooks`, the same
hook machinery as every other intervention in the workbench.
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
    "ENGINES",
    "LEAN_ACTIVATIONS",
    "auto_batch",
    "lean_unsupported",
    "logit_diff",
    "patch_block_every",
    "patch_sweep",
    "results_frame",
]

ACTIVATIONS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out", "z")
"""Activation kinds, named as TransformerLens `get_act_name` names them (`z` is the per-head attention output)."""
MODES = ("denoising", "noising")
ENGINES = ("auto", "lean", "hooks")
"""How `patch_sweep` runs its forwards: the hook-free lean forward, TransformerLens's forward with hooks, or the lean
one where it applies (auto)."""
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


def _logits_at(model: HookedTransformer, final_resid: Tensor, pos: Tensor) -> Tensor:
    """Logits (R, d_vocab) at one position per row from the residual after the last block (R, T, d_model): ln_final +
    unembed at that position only. Mirrors the tail of `HookedTransformer.forward` (ln_final, unembed, logit
    soft-cap) so the logits equal the full forward's logits at those positions."""
    from transformer_lens.utilities import apply_softcap

    rows = torch.arange(final_resid.shape[0], device=final_resid.device)
    x = final_resid[rows, pos.to(final_resid.device)][:, None, :]  # (R, 1, d_model)
    if model.cfg.normalization_type is not None:
        x = model.ln_final(x)
    return apply_softcap(model.unembed(x), model.cfg.output_logits_soft_cap)[:, 0]  # (R, d_vocab)


def _metric_at(model: HookedTransformer, final_resid: Tensor, pos: Tensor, pair: Tensor, metric: Metric) -> Tensor:
    """Metric of each row (R,) from the residual after the last block (R, T, d_model); pos, pair: (R,)."""
    logits = _logits_at(model, final_resid, pos)
    values = metric(logits, pair.to(logits.device))
    if values.shape != (logits.shape[0],):
        raise WorkbenchError(
            f"metric must return one value per row, shape ({logits.shape[0]},), got {tuple(values.shape)}"
        )
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


# --------------------------------------------------------------------------------------------------- lean forward
_NORMS = {"LayerNorm": "LN", "LayerNormPre": "LNPre", "RMSNorm": "RMS", "RMSNormPre": "RMSPre", "Identity": None}
LEAN_ACTIVATIONS = ("resid_pre", "z", "attn_out", "resid_mid", "mlp_out", "resid_post")


def lean_unsupported(model: HookedTransformer) -> str | None:
    """Why `patch_sweep`'s hook-free forward cannot run `model` (None when it can).

    The lean forward re-implements a plain pre-norm transformer block (LayerNorm / RMSNorm or none, multi-head
    attention with standard positional embeddings, an ungated MLP or none) on the model's own parameters; anything
    else (rotary, shortformer, ALiBi, grouped-query or local attention, gated or parallel MLPs, post-norm, soft-capped
    attention scores, attention sinks, ...) goes through TransformerLens's own forward with hooks instead.
    """
    from transformer_lens import HookedTransformer
    from transformer_lens.components import Attention
    from transformer_lens.components.mlps.mlp import MLP

    cfg = model.cfg
    checks = {
        "not a HookedTransformer": not isinstance(model, HookedTransformer),
        f"positional embedding {cfg.positional_embedding_type!r}": cfg.positional_embedding_type != "standard",
        "grouped-query attention": cfg.n_key_value_heads not in (None, cfg.n_heads),
        "local attention": bool(getattr(cfg, "attn_types", None)) and "local" in cfg.attn_types,
        "parallel attention and MLP": cfg.parallel_attn_mlp,
        "gated MLP": cfg.gated_mlp,
        "layer norm inside the MLP": cfg.is_layer_norm_activation() if cfg.act_fn else False,
        "normalisation before and after": cfg.use_normalization_before_and_after,
        "attention score soft-cap": bool(cfg.attn_scores_soft_cap and cfg.attn_scores_soft_cap > 0),
        "attention sinks": bool(getattr(cfg, "use_attention_sinks", False)),
        "log-n attention scaling": bool(getattr(cfg, "use_logn_attn", False)),
        "clipped q/k/v": getattr(cfg, "clip_qkv", None) is not None,
        "4-bit weights": bool(getattr(cfg, "load_in_4bit", False)),
    }
    try:
        from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

        checks["post-norm architecture"] = cfg.original_architecture in POST_NORM_ARCHITECTURES
    except ImportError:  # older TransformerLens: no post-norm architectures
        pass
    checks["q/k norm"] = "Olmo" in str(cfg.original_architecture or "")
    for name, bad in checks.items():
        if bad:
            return name
    for block in model.blocks:
        if type(block.attn) is not Attention:
            return f"attention class {type(block.attn).__name__}"
        if not cfg.attn_only and type(block.mlp) is not MLP:
            return f"MLP class {type(block.mlp).__name__}"
        norms = [block.ln1] + ([] if cfg.attn_only else [block.ln2])
        for ln in norms:
            if type(ln).__name__ not in _NORMS:
                return f"normalisation {type(ln).__name__}"
    return None


def _norm_params(ln: torch.nn.Module) -> tuple[str | None, Tensor | None, Tensor | None, float]:
    kind = _NORMS[type(ln).__name__]
    return kind, getattr(ln, "w", None), getattr(ln, "b", None), float(getattr(ln, "eps", 0.0))


def _norm(x: Tensor, params: tuple) -> Tensor:
    """TransformerLens's LayerNorm / LayerNormPre / RMSNorm / RMSNormPre / none, on the last dimension."""
    kind, w, b, eps = params
    if kind is None:
        return x
    if kind in ("LN", "LNPre"):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], w, b, eps)
    x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x * w if kind == "RMS" else x


class _Lean:
    """A hook-free forward over a `HookedTransformer`'s own parameters, restartable at any block and position.

    Why: TransformerLens's forward goes through ~20 hook points and einsum rearrangements per block; a sweep of many
    small patched forwards pays for them each time. Here one block is: norm, one fused q/k/v matmul (addmm), batched
    attention over the base run's cached keys/values for earlier positions, one output matmul, norm, two MLP
    matmuls. In the last block only the answer position's query, attention output and MLP are computed (the metric
    reads nothing else). Same maths as TransformerLens (`lean_unsupported` lists what it does not cover), equal to
    float32 rounding; `_lean_matches` checks that against the model's own forward before each sweep.

    The fused weights are built once per sweep from the live parameters, so edits to the model between sweeps count.
    """

    def __init__(self, model: HookedTransformer):
        cfg = model.cfg
        self.model, self.cfg = model, cfg
        self.n_layers, self.h, self.dh, self.d = cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model
        self.causal = cfg.attention_dir == "causal"
        self.flops = 0  # multiply-adds x 2 of every matmul run so far (the profile's compute count)
        self.layers: list[dict[str, Any]] = []
        d, hd = self.d, self.h * self.dh
        for block in model.blocks:
            a = block.attn
            wq, wk, wv = (w.permute(1, 0, 2).reshape(d, hd) for w in (a.W_Q, a.W_K, a.W_V))
            bq, bk, bv = (b.reshape(hd) for b in (a.b_Q, a.b_K, a.b_V))
            layer = {
                "ln1": _norm_params(block.ln1),
                "w_qkv": torch.cat([wq, wk, wv], 1).contiguous(),
                "b_qkv": torch.cat([bq, bk, bv]).contiguous(),
                "w_q": wq.contiguous(),
                "b_q": bq.contiguous(),
                "w_kv": torch.cat([wk, wv], 1).contiguous(),
                "b_kv": torch.cat([bk, bv]).contiguous(),
                "w_o": a.W_O.reshape(hd, d).contiguous(),
                "b_o": a.b_O,
                "scale": float(a.attn_scale),
            }
            if not cfg.attn_only:
                m = block.mlp
                layer |= {"ln2": _norm_params(block.ln2), "w_in": m.W_in, "b_in": m.b_in, "w_out": m.W_out}
                layer |= {"b_out": m.b_out, "act": m.act_fn}
            self.layers.append(layer)

    # -- pieces of a block; R rows, S positions p0..p0+S-1
    def attention(
        self, i: int, x: Tensor, past: tuple[Tensor, Tensor] | None, p0: int, at: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """z (R, S or 1, H, dh) of block i on resid_pre x (R, S, d), and this call's keys/values (R, S, H, dh).

        past: the base run's keys/values (R, p0, H, dh) of positions < p0, or None. at: None for every query
        position, or (R,) indices into S: one query per row (the answer position)."""
        L = self.layers[i]
        r, s, d = x.shape
        hx = _norm(x, L["ln1"]).reshape(r * s, d)
        if at is None:
            q, k, v = torch.addmm(L["b_qkv"], hx, L["w_qkv"]).view(r, s, 3, self.h, self.dh).unbind(2)
            self.flops += 2 * r * s * d * 3 * self.h * self.dh
            qpos = torch.arange(p0, p0 + s, device=x.device)[None, :]  # (1, S)
        else:
            k, v = torch.addmm(L["b_kv"], hx, L["w_kv"]).view(r, s, 2, self.h, self.dh).unbind(2)
            hq = hx.view(r, s, d)[torch.arange(r, device=x.device), at]
            q = torch.addmm(L["b_q"], hq, L["w_q"]).view(r, 1, self.h, self.dh)
            self.flops += 2 * r * s * d * 2 * self.h * self.dh + 2 * r * d * self.h * self.dh
            qpos = (at + p0)[:, None]  # (R, 1)
        keys, values = (k, v) if past is None else (torch.cat([past[0], k], 1), torch.cat([past[1], v], 1))
        seen = None  # softmax(q k^T / scale) v over the keys each query may see (fused kernel; 2-3x the einsums)
        if self.causal:
            kpos = torch.arange(keys.shape[1], device=x.device)
            seen = (kpos[None, None, :] <= qpos[..., None])[:, None]  # (1 or R, 1, Sq, Tk)
        z = torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=seen, scale=1.0 / L["scale"]
        ).transpose(1, 2)  # (R, Sq, H, dh)
        self.flops += 4 * z.shape[0] * z.shape[1] * keys.shape[1] * self.h * self.dh
        return z, k, v

    def attn_out(self, i: int, z: Tensor) -> Tensor:
        r, s = z.shape[:2]
        L = self.layers[i]
        self.flops += 2 * r * s * self.h * self.dh * self.d
        return torch.addmm(L["b_o"], z.reshape(r * s, self.h * self.dh), L["w_o"]).view(r, s, self.d)

    def mlp_out(self, i: int, mid: Tensor) -> Tensor:
        L = self.layers[i]
        r, s, d = mid.shape
        pre = torch.addmm(L["b_in"], _norm(mid, L["ln2"]).reshape(r * s, d), L["w_in"])
        self.flops += 4 * r * s * d * pre.shape[1]
        return torch.addmm(L["b_out"], L["act"](pre), L["w_out"]).view(r, s, d)

    def after_mid(self, i: int, mid: Tensor) -> Tensor:
        return mid if self.cfg.attn_only else mid + self.mlp_out(i, mid)

    def block(self, i: int, x: Tensor, past: tuple[Tensor, Tensor] | None, p0: int, at: Tensor | None) -> Tensor:
        z, _, _ = self.attention(i, x, past, p0, at)
        if at is not None:
            x = x[torch.arange(x.shape[0], device=x.device), at][:, None]
        return self.after_mid(i, x + self.attn_out(i, z))

    # -- whole runs
    def run(self, resid0: Tensor, record: set[str]) -> tuple[Tensor, dict[str, list[Tensor]]]:
        """Every block at every position from the embedding (N, T, d): final residual (N, T, d) and the recorded
        activations (TransformerLens names without the layer: resid_pre, k, v, z, attn_out, resid_mid, mlp_out,
        resid_post), one tensor per layer, batch first."""
        acts: dict[str, list[Tensor]] = {name: [] for name in record}

        def keep(name: str, t: Tensor) -> None:
            if name in acts:
                acts[name].append(t)

        x = resid0
        for i in range(self.n_layers):
            keep("resid_pre", x)
            z, k, v = self.attention(i, x, None, 0, None)
            keep("k", k)
            keep("v", v)
            keep("z", z)
            attn = self.attn_out(i, z)
            keep("attn_out", attn)
            mid = x + attn
            if self.cfg.attn_only:
                x = mid
            else:
                keep("resid_mid", mid)
                mlp = self.mlp_out(i, mid)
                keep("mlp_out", mlp)
                x = mid + mlp
            keep("resid_post", x)
        return x, acts

    def resume(
        self,
        layer: int,
        stage: str,
        act: Tensor,
        base: dict[str, Tensor],
        past: Callable[[int], tuple[Tensor, Tensor] | None],
        p0: int,
        at: Tensor,
    ) -> Tensor:
        """The final residual at each row's answer position (R, 1, d), from the activation `act` (R, S, ...) of kind
        `stage` at block `layer`, positions p0.. . base: the base run's activations at that block for the same rows
        and positions (resid_pre for z / attn_out, resid_mid for mlp_out); past(i): keys/values of positions < p0."""
        last = self.n_layers - 1
        rows = torch.arange(act.shape[0], device=act.device)

        def here(t: Tensor) -> Tensor:  # everything after the last block's attention: the answer position only
            return t[rows, at][:, None] if layer == last else t

        if stage == "resid_pre":
            x = self.block(layer, act, past(layer), p0, at if layer == last else None)
        elif stage in ("z", "attn_out"):
            out = self.attn_out(layer, here(act)) if stage == "z" else here(act)
            x = self.after_mid(layer, here(base["resid_pre"]) + out)
        elif stage == "resid_mid":
            x = self.after_mid(layer, here(act))
        elif stage == "mlp_out":
            x = here(base["resid_mid"]) + here(act)
        else:  # resid_post
            x = here(act)
        for i in range(layer + 1, self.n_layers):
            x = self.block(i, x, past(i), p0, at if i == last else None)
        return x


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
    engine: str = "auto",
) -> PatchResult:
    """Patch `activation` at every layer x position (or head, head x position, whole layer) in batched forwards.

    clean_tokens, corrupt_tokens: (N, T) token ids; row i of each is one prompt pair (same length, same answer slot).
    metric: `Metric`; default `logit_diff(answer_tokens, wrong_tokens)` (both (N,)). answer_pos: position whose logits
    the metric reads, an int or (N,) per pair (default T - 1; use lengths - 1 for right-padded batches).
    mode: denoising (run corrupt, patch in clean) or noising (run clean, patch in corrupt); either way the effect is
    normalised so clean = 1 and corrupt = 0. max_batch: rows per forward (default: `auto_batch` under `budget_mb`);
    one variant (N rows) always goes in whole. truncate: for per-position patches recompute only the positions from
    the patch on (exact for causal models; False = the plain batched forward, for checking). n_boot: bootstrap
    resamples of the pairs for the 95% interval (0 = off). engine: "lean" runs the hook-free forward (`_Lean`; the
    sweep's rows skip what cannot change, see `_sweep_lean`), "hooks" TransformerLens's forward with a patching hook,
    "auto" (default) the lean one when `lean_unsupported(model)` is None, the activation is one it covers, no padding
    mask is needed and its logits match the model's own forward on one prompt; `notes["engine"]` says which ran.

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
    if max_batch is not None and max_batch < 1:
        raise WorkbenchError(f"max_batch must be >= 1, got {max_batch}")

    device = next(model.parameters()).device
    clean, corrupt, pos = clean.to(device), corrupt.to(device), pos.to(device)
    base_tokens, donor_tokens = (corrupt, clean) if mode == "denoising" else (clean, corrupt)
    if engine not in ENGINES:
        raise unknown("engine", engine, ENGINES)
    sweep = _Sweep(activation, per, layer_list, pos, metric, max_batch, budget_mb, truncate, progress)
    with torch.no_grad():
        base, donor = _embed(model, base_tokens), _embed(model, donor_tokens)
        why_not = _why_not_lean(model, activation, base, donor) if engine != "hooks" else "engine='hooks'"
        if engine == "lean" and why_not is not None:
            raise WorkbenchError(f"the lean forward cannot run this sweep ({why_not}); use engine='hooks' or 'auto'")
        if why_not is None:
            out, clean_m, corrupt_m, act_shape, notes = _sweep_lean(model, _Lean(model), base, donor, mode, sweep)
        else:
            out, clean_m, corrupt_m, act_shape, notes = _sweep_hooks(model, base, donor, mode, sweep)
            notes["lean_unused_because"] = why_not
    forwards = notes.pop("forwards")

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
        notes=notes,
    )
    if n_boot > 0:
        flat = per_pair.reshape(-1, n_pairs).double().numpy()
        lo, hi = _bootstrap(flat, clean_m.double().numpy(), corrupt_m.double().numpy(), int(n_boot), int(seed))
        result.ci_low = torch.as_tensor(lo.reshape(grid)).float()
        result.ci_high = torch.as_tensor(hi.reshape(grid)).float()
    return result


def _clean_corrupt(base_m: Tensor, donor_m: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """(clean, corrupt) metrics from the base and donor runs; refuses pairs whose means coincide."""
    clean_m, corrupt_m = (donor_m, base_m) if mode == "denoising" else (base_m, donor_m)
    if float(clean_m.double().mean()) == float(corrupt_m.double().mean()):
        raise WorkbenchError(
            "clean and corrupt runs give the same mean metric, so the normalised effect is undefined; "
            "check that the prompts differ and the answer tokens are right"
        )
    return clean_m, corrupt_m


def _never_ran(name: str) -> WorkbenchError:
    return WorkbenchError(
        f"hook {name!r} exists but never ran in this model (e.g. mlp_out in an attn-only model); "
        f"patch another activation"
    )


def _why_not_lean(model: HookedTransformer, activation: str, base: _Run, donor: _Run) -> str | None:
    """None when the lean forward can run this sweep, else the reason (then the TransformerLens hook path runs)."""
    if activation not in LEAN_ACTIVATIONS:
        return f"activation {activation!r}"
    if base.attention_mask is not None or donor.attention_mask is not None:
        return "a padding attention mask"
    why = lean_unsupported(model)
    if why is None and not _lean_matches(model, base):
        why = "its logits differ from the model's own forward"
    return why


def _lean_matches(model: HookedTransformer, run: _Run) -> bool:
    """The lean forward against `model`'s own forward on one prompt (at most 16 positions): logits from a full run
    and from a run restarted at half the prompt with the first half's keys/values, both within float32 rounding."""
    with torch.no_grad():
        return _lean_matches_nograd(model, run)


def _lean_matches_nograd(model: HookedTransformer, run: _Run) -> bool:
    s = min(run.resid0.shape[1], 16)
    resid0 = run.resid0[:1, :s]
    lean = _Lean(model)
    ref = model(resid0, start_at_layer=0)[0, -1]  # (d_vocab,)
    final, acts = lean.run(resid0, {"k", "v"})
    p0 = s // 2

    def past(i: int) -> tuple[Tensor, Tensor] | None:
        return (acts["k"][i][:, :p0], acts["v"][i][:, :p0]) if p0 > 0 else None

    at = torch.tensor([s - 1 - p0], device=resid0.device)
    resumed = lean.resume(0, "resid_pre", resid0[:, p0:], {}, past, p0, at)
    last = torch.tensor([s - 1], device=resid0.device)
    tol = 1e-4 * (1.0 + float(ref.abs().max()))
    got = [_logits_at(model, final, last)[0], _logits_at(model, resumed, torch.zeros_like(at))[0]]
    return all(bool(torch.isfinite(g).all()) and float((g - ref).abs().max()) <= tol for g in got)


@dataclass(frozen=True)
class _Sweep:
    """What one `patch_sweep` asks of either engine (`_sweep_lean`, `_sweep_hooks`), validated by `patch_sweep`."""

    activation: str  # the patched activation (`resid_pre`, `z`, `attn_out`, ...)
    per: str  # what one variant patches (`layer`, `pos`, `head`, `head_pos`)
    layer_list: list[int]  # the layers swept, in order
    pos: Tensor  # (N,) answer position of each pair
    metric: Metric  # the per-pair metric read at the answer position
    max_batch: int | None  # rows per forward; None: `auto_batch` for the chunk's length
    budget_mb: float  # memory budget behind `auto_batch`
    truncate: bool  # start later positions' recomputation at the first changed position (causal models)
    progress: bool  # a progress bar over layers


def _sweep_lean(
    model: HookedTransformer,
    lean: _Lean,
    base: _Run,
    donor: _Run,
    mode: str,
    sweep: _Sweep,
) -> tuple[Tensor, Tensor, Tensor, tuple[int, ...], dict[str, Any]]:
    """The sweep on the lean forward: out (L, V, N), clean and corrupt metrics (N,), one example's activation shape,
    notes. Rows are (variant, pair) combinations, and three exact savings apply to each row:
    - a row whose patched values equal the base run's own (bitwise) is the base run: its metric is the base metric;
    - in a causal model a row whose first changed position p lies after its answer position is the base run too, and
      every other row only recomputes positions p.. (the base run's keys/values serve the earlier positions);
    - the batched forward starts at the patched block and stage (after attention for `z`, `attn_out`, ...), and in
      the last block only the answer position is computed after the keys and values.
    Rows are sorted by p and cut into chunks whose rows start at nearly the same position."""
    activation, per, layer_list, pos, metric = sweep.activation, sweep.per, sweep.layer_list, sweep.pos, sweep.metric
    max_batch, budget_mb, truncate, progress = sweep.max_batch, sweep.budget_mb, sweep.truncate, sweep.progress
    if model.cfg.attn_only and activation in ("resid_mid", "mlp_out"):
        raise _never_ran(f"blocks.{layer_list[0]}.hook_{activation}")
    n_pairs, seq_len = base.resid0.shape[:2]
    device = base.resid0.device
    need = {"k", "v", activation}
    need |= {"resid_pre"} if activation in ("z", "attn_out") else set()
    need |= {"resid_mid"} if activation == "mlp_out" else set()
    final_b, acts_b = lean.run(base.resid0, need)
    final_d, acts_d = lean.run(donor.resid0, {activation})
    pair = torch.arange(n_pairs, device=device)
    base_m = _metric_at(model, final_b, pos, pair, metric)
    clean_m, corrupt_m = _clean_corrupt(base_m, _metric_at(model, final_d, pos, pair, metric), mode)

    act_shape = tuple(acts_d[activation][0].shape[1:])  # (T, d_model), or (T, H, d_head) for z
    masks = _variant_masks(per, activation, act_shape).to(device)
    n_var = masks.shape[0]
    where = masks.expand(n_var, *act_shape)[..., 0]  # (V, T) or (V, T, H): what each variant patches
    causal = truncate and lean.causal
    out = base_m[None, None, :].repeat(len(layer_list), n_var, 1)  # rows left out are the base run
    forwards, skipped, rows_unembedded = 2, 0, 0
    bar = _progress(len(layer_list), progress, f"patch {activation}")
    for li, layer in enumerate(layer_list):
        b, dn = acts_b[activation][layer], acts_d[activation][layer]  # (N, *act_shape)
        changed = (b != dn).any(-1)  # (N, T) or (N, T, H)
        hit = where[:, None] & changed[None]  # (V, N, T[, H])
        if hit.ndim == 4:
            hit = hit.any(-1)
        has = hit.any(-1)  # (V, N)
        if causal:
            first = hit.to(torch.uint8).argmax(-1)  # first changed position (argmax returns the first maximum)
            has &= first <= pos[None, :]
        else:
            first = torch.zeros_like(has, dtype=torch.long)
        v_idx, n_idx = has.nonzero(as_tuple=True)
        skipped += n_var * n_pairs - int(v_idx.numel())
        p = first[v_idx, n_idx]
        order = torch.argsort(p, stable=True)
        v_idx, n_idx, p_list = v_idx[order], n_idx[order], p[order].tolist()
        for i0, i1 in _row_chunks(p_list, seq_len, max_batch, lambda s: auto_batch(model, s, budget_mb)):
            vi, ni, p0 = v_idx[i0:i1], n_idx[i0:i1], p_list[i0]
            mk = where[vi, p0:]  # (R, S[, H])
            act = torch.where(mk[..., None], dn[ni, p0:], b[ni, p0:])
            base_rows = {name: acts_b[name][layer][ni, p0:] for name in ("resid_pre", "resid_mid") if name in need}

            def past(i: int, ni: Tensor = ni, p0: int = p0) -> tuple[Tensor, Tensor] | None:
                return (acts_b["k"][i][ni, :p0], acts_b["v"][i][ni, :p0]) if p0 > 0 else None

            final = lean.resume(layer, activation, act, base_rows, past, p0, pos[ni] - p0)
            out[li, vi.cpu(), ni.cpu()] = _metric_at(model, final, torch.zeros_like(ni), ni, metric)
            forwards += 1
            rows_unembedded += int(ni.numel())
        bar.update(1)
    bar.close()
    notes = {
        "engine": "lean",
        "forwards": forwards,
        "max_batch": max_batch if max_batch is not None else auto_batch(model, seq_len, budget_mb),
        "seq_len": seq_len,
        "truncated": causal,
        "rows_skipped": skipped,
        "rows_total": len(layer_list) * n_var * n_pairs,
        # matmul FLOPs (2 x multiply-adds) of the whole sweep, unembedding of the answer rows included
        "matmul_flops": lean.flops + 2 * model.cfg.d_model * model.cfg.d_vocab * (2 * n_pairs + rows_unembedded),
    }
    return out, clean_m, corrupt_m, act_shape, notes


def _row_chunks(
    starts: list[int], seq_len: int, max_batch: int | None, cap_for: Callable[[int], int]
) -> list[tuple[int, int]]:
    """Consecutive row ranges [i0, i1) of rows sorted by first changed position. A chunk recomputes positions from
    its first row's start p0, so a later row wastes (p - p0) positions: rows join while that waste is at most an
    eighth of the chunk's length, or while the chunk is still small (< 256 positions in all, where per-call overhead
    dominates), up to max_batch rows (default: `auto_batch` for the chunk's length)."""
    chunks, i0, n = [], 0, len(starts)
    while i0 < n:
        p0 = starts[i0]
        s = seq_len - p0
        cap = max(1, max_batch if max_batch is not None else cap_for(s))
        i1 = i0 + 1
        while i1 < n and i1 - i0 < cap and ((starts[i1] - p0) * 8 <= s or (i1 - i0) * s < 256):
            i1 += 1
        chunks.append((i0, i1))
        i0 = i1
    return chunks


def _sweep_hooks(
    model: HookedTransformer,
    base: _Run,
    donor: _Run,
    mode: str,
    sweep: _Sweep,
) -> tuple[Tensor, Tensor, Tensor, tuple[int, ...], dict[str, Any]]:
    """The sweep through TransformerLens's own forward with a patching hook (any model TransformerLens runs):
    variants of one layer share a batch, the forward starts at the patched block, per-position chunks recompute only
    their positions with a frozen KV cache, and only the answer position is unembedded."""
    activation, per, layer_list, pos, metric = sweep.activation, sweep.per, sweep.layer_list, sweep.pos, sweep.metric
    max_batch, budget_mb, truncate, progress = sweep.max_batch, sweep.budget_mb, sweep.truncate, sweep.progress
    from transformer_lens.utilities import get_act_name

    n_pairs, seq_len = base.resid0.shape[:2]
    device = base.resid0.device
    n_layers = model.cfg.n_layers
    names = {layer: get_act_name(activation, layer) for layer in layer_list}
    starts = {layer: get_act_name("resid_pre", layer) for layer in layer_list}
    pair = torch.arange(n_pairs, device=device)
    to_end = {"stop_at_layer": n_layers}

    final_b, cache_b = run_with_cache(
        model, base.resid0, start_at_layer=0, **base.kwargs(1), **to_end, names_filter=list(starts.values())
    )
    final_d, cache_d = run_with_cache(
        model, donor.resid0, start_at_layer=0, **donor.kwargs(1), **to_end, names_filter=list(names.values())
    )
    missing = [name for name in names.values() if name not in cache_d]
    if missing:
        raise _never_ran(missing[0])
    base_m = _metric_at(model, final_b, pos, pair, metric)
    clean_m, corrupt_m = _clean_corrupt(base_m, _metric_at(model, final_d, pos, pair, metric), mode)

    act_shape = tuple(cache_d[names[layer_list[0]]].shape[1:])
    masks = _variant_masks(per, activation, act_shape).to(device)
    n_var = masks.shape[0]
    rows_cap = max_batch if max_batch is not None else auto_batch(model, seq_len, budget_mb)
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
                model, start[:, p0:].repeat(v, 1, 1), start_at_layer=layer, **extra, **to_end,
                fwd_hooks=[(names[layer], hook)],
            )  # fmt: skip
            values = _metric_at(model, final, (pos - p0).repeat(v), pair.repeat(v), metric)
            out[li, v0:v1] = values.reshape(v, n_pairs)
            forwards += 1
            bar.update(1)
    bar.close()
    notes = {"engine": "hooks", "forwards": forwards, "max_batch": rows_cap, "seq_len": seq_len}
    notes["truncated"] = var_pos is not None
    return out, clean_m, corrupt_m, act_shape, notes


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
