"""Battery checks on RL agents, written once for every world family: a family brings its pieces (`RLFamily`) and
`rl_adapter` turns them into the kind's `BatteryAdapter` (`workbench.subjects`).

Why: maze and CoinRun agents differ only in how labelled activations are collected (`collect_maze` vs
`collect_coinrun`), on which rows a probe target is defined, which goal vectors and probe methods they offer and what
their metrics are called. Fitting a probe against its shuffled-label control with held-out levels, reading a
steering comparison into `baseline` / `steered` / `control` / `effect` metrics and reading rollout rates are the same
for both and live here, so a threshold in `probes/maze.toml` and one in `probes/coinrun.toml` are the same
measurement. The families' own files are `workbench/rl/maze/battery.py` and `workbench/rl/coinrun/battery.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from workbench.battery_measure import measurement, world_rates
from workbench.errors import WorkbenchError
from workbench.subjects import BatteryAdapter

if TYPE_CHECKING:
    from workbench.battery import CheckSpec, DataSpec

CONDITIONS = ("baseline", "steered", "control", "effect", "control_effect")
"""Intervention metric prefixes: the three runs on the same levels and the two paired differences from baseline."""
SPATIAL = ("top1", "control_top1", "selectivity", "chance")
"""probe/spatial metrics: top-1 cell accuracy, its shuffled-label control, their paired difference, 1 / classes."""
LINEAR = ("auroc", "accuracy", "recall_at_1pct_fpr", "control_auroc", "selectivity", "random_direction_auroc")
"""probe/logistic and probe/mass_mean metrics (`workbench.probes.evaluate_probe` plus controls)."""


@dataclass(frozen=True)
class RLFamily:
    """What one RL world family brings to the shared battery machinery.

    Attributes:
        collect: `fn(agent, hooks, *, split, episodes, seed, states, max_states_per_episode, progress)` -> a labelled
            activation dataset (`workbench.rl.collect.collect_maze`, `collect_coinrun`).
        targets: the label columns a probe check may name.
        methods: the probe methods (`spatial`, `logistic`, `mass_mean`); `spatial` needs a grid world whose levels
            have `world_size` and `PIXELS`.
        vectors: the goal vectors an intervention check may name (built by the kind's `steer` verb).
        rate_keys: the rollout rate keys; intervention metrics are `CONDITION.KEY` for each.
        behaviour: `fn(check, agent)` measuring a behaviour check (default: the world's rates, `world_rates`).
        behaviour_metrics: the names `behaviour` returns (default: `rate_keys`).
        defined_rows: `fn(labels, target)` -> (n,) bool, the rows where `target` is defined (None: every row).
        steer_options: `fn(check)` -> extra keyword options for `workbench.rl.steering.steer_experiment`.
        intervention_extra: further intervention metric names the family's steering result yields.
        extra: further check kinds -> (`fn(check, agent)`, metric names), e.g. `retarget` for mazes.
    """

    collect: Callable[..., Any]
    targets: tuple[str, ...]
    methods: tuple[str, ...]
    vectors: tuple[str, ...]
    rate_keys: tuple[str, ...]
    behaviour: Callable[[Any, Any], dict] = world_rates
    behaviour_metrics: tuple[str, ...] = ()
    defined_rows: Callable[[Any, str], np.ndarray] | None = None
    steer_options: Callable[[Any], dict] | None = None
    intervention_extra: tuple[str, ...] = ()
    extra: Mapping[str, tuple[Callable[[Any, Any], dict], tuple[str, ...]]] = field(default_factory=dict)


def rl_adapter(family: RLFamily) -> BatteryAdapter:
    """The `BatteryAdapter` of an RL kind from its family's pieces: behaviour, probe, intervention and `extra`."""
    metrics: dict[str, tuple[str, ...]] = {"behaviour": family.behaviour_metrics or family.rate_keys}
    metrics |= {f"probe/{m}": SPATIAL if m == "spatial" else LINEAR for m in family.methods}
    metrics["intervention"] = (
        tuple(f"{c}.{k}" for c in CONDITIONS for k in family.rate_keys) + family.intervention_extra
    )
    measure: dict[str, Callable[[Any, Any], dict]] = {
        "behaviour": family.behaviour,
        "probe": partial(probe, family),
        "intervention": partial(intervention, family),
    }
    for kind, (fn, names) in family.extra.items():
        measure[kind], metrics[kind] = fn, names
    choices = {"target": family.targets, "vector": family.vectors, "method": family.methods}
    return BatteryAdapter(measure=measure, metrics=metrics, choices=choices)


def _collect(family: RLFamily, agent: Any, hook: str, spec: DataSpec):
    """A labelled activation dataset of `spec`'s levels, collected the family's way."""
    return family.collect(
        agent,
        [hook],
        split=spec.split,
        episodes=spec.episodes,
        seed=spec.seed,
        states=spec.states,
        max_states_per_episode=spec.max_steps or None,
        progress=False,
    )


def probe(family: RLFamily, check: CheckSpec, agent: Any) -> dict[str, dict]:
    """A probe check: fit on `check.fit`'s levels, test on `check.test`'s minus any level used in fitting, against
    a probe fit on shuffled labels (`control_*`); spatial probes read cell top-1, linear ones AUROC and friends."""
    from workbench.metrics import rate

    fit, test = _collect(family, agent, check.hook, check.fit), _collect(family, agent, check.hook, check.test)
    seen = set(fit.label("level_seed").tolist())
    test = test.select(~np.isin(test.label("level_seed"), list(seen)))  # held out: no level used in fitting
    if family.defined_rows is not None:  # e.g. CoinRun's coin_right only where a coin is present
        fit, test = (ds.select(family.defined_rows(ds.labels, check.target)) for ds in (fit, test))
    x_fit, x_test = fit[check.hook], test[check.hook]
    y_fit, y_test = fit.label(check.target), test.label(check.target)
    rng = np.random.default_rng(check.fit.seed)
    if check.method == "spatial":
        from workbench.probes import fit_spatial_probe, layer_cell_index

        if x_fit.ndim != 4:
            raise WorkbenchError(f"check {check.name!r}: {check.hook} is not a spatial layer")
        probe_level = agent.world.levels(check.fit.split, 1, check.fit.seed)
        grid, world, px = x_fit.shape[-1], probe_level.world_size, probe_level.PIXELS
        t_fit = torch.as_tensor(layer_cell_index(y_fit, world, grid, px))
        t_test = torch.as_tensor(layer_cell_index(y_test, world, grid, px))
        fitted = fit_spatial_probe(x_fit, t_fit, l2=check.l2)
        control = fit_spatial_probe(x_fit, t_fit[torch.as_tensor(rng.permutation(len(t_fit)))], l2=check.l2)
        hits = (fitted.predict(x_test.double()) == t_test).numpy()
        chits = (control.predict(x_test.double()) == t_test).numpy()
        acc, ctrl = rate(hits), rate(chits)
        from workbench.metrics import paired_diff_ci

        sel = paired_diff_ci(chits, hits, seed=check.fit.seed)
        return {
            "top1": measurement(acc["rate"], acc["ci95"], acc["n"]),
            "control_top1": measurement(ctrl["rate"], ctrl["ci95"], ctrl["n"]),
            "selectivity": measurement(sel["diff"], sel["ci95"], acc["n"]),
            "chance": measurement(1.0 / max(1, len(np.unique(t_fit.numpy())))),
        }
    from workbench.probes import evaluate_probe, fit_logistic, fit_mass_mean, random_direction_baseline

    y_fit, y_test = y_fit.astype(np.int64), y_test.astype(np.int64)
    xf, xt = x_fit.flatten(1).double(), x_test.flatten(1).double()
    fitter = fit_logistic if check.method == "logistic" else fit_mass_mean
    kwargs = {"l2": check.l2} if check.method == "logistic" else {}
    fitted = fitter(xf, torch.as_tensor(y_fit), **kwargs)
    control = fitter(xf, torch.as_tensor(rng.permutation(y_fit)), **kwargs)
    table = evaluate_probe(fitted, xt, torch.as_tensor(y_test), seed=check.test.seed)
    ctable = evaluate_probe(control, xt, torch.as_tensor(y_test), metrics=("auroc",), seed=check.test.seed)
    out = {row.metric: measurement(row.value, (row.ci_low, row.ci_high), int(row.n)) for row in table.itertuples()}
    out["recall_at_1pct_fpr"] = out.pop("recall_at_1pct_fpr", out.get("recall_at_fpr", measurement(float("nan"))))
    c = ctable.iloc[0]
    out["control_auroc"] = measurement(c.value, (c.ci_low, c.ci_high), int(c.n))
    out["selectivity"] = measurement(out["auroc"]["value"] - c.value)
    baseline = random_direction_baseline(xt, torch.as_tensor(y_test), n_directions=100, seed=check.test.seed)
    out["random_direction_auroc"] = measurement(baseline["p95"])
    return out


def intervention(family: RLFamily, check: CheckSpec, agent: Any) -> dict[str, dict]:
    """An intervention check through the kind's `steer` verb (`workbench.rl.steering.steer_experiment`): rates per
    condition, paired effects with their intervals, and the decision-square effects where the result has them."""
    from workbench.rl.steering import steer_experiment

    d = check.data
    options = family.steer_options(check) if family.steer_options is not None else {}
    r = steer_experiment(agent, check.vector, check.coef, check.hook, d.split, d.episodes, d.seed, **options)
    out = {}
    for cond in ("baseline", "steered", "control"):
        for k, v in r[cond]["rates"].items():
            out[f"{cond}.{k}"] = measurement(v, r[cond]["ci95"][k], r[cond]["n"])
    for cond, prefix in (("steered", "effect"), ("control", "control_effect")):
        for k, eff in r["effects"][cond].items():
            out[f"{prefix}.{k}"] = measurement(eff["diff"], eff["ci95"], r["baseline"]["n"])
    ds = r.get("decision_square", {})  # a maze notion; other families' results have none
    for cond, name in (("steered", "decision_square.effect"), ("control", "decision_square.control_effect")):
        if cond in ds:
            diff = ds[cond]["diff_vs_baseline"]
            out[name] = measurement(diff["mean"], diff["ci95"], ds["n"])
    return out
