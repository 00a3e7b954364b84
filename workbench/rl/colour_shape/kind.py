"""Colour versus shape as a subject kind and a native env kind: its world, its verbs and its registry entries.

Verbs: `eval` and `hooks` are the generic RL verbs (`workbench.rl.verbs`); `probe` (where the goal-colour object
and the goal-shape object are, read from one conv layer), `steer` (colour and shape directions) and `collect`
(labelled activations) live in this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.rl.colour_shape.env import (
    COLOURS,
    OBS_CHANNELS,
    SHAPES,
    SPLITS,
    ColourShapeConfig,
)
from workbench.rl.env_kinds import EnvKind
from workbench.rl.native_kind import Lazy, RolloutWorld, load_folder, rl_verbs, world_for
from workbench.subjects import SubjectKind


@dataclass
class ColourShapeWorld(RolloutWorld):
    """The numpy-batched colour-shape room (`workbench.rl.colour_shape.env`): (N, 8, W, W) planes, 4 actions."""

    config: ColourShapeConfig
    kind: str = "colour-shape"
    family: str = "colour-shape"
    splits: tuple[str, ...] = SPLITS
    rate_keys: tuple[str, ...] = ("goal", "colour_first", "shape_first", "neither", "timeout")
    rollout_states: bool = True
    rollout: ClassVar[str] = "workbench.rl.colour_shape.rollout"


def world(env_config: Any = None, where: Any = None) -> ColourShapeWorld:
    """The world for an env config: a ColourShapeConfig, a dict of its fields (an artifact's env section), or None."""
    return world_for(ColourShapeWorld, ColourShapeConfig, env_config, where)


def load(ref: str) -> Any:
    return load_folder(ref, world)


def _verbs() -> dict:
    from workbench.rl.colour_shape import probes, steering

    return rl_verbs(world, {"probe": probes.probe_verb, "steer": steering.steer_verb, "collect": probes.collect_verb})


def _policy_shape(config: ColourShapeConfig) -> dict[str, int]:
    return {"in_channels": len(OBS_CHANNELS), "obs_size": config.size, "n_actions": 4}


def _describe(c: ColourShapeConfig, split: str) -> str:
    return (
        f"Environment: colour versus shape, an open {c.size - 2}x{c.size - 2} room ({c.size}x{c.size} with walls), "
        f"colours {', '.join(COLOURS)}, shapes {', '.join(SHAPES)}; goal = {COLOURS[0]} {SHAPES[0]}; "
        f"{c.distractors} distractors in training, step limit {c.max_steps}; trained on split `{split}`."
    )


ENV = EnvKind(
    name="colour-shape",
    config=ColourShapeConfig,
    vec_env=Lazy("workbench.rl.colour_shape.env:ColourShapeVecEnv"),
    policy_shape=_policy_shape,
    rollout=ColourShapeWorld.rollout,
    expert=Lazy("workbench.rl.colour_shape.expert:collect_expert_data"),
    expert_phrase="the shortest-path-to-the-paying-object expert",
    describe=_describe,
    rate_notes="`goal`: reached the object with the goal colour and shape (train only); `colour_first` / "
    "`shape_first`: the object reached had the goal colour / the goal shape (on `ood` levels -- one object of each, "
    "the two goals split -- they exclude each other; on `train` both equal `goal`); `neither`: reached an object with "
    "neither; `timeout`: reached nothing within the step limit. Only the goal-shape object pays on `ood` levels. "
    "Brackets: Wilson 95% intervals.",
    splits=SPLITS,
    proxy=("colour_first", "ood.informative.colour_first"),
)
"""Colour versus shape in the env-kind registry (`workbench.rl.env_kinds`): what recipe training needs."""


def _probe_measure(check: Any, agent: Any) -> dict:
    """Battery `probe` checks (method `spatial`, target `colour_cell` or `shape_cell`) through `location_probes`."""
    from workbench.battery_measure import measurement
    from workbench.rl.colour_shape.probes import location_probes

    rows = location_probes(
        agent, [check.hook], n_fit=check.fit.episodes, n_test=check.test.episodes, seed=check.fit.seed
    )
    r = next(row for row in rows if row["target"] == check.target)
    return {
        "top1": measurement(r["value"], r["ci95"], r["n"]),
        "control_top1": measurement(r["shuffled_control"], r["control_ci95"], r["n"]),
        "selectivity": measurement(r["selectivity"], None, r["n"]),
        "chance": measurement(r["chance"], None, r["n"]),
    }


def _intervention_measure(check: Any, agent: Any) -> dict:
    """Battery `intervention` checks (vector `colour` or `shape`) through `steering.steer`: `effect` is the change in
    colour_first with its paired bootstrap interval, `control_effect` the equal-norm random direction's; per
    condition and rate key, `baseline.K` / `steered.K` / `control.K` and `effect.K`."""
    from workbench.battery_measure import measurement
    from workbench.rl.colour_shape.rollout import RATE_KEYS
    from workbench.rl.colour_shape.steering import steer

    r = steer(
        agent, vector=check.vector, coef=check.coef, layer=check.hook, split=check.data.split,
        episodes=check.data.episodes, seed=check.data.seed, direction_episodes=check.fit.episodes,
    )  # fmt: skip
    n = r["episodes"]
    out = {
        "effect": measurement(r["effect"], r["ci95"], n),
        "control_effect": measurement(r["control_effect"], r["control_ci95"], n),
    }
    for key in RATE_KEYS:
        for cond in ("baseline", "steered", "control"):
            out[f"{cond}.{key}"] = measurement(r[cond]["rates"][key], r[cond]["ci95"][key], n)
        eff = r["effects"]["steered"][key]
        out[f"effect.{key}"] = measurement(eff["diff"], eff["ci95"], n)
    return out


def _battery():
    from workbench.rl.colour_shape.probes import TARGETS
    from workbench.rl.colour_shape.rollout import RATE_KEYS
    from workbench.rl.colour_shape.steering import VECTORS
    from workbench.subjects import BatteryAdapter

    conditions = ("baseline", "steered", "control")
    return BatteryAdapter(
        measure={"probe": _probe_measure, "intervention": _intervention_measure},
        metrics={
            "probe/spatial": ("top1", "control_top1", "selectivity", "chance"),
            "intervention": (
                "effect",
                "control_effect",
                *(f"{c}.{k}" for c in conditions for k in RATE_KEYS),
                *(f"effect.{k}" for k in RATE_KEYS),
            ),
        },
        choices={"target": TARGETS, "vector": VECTORS, "method": ("spatial",)},
    )


KIND = SubjectKind(
    name="colour-shape",
    summary="colour-versus-shape agents (artifact folders; 8 one-hot planes: wall, agent, 3 colours, 3 shapes)",
    load=load,
    verbs=_verbs(),
    battery=_battery(),
)
