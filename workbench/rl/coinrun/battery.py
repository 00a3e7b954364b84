"""How `workbench battery` checks measure CoinRun subjects (native and procgen CoinRun, `probes/coinrun.toml`): the
CoinRun pieces for the shared RL machinery (`workbench.rl.battery.rl_adapter`).

What differs from mazes: labelled activations come from `collect_coinrun` (rollout states by default); a probe target
is fit and tested only on the rows where it is defined (`coin_right` only where a coin is present,
`workbench.rl.coinrun.probes.defined_rows`), as the `probe` verb does; the goal vector is `coin`, fit on
`fit.episodes` levels disjoint from the evaluated ones; behaviour adds hazard deaths (`died`) and the rates on levels
whose coin is away from the exit (`informative.RATE`). No spatial probes and no retarget checks.
"""

from __future__ import annotations

from typing import Any

from workbench.battery_measure import measurement, rate_measurements, rollout_rates
from workbench.rl.battery import RLFamily, rl_adapter
from workbench.rl.coinrun.probes import BINARY, defined_rows
from workbench.rl.coinrun.rollout import RATE_KEYS
from workbench.subjects import BatteryAdapter

BEHAVIOUR = RATE_KEYS + ("died",) + tuple(f"informative.{k}" for k in RATE_KEYS)
"""A behaviour check's metric names: the rollout rates, hazard deaths, and the rates on informative levels."""


def behaviour(check: Any, agent: Any) -> dict[str, dict]:
    """The world's rollout rates, plus `died` and `informative.RATE` where the records have them."""
    rec = rollout_rates(check, agent)
    out = rate_measurements(rec)
    if "died" in rec:
        out["died"] = measurement(rec["died"]["rate"], rec["died"]["ci95"], rec["died"]["n"])
        inf = rec["informative"]
        out |= {f"informative.{k}": measurement(v, inf["ci95"][k], inf["n"]) for k, v in inf["rates"].items()}
    return out


def _collect(agent: Any, hooks: list[str], **options: Any):
    from workbench.rl.collect import collect_coinrun

    return collect_coinrun(agent, hooks, **options)


def _steer_options(check: Any) -> dict:
    return {"probe_episodes": check.fit.episodes}  # the coin vector's levels


def adapter() -> BatteryAdapter:
    """The battery adapter every CoinRun kind registers (`coinrun`, `procgen-coinrun`)."""
    return rl_adapter(
        RLFamily(
            collect=_collect,
            targets=BINARY,
            methods=("logistic", "mass_mean"),
            vectors=("coin",),
            rate_keys=RATE_KEYS,
            behaviour=behaviour,
            behaviour_metrics=BEHAVIOUR,
            defined_rows=defined_rows,
            steer_options=_steer_options,
        )
    )
