"""Hook-function factories for interventions: add a vector, ablate a direction, clamp a channel, patch.

Every factory returns a TransformerLens-signature hook `fn(tensor, hook) -> tensor`, so one intervention works on a
policy's conv activations (B, C, H, W) and on a language model's residual stream (B, T, d) alike. Use them as
`run_with_hooks(model, x, fwd_hooks=[(name, add_vector(v, -1.0))])` or pass them to rollouts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.hooks import HookFn


def _match_batch(vec: Tensor, act: Tensor, hook_name: str) -> Tensor:
    """Broadcast `vec` onto `act`: a vector shaped like one example is shared by the batch; a batched vector (same
    leading size as `act`) gives each example its own (e.g. a per-maze cheese vector during a batched rollout)."""
    vec = vec.to(device=act.device, dtype=act.dtype)
    if vec.shape == act.shape[1:]:
        return vec.unsqueeze(0)
    if vec.shape == act.shape:
        return vec
    if vec.ndim == 1 and act.shape[-1] == vec.shape[0]:  # (d,) onto (..., d): LM residual stream
        return vec
    if vec.ndim == 1 and act.ndim == 4 and act.shape[1] == vec.shape[0]:  # (C,) onto (B, C, H, W) at every cell
        return vec[None, :, None, None]
    raise WorkbenchError(
        f"vector of shape {tuple(vec.shape)} does not fit activation {tuple(act.shape)} at {hook_name}"
    )


def add_vector(vector: Tensor, coef: float = 1.0) -> HookFn:
    """act + coef * vector (steering / activation addition)."""

    def hook_fn(act: Tensor, hook) -> Tensor:
        return act + coef * _match_batch(vector, act, hook.name)

    return hook_fn


def ablate_direction(direction: Tensor) -> HookFn:
    """act - (act . r) r with r = direction / |direction| (directional ablation). A (C,) direction on conv
    activations acts on the channel vector at every cell; a direction shaped like one example acts on the whole
    flattened example; a (d,) direction on (B, T, d) acts at every position."""
    r = direction / direction.norm().clamp_min(1e-12)

    def hook_fn(act: Tensor, hook) -> Tensor:
        rr = r.to(device=act.device, dtype=act.dtype)
        if rr.shape == act.shape[1:]:
            flat = act.flatten(1)
            rf = rr.flatten()
            return (flat - (flat @ rf)[:, None] * rf[None, :]).view_as(act)
        if rr.ndim == 1 and act.ndim == 4 and act.shape[1] == rr.shape[0]:
            proj = torch.einsum("bchw,c->bhw", act, rr)
            return act - proj[:, None] * rr[None, :, None, None]
        if rr.ndim == 1 and act.shape[-1] == rr.shape[0]:
            return act - (act @ rr)[..., None] * rr
        raise WorkbenchError(
            f"direction of shape {tuple(rr.shape)} does not fit activation {tuple(act.shape)} at {hook.name}"
        )

    return hook_fn


def clamp_channel(channel: int, value: float, cell: tuple[int, int] | None = None) -> HookFn:
    """Set conv channel `channel` to `value`, at one spatial `cell` (row, col) or everywhere (cell=None)."""

    def hook_fn(act: Tensor, hook) -> Tensor:
        if act.ndim != 4 or not 0 <= channel < act.shape[1]:
            raise WorkbenchError(f"channel {channel} out of range for activation {tuple(act.shape)} at {hook.name}")
        out = act.clone()
        if cell is None:
            out[:, channel] = value
        else:
            out[:, channel, cell[0], cell[1]] = value
        return out

    return hook_fn


def patch_with(source: Tensor, mask: Tensor | None = None) -> HookFn:
    """Replace the activation by `source` (same shape), or only where boolean `mask` (broadcastable) is True:
    activation patching from a cached run."""

    def hook_fn(act: Tensor, hook) -> Tensor:
        src = source.to(device=act.device, dtype=act.dtype)
        if src.shape != act.shape:
            raise WorkbenchError(
                f"patch source {tuple(src.shape)} does not match activation {tuple(act.shape)} at {hook.name}"
            )
        return src if mask is None else torch.where(mask.to(act.device), src, act)

    return hook_fn


def random_like(vector: Tensor, seed: int) -> Tensor:
    """A random Gaussian direction with the same norm as `vector` (per example when batched): the standard control
    for a steering vector. Per-example norms are matched when `vector` has a batch dimension of size > 1."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(vector.shape, generator=gen, dtype=torch.float32).to(vector.dtype)
    if vector.ndim >= 2:
        dims = tuple(range(1, vector.ndim))
        norm = torch.linalg.vector_norm
        scale = norm(vector, dim=dims, keepdim=True) / norm(noise, dim=dims, keepdim=True).clamp_min(1e-12)
    else:
        scale = vector.norm() / noise.norm().clamp_min(1e-12)
    return noise * scale


# ------------------------------------------------------------------------------------------------ SAE splice (#6)
def sae_splice(
    sae, layout: str | None = None, edits: dict[int, float] | None = None, error_term: bool = False
) -> HookFn:
    """Replace the activation by an SAE's reconstruction (a SAELens `SAE`: `encode`, `decode`, `cfg.metadata`).

    The activation is read as SAE tokens (`workbench.sae.data.to_tokens`; `layout` defaults to the one stored in the
    SAE's metadata): each spatial position of (B, C, H, W), each position of (B, T, d), or each flattened example.
    `edits` {latent: value} sets latents before decoding (clamping; 0 ablates). `error_term=True` adds back the
    SAE's error x - decode(encode(x)), so only the edits change the activation: with no edits the hook is then the
    identity, and with edits it adds sum_i (value_i - f_i) * W_dec[i] at every token."""
    from workbench.sae.data import to_tokens

    meta = sae.cfg.metadata
    layout = layout or (meta.get("workbench") or {}).get("layout", "position")
    for latent in edits or {}:
        if not 0 <= int(latent) < sae.cfg.d_sae:
            raise WorkbenchError(f"latent {latent} out of range for an SAE of width {sae.cfg.d_sae}")

    def hook_fn(act: Tensor, hook) -> Tensor:
        tokens, back = to_tokens(act, layout)
        if tokens.shape[-1] != sae.cfg.d_in:
            raise WorkbenchError(
                f"SAE reads d_in={sae.cfg.d_in} tokens but {hook.name} gives {tokens.shape[-1]} ({layout} layout "
                f"of {tuple(act.shape)})"
            )
        x = tokens.to(sae.dtype)
        feats = sae.encode(x)
        recon = sae.decode(feats)
        if edits:
            edited = feats.clone()
            for latent, value in edits.items():
                edited[:, int(latent)] = float(value)
            out = sae.decode(edited)
            out = x + (out - recon) if error_term else out
        else:
            out = x if error_term else recon
        return back(out.to(act.dtype)).contiguous()

    return hook_fn


def clamp_latent(sae, latent: int, value: float = 0.0, layout: str | None = None) -> HookFn:
    """Clamp one SAE latent to `value` at every token, keeping the SAE's error term (everything the SAE does not
    explain passes through): the SAE analogue of `clamp_channel`. value 0 ablates the latent."""
    return sae_splice(sae, layout=layout, edits={int(latent): float(value)}, error_term=True)
