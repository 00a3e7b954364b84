"""What a battery adapter builds its numbers with: one measured metric (`measurement`) and a behaviour check from a
world's rollout rates (`world_rates`).

Why a module of its own: subject packages (`workbench/rl/maze/battery.py`, `workbench/lm/battery.py`, ...) import
these, and the battery runner (`workbench.battery`) reaches populations (audit checks: `workbench.sweep`, training,
every kind); importing the runner from a kind's package would close that circle. `workbench.battery` re-exports
`measurement`, the name adapters have always used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workbench.battery import CheckSpec


def measurement(value: float, ci: tuple[float, float] | list[float] | None = None, n: int | None = None) -> dict:
    """One measured metric as checks read it: `{"value", "ci_low", "ci_high", "n"}` (NaN bounds: no interval)."""
    lo, hi = (float("nan"), float("nan")) if ci is None else (float(ci[0]), float(ci[1]))
    return {"value": float(value), "ci_low": lo, "ci_high": hi, "n": n}


def rollout_rates(check: CheckSpec, agent: Any) -> dict:
    """`world.run(...).rates()` on `check.data`'s levels: the one rollout behind every behaviour check of an RL kind."""
    d = check.data
    return agent.world.run(agent.policy, agent.world.levels(d.split, d.episodes, d.seed), seed=d.seed).rates()


def rate_measurements(rates: dict, prefix: str = "") -> dict[str, dict]:
    """A `rates()` summary (`{"rates", "ci95", "n"}`) -> one measurement per rate key, named prefix + key."""
    return {f"{prefix}{k}": measurement(v, rates["ci95"][k], rates["n"]) for k, v in rates["rates"].items()}


def world_rates(check: CheckSpec, agent: Any) -> dict[str, dict]:
    """A behaviour check from the world's rollout rates (any RL kind; metrics: the world's `rate_keys`)."""
    return rate_measurements(rollout_rates(check, agent))
