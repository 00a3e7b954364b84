"""How `workbench battery` checks measure maze-family subjects (native and procgen mazes, `probes/maze.toml`,
`probes/retarget.toml`): the maze's pieces for the shared RL machinery (`workbench.rl.battery.rl_adapter`) plus the
maze-only `retarget` check.

Metrics: behaviour -> the rollout rates (`cheese`, `corner_first`, `timeout`); probe/spatial (a cell target such as
`cheese_cell`) -> `top1`, `control_top1`, `selectivity`, `chance`; probe/logistic and probe/mass_mean (a binary label
of `collect_maze`) -> `auroc` and its controls; intervention (the `cheese` vector) -> `CONDITION.RATE` plus the
decision-square effects; retarget -> `CONDITION.MEASURE` and `EFFECT.MEASURE` of `workbench.rl.retarget`.
"""

from __future__ import annotations

from typing import Any

from workbench.rl.battery import RLFamily, rl_adapter
from workbench.rl.collect import MAZE_LABEL_COLUMNS
from workbench.rl.retarget import CONDITIONS, EFFECTS, MEASURES, battery_metrics
from workbench.rl.rollout import RATE_KEYS
from workbench.subjects import BatteryAdapter

RETARGET_METRICS = tuple(f"{row}.{m}" for row in (*CONDITIONS, *EFFECTS) for m in MEASURES)
"""A retarget check's metric names: each condition and paired effect of `workbench.rl.retarget` x its measures."""


def _collect(agent: Any, hooks: list[str], **options: Any):
    from workbench.rl.collect import collect_maze

    return collect_maze(agent, hooks, **options)


def adapter() -> BatteryAdapter:
    """The battery adapter every maze-family kind registers (`maze`, `procgen-maze`)."""
    return rl_adapter(
        RLFamily(
            collect=_collect,
            targets=MAZE_LABEL_COLUMNS,
            methods=("spatial", "logistic", "mass_mean"),
            vectors=("cheese",),
            rate_keys=RATE_KEYS,
            intervention_extra=("decision_square.effect", "decision_square.control_effect"),
            extra={"retarget": (battery_metrics, RETARGET_METRICS)},
        )
    )
