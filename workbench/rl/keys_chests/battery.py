"""How `workbench battery` checks measure keys-and-chests subjects (`probes/keys-chests.toml`): the kind's
`BatteryAdapter`, built on the same functions as its verbs (rollout records, `probes.probe_target`,
`steering.compare`), so a battery threshold and a verb's number are the same measurement.

Metrics: behaviour -> RATE_KEYS and MEAN_KEYS (means: bootstrap intervals); probe/logistic (has_key, key_needed) ->
auroc, accuracy, their shuffled-label controls and selectivity (auroc - control_auroc); probe/ridge (inventory) ->
r2, control_r2; intervention -> `{baseline,steered,control}.KEY` and the paired `{effect,control_effect}.KEY`.
"""

from __future__ import annotations

from typing import Any

from workbench.rl.keys_chests.probes import BINARY, CONTINUOUS, METHODS, probe_states, probe_target
from workbench.rl.keys_chests.rollout import MEAN_KEYS, RATE_KEYS
from workbench.rl.keys_chests.steering import VECTORS

KEYS = RATE_KEYS + MEAN_KEYS
CONDITIONS = ("baseline", "steered", "control")
METRICS = {
    "behaviour": KEYS,
    "probe/logistic": ("auroc", "accuracy", "control_auroc", "control_accuracy", "selectivity"),
    "probe/ridge": ("r2", "control_r2"),
    "intervention": tuple(f"{c}.{k}" for c in (*CONDITIONS, "effect", "control_effect") for k in KEYS),
}
CHOICES = {"target": BINARY + CONTINUOUS, "vector": VECTORS, "method": tuple(METHODS)}


def _summary(summary: dict, prefix: str = "") -> dict[str, dict]:
    from workbench.battery_measure import measurement

    n = summary["n"]
    out = {f"{prefix}{k}": measurement(summary["rates"][k], summary["ci95"][k], n) for k in RATE_KEYS}
    for k in MEAN_KEYS:
        m = summary["means"][k]
        out[f"{prefix}{k}"] = measurement(m["mean"], m["ci95"], m["n"])
    return out


def behaviour(check: Any, agent: Any) -> dict[str, dict]:
    d = check.data
    return _summary(agent.world.run(agent.policy, agent.world.levels(d.split, d.episodes, d.seed), seed=d.seed).rates())


def probe(check: Any, agent: Any) -> dict[str, dict]:
    from workbench.battery_measure import measurement
    from workbench.errors import WorkbenchError
    from workbench.rl.keys_chests.probes import activations

    if check.target not in METHODS.get(check.method, ()):
        raise WorkbenchError(
            f"{check.file} check {check.name!r}: target {check.target!r} takes method "
            f"{'ridge' if check.target in CONTINUOUS else 'logistic'}"
        )
    fit_states, fit_labels = probe_states(agent, check.fit.split, check.fit.episodes, check.fit.seed)
    test_states, test_labels = probe_states(agent, check.test.split, check.test.episodes, check.test.seed)
    x_fit = activations(agent.policy, fit_states, check.hook).flatten(1).double()
    x_test = activations(agent.policy, test_states, check.hook).flatten(1).double()
    r = probe_target(
        x_fit, fit_labels[check.target], x_test, test_labels[check.target], target=check.target, seed=check.fit.seed,
        l2=check.l2,
    )  # fmt: skip
    if "skipped" in r:
        return {}
    out = {}
    for m in ("r2",) if check.target in CONTINUOUS else ("auroc", "accuracy"):
        out[m] = measurement(r[m], r[f"{m}_ci95"], r["n"])
        out[f"control_{m}"] = measurement(r[f"control_{m}"], r[f"control_{m}_ci95"], r["n"])
    if "auroc" in r:
        out["selectivity"] = measurement(r["auroc"] - r["control_auroc"], None, r["n"])
    return out


def intervention(check: Any, agent: Any) -> dict[str, dict]:
    from workbench.battery_measure import measurement
    from workbench.rl.keys_chests.rollout import levels_for
    from workbench.rl.keys_chests.steering import compare, key_direction

    d = check.data
    direction = key_direction(agent, vector=check.vector, layer=check.hook, episodes=check.fit.episodes, seed=d.seed)
    levels = levels_for(d.split, d.episodes, d.seed, agent.env_config)
    result = compare(agent, levels, direction["vector"], coef=check.coef, layer=check.hook, seed=d.seed)
    out: dict[str, dict] = {}
    for cond in CONDITIONS:
        out.update(_summary(result[cond], prefix=f"{cond}."))
    for cond in ("effect", "control_effect"):
        for k, e in result[cond].items():
            out[f"{cond}.{k}"] = measurement(e["diff"], e["ci95"], d.episodes)
    return out


def adapter():
    """The kind's `BatteryAdapter`."""
    from workbench.subjects import BatteryAdapter

    return BatteryAdapter(
        measure={"behaviour": behaviour, "probe": probe, "intervention": intervention},
        metrics=METRICS,
        choices=CHOICES,
    )
