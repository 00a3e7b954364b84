"""The policy contract: what the workbench accepts as a policy, checked in one place.

Why: users bring their own networks. A policy is any `nn.Module` that maps an observation batch `(B, ...)` to action
logits `(B, A)`, or to `(logits, value)` as actor-critics do. Every rollout, vector field and decision-square measure
reads logits through `logits_of`, so a logits-only `nn.Sequential` CNN works wherever our IMPALA net works, and
anything else (a dict, a 1-D tensor, logits of the wrong batch size) is one error naming what came back, instead
of a silent wrong answer (indexing `out[0]` of a logits tensor takes the first row).

Observation formats (documented in the README, "bring your own checkpoint"):
- native maze: `(B, 3, W, W)` uint8 planes (wall, mouse, cheese); native CoinRun: `(B, 5, 13, 13)` uint8 planes;
- procgen: `(B, 3, 64, 64)` uint8 RGB, channels first; the policy scales by 1/255 itself (our IMPALA net's
  `input_scale`).
Actions: native envs have 4 (maze: up, down, left, right) or 6 (CoinRun); procgen has 15, and maze analyses
marginalise them to four directions (LEFT 0,1,2; DOWN 3; UP 5; RIGHT 6,7,8; the rest do not move).
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor, nn

from workbench.errors import WorkbenchError

Logits = Float[Tensor, "batch actions"]
DirectionProbs = Float[Tensor, "batch groups"]


def _describe(out: object) -> str:
    if isinstance(out, Tensor):
        return f"a tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        inner = ", ".join(_describe(o) if isinstance(o, Tensor) else type(o).__name__ for o in out[:3])
        return f"a {type(out).__name__} of {len(out)} ({inner})"
    return f"a {type(out).__name__}"


def logits_of(out: object, batch: int) -> Logits:
    """The `(B, A)` logits inside a policy's output (`logits` or `(logits, value, ...)`); else one WorkbenchError."""
    logits = out[0] if isinstance(out, (tuple, list)) and len(out) >= 1 else out
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != batch:
        raise WorkbenchError(
            f"the policy returned {_describe(out)} for a batch of {batch} observations; a policy must return logits "
            f"of shape ({batch}, n_actions) or a tuple (logits, value)"
        )
    return logits


def policy_logits(policy: nn.Module, obs: Tensor) -> Logits:
    """Run `policy` on `obs` (moved to the policy's device) and return its float logits on the CPU."""
    out = policy(obs.to(policy_device(policy)))
    return logits_of(out, obs.shape[0]).float().cpu()


def policy_device(policy: nn.Module) -> torch.device:
    """The device of the policy's first parameter (CPU for a parameter-free module)."""
    p = next(policy.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def n_actions(policy: nn.Module, obs: Tensor) -> int:
    """How many actions the policy scores, from one forward pass on `obs[:1]` (validates the contract too)."""
    with torch.no_grad():
        return int(policy_logits(policy, obs[:1]).shape[1])


def direction_probs(logits: Logits, groups: tuple[tuple[int, ...], ...]) -> DirectionProbs:
    """Softmax over all actions, then summed within each group: P(up, down, left, right) for a maze policy whose
    action space has several actions per direction (procgen: 15). One group per direction, in the env's order."""
    if max(max(g) for g in groups) >= logits.shape[1]:
        raise WorkbenchError(
            f"the policy scores {logits.shape[1]} actions but this env's moves need action ids up to "
            f"{max(max(g) for g in groups)}; is it a policy for this env?"
        )
    p = torch.softmax(logits.float(), dim=-1)
    return torch.stack([p[:, list(g)].sum(1) for g in groups], dim=1)
