"""LM hook factories beyond add and ablate: steering after the prompt, conditional steering (CAST), capping.

All are hook *specs* for `workbench.lm.toolkit` -- functions `(tokens (B, T), lengths (B,)) -> [(hook name, fn)]`
built per batch, because where to steer depends on the batch (which positions come after each row's prompt). Each
hook fn has the TransformerLens signature `fn(act, hook)` and goes through `workbench.hooks`, like every other
intervention in the workbench.

- `add_spec`: act + coef * v at `blocks.L.hook_resid_post`, from each row's last prompt token on (contrastive
  activation addition, Rimsky et al. 2023); on a batch without a prompt boundary (neutral text), everywhere.
- `conditional_spec`: the same addition, but only in rows whose prompt passes a condition: the mean projection of
  the prompt's residual stream at layer Lc onto the unit condition direction is above (or below) a threshold.
  This is conditional activation steering (CAST, Lee et al. 2024) with a linear condition; Lc <= L so the gate is
  known before the steering layer runs in the same forward. `gate_log` records how often the gate fired.
- `cap_spec`: clamp the projection onto a unit direction to [lo, hi] at every position (activation capping, as in
  the Assistant-Axis work: a persona cannot drift past a bound): act + (clamp(p, lo, hi) - p) r.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.interventions import ablate_direction

Spec = Callable[[Tensor, Tensor], list]


def resid_name(layer: int) -> str:
    return f"blocks.{int(layer)}.hook_resid_post"


def after_mask(tokens: Tensor, lengths: Tensor) -> Tensor:
    """(B, T) bool: from each row's last prompt token to its end when the batch carries prompt lengths
    (`toolkit.prompt_starts`), else every real position."""
    from workbench.lm.toolkit import prompt_starts

    T = tokens.shape[1]
    pos = torch.arange(T)[None, :]
    real = pos < torch.as_tensor(lengths)[:, None]
    starts = prompt_starts(lengths)
    if starts is None:
        return real
    return real & (pos >= (starts - 1).clamp_min(0)[:, None])


def prompt_mask(tokens: Tensor, lengths: Tensor) -> Tensor:
    """(B, T) bool: the prompt's positions (before the answer) when known, else every real position."""
    from workbench.lm.toolkit import prompt_starts

    pos = torch.arange(tokens.shape[1])[None, :]
    real = pos < torch.as_tensor(lengths)[:, None]
    starts = prompt_starts(lengths)
    return real if starts is None else real & (pos < starts[:, None])


def _unit(v: Tensor, what: str) -> Tensor:
    v = torch.as_tensor(v).detach().float().reshape(-1)
    n = v.norm()
    if not torch.isfinite(n) or n == 0:
        raise WorkbenchError(f"the {what} direction is zero or not finite")
    return v / n


def add_spec(layer: int, vector: Tensor, coef: float) -> Spec:
    """coef * vector added at `blocks.{layer}.hook_resid_post` on the positions `after_mask` selects."""
    v = torch.as_tensor(vector).detach().float()
    name = resid_name(layer)

    def spec(tokens: Tensor, lengths: Tensor) -> list:
        m = after_mask(tokens, lengths).float()[..., None]

        def fn(act: Tensor, hook) -> Tensor:
            return act + coef * m.to(act.dtype) * v.to(act.dtype)

        return [(name, fn)]

    return spec


class GateLog:
    """Counts of rows whose condition passed (`fired`) out of all rows seen (`rows`)."""

    def __init__(self) -> None:
        self.fired = 0
        self.rows = 0

    @property
    def rate(self) -> float:
        return self.fired / self.rows if self.rows else float("nan")


def conditional_spec(
    layer: int,
    vector: Tensor,
    coef: float,
    *,
    condition: Tensor,
    condition_layer: int,
    threshold: float,
    above: bool = True,
    log: GateLog | None = None,
) -> Spec:
    """`add_spec`, applied only to rows whose prompt's mean projection onto unit(condition) at `condition_layer`
    is > threshold (above=True) or < threshold (above=False). condition_layer must be <= layer."""
    if int(condition_layer) > int(layer):
        raise WorkbenchError(
            f"the condition is read at layer {condition_layer}, after the steering layer {layer}; it must be read at "
            "or before it"
        )
    c = _unit(condition, "condition")
    v = torch.as_tensor(vector).detach().float()
    cname, sname = resid_name(condition_layer), resid_name(layer)

    def spec(tokens: Tensor, lengths: Tensor) -> list:
        pm = prompt_mask(tokens, lengths).float()
        am = after_mask(tokens, lengths).float()[..., None]
        state: dict = {}

        def gate(act: Tensor, hook) -> None:
            proj = (act.float() @ c.to(act.device)) * pm
            score = proj.sum(1) / pm.sum(1).clamp_min(1)
            g = score > threshold if above else score < threshold
            state["gate"] = g
            if log is not None:
                log.fired += int(g.sum())
                log.rows += int(g.numel())

        def steer(act: Tensor, hook) -> Tensor:
            if cname == sname:
                gate(act, hook)
            g = state["gate"].to(act.dtype)[:, None, None]
            return act + coef * g * am.to(act.dtype) * v.to(act.dtype)

        if cname == sname:
            return [(sname, steer)]
        return [(cname, gate), (sname, steer)]

    return spec


def cap_spec(layer: int, direction: Tensor, lo: float | None, hi: float | None) -> Spec:
    """Clamp the projection onto unit(direction) at `blocks.{layer}.hook_resid_post` to [lo, hi] (None: open)."""
    if lo is None and hi is None:
        raise WorkbenchError("capping needs a lower or an upper bound")
    if lo is not None and hi is not None and lo > hi:
        raise WorkbenchError(f"cap bounds are reversed: lower {lo} > upper {hi}")
    r = _unit(direction, "capping")
    name = resid_name(layer)

    def fn(act: Tensor, hook) -> Tensor:
        rr = r.to(act.device, act.dtype)
        p = act @ rr
        clamped = p.clamp(min=lo, max=hi)
        return act + (clamped - p)[..., None] * rr

    def spec(tokens: Tensor, lengths: Tensor) -> list:
        return [(name, fn)]

    return spec


def ablate_spec(n_layers: int, direction: Tensor) -> Spec:
    """Directional ablation x - (x.r) r of `direction` everywhere in the residual stream (every block's resid_pre and
    resid_mid, and the last resid_post), as Arditi et al. 2024: no block can read it."""
    fn = ablate_direction(torch.as_tensor(direction).detach().float())
    names = [f"blocks.{i}.hook_resid_{k}" for i in range(n_layers) for k in ("pre", "mid")]
    names.append(f"blocks.{n_layers - 1}.hook_resid_post")
    hooks = [(n, fn) for n in names]

    def spec(tokens: Tensor, lengths: Tensor) -> list:
        return hooks

    return spec
