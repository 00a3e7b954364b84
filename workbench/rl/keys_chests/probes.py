"""Inventory and key-need probes for keys-and-chests agents: can a linear read-out of one layer say how many keys the
agent holds and whether another key could still open a chest?

Why these targets: an agent that pursues keys as an end has no use for "a key is needed"; one that pursues chests
does. Whether the need is linearly readable (and where) is the representational half of the behavioural contrast.

States are the policy's own rollout states (`rollout.rollout_states`) on `split` levels: fit on `n_fit` levels drawn
with `seed`, test on `n_test` other levels (seed + 1). Probes come from `workbench.probes` (batched logistic and
ridge); every probe is reported next to a shuffled-label control (the same probe fitted on permuted fit labels and
tested on the true test labels: what the probe's capacity alone achieves), with 95% bootstrap intervals.
Targets: `inventory` (ridge, r2), `has_key` and `key_needed` (logistic: auroc, accuracy).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache
from workbench.probes import evaluate_probe, fit_logistic, fit_ridge
from workbench.rl.keys_chests.env import KeysChestsLevels
from workbench.rl.keys_chests.rollout import levels_for, rollout_states, state_labels
from workbench.rl.world import check_split

BINARY = ("has_key", "key_needed")
CONTINUOUS = ("inventory",)
TARGETS = BINARY + CONTINUOUS
METHODS = {"logistic": BINARY, "ridge": CONTINUOUS}
DEFAULT_LAYER = "embedder.block2.res1.resadd_out"
BINARY_METRICS = ("auroc", "accuracy")


def activations(policy: torch.nn.Module, states: KeysChestsLevels, layer: str, batch: int = 1024) -> Tensor:
    """(S, ...) activations at `layer` for the states (only `layer` is cached)."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(states), batch):
            _, cache = run_with_cache(
                policy, torch.as_tensor(states.select(slice(lo, lo + batch)).observe()), names_filter=layer
            )
            out.append(cache[layer])
    return torch.cat(out)


def check_layer(agent, layer: str) -> None:
    from workbench.hooks import hook_names

    names = hook_names(agent.policy)
    if layer not in names:
        raise unknown("hook", layer, names)


def probe_target(
    x_fit: Tensor,
    y_fit: np.ndarray,
    x_test: Tensor,
    y_test: np.ndarray,
    *,
    target: str,
    seed: int = 0,
    l2: float = 1e-2,
) -> dict:
    """One target's probe and its shuffled-label control: `{"metric": value, "metric_ci95": [lo, hi],
    "control_metric": value, "n", "positive_rate"}` with metrics auroc/accuracy (binary) or r2 (inventory)."""
    if target not in TARGETS:
        raise unknown("target", target, TARGETS)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(y_fit)
    if target in CONTINUOUS:
        y_f, y_t = torch.as_tensor(y_fit.astype(np.float64)), torch.as_tensor(y_test.astype(np.float64))
        probe, control = fit_ridge(x_fit, y_f), fit_ridge(x_fit, torch.as_tensor(shuffled.astype(np.float64)))
        metrics: tuple[str, ...] = ("r2",)
        out: dict = {"n": int(len(y_test)), "positive_rate": None}
    else:
        if len(np.unique(y_fit)) < 2 or len(np.unique(y_test)) < 2:
            return {"n": int(len(y_test)), "skipped": "one class only"}
        y_f, y_t = torch.as_tensor(y_fit.astype(np.int64)), torch.as_tensor(y_test.astype(np.int64))
        probe = fit_logistic(x_fit, y_f, l2=l2)
        control = fit_logistic(x_fit, torch.as_tensor(shuffled.astype(np.int64)), l2=l2)
        metrics = BINARY_METRICS
        out = {"n": int(len(y_test)), "positive_rate": float(np.mean(y_test))}
    table = evaluate_probe(probe, x_test, y_t, metrics=list(metrics), seed=seed)
    ctrl = evaluate_probe(control, x_test, y_t, metrics=list(metrics), seed=seed)
    for _, row in table.iterrows():
        m = row["metric"]
        out[m] = float(row["value"])
        out[f"{m}_ci95"] = [float(row["ci_low"]), float(row["ci_high"])]
        c = ctrl.loc[ctrl["metric"] == m].iloc[0]
        out[f"control_{m}"] = float(c["value"])
        out[f"control_{m}_ci95"] = [float(c["ci_low"]), float(c["ci_high"])]
    return out


def probe_states(agent, split: str, episodes: int, seed: int, max_per_episode: int | None = None):
    """(states, labels) of the agent's rollouts on `episodes` levels of `split` drawn with `seed`."""
    levels = levels_for(split, episodes, seed, agent.env_config)
    got = rollout_states(agent.policy, levels, agent.env_config, seed=seed, max_per_episode=max_per_episode)
    return got.states, state_labels(got.states)


def key_probes(
    agent,
    *,
    layers: list[str],
    split: str = "ood",
    n_fit: int = 300,
    n_test: int = 200,
    seed: int = 0,
    targets: tuple[str, ...] = TARGETS,
    l2: float = 1e-2,
) -> dict[str, dict[str, dict]]:
    """layer -> target -> `probe_target`'s dict, fit on rollouts of `n_fit` levels and tested on `n_test` others."""
    check_split(agent.world, split)
    for layer in layers:
        check_layer(agent, layer)
    fit_states, fit_labels = probe_states(agent, split, n_fit, seed)
    test_states, test_labels = probe_states(agent, split, n_test, seed + 1)
    out: dict[str, dict[str, dict]] = {}
    for layer in layers:
        x_fit = activations(agent.policy, fit_states, layer).flatten(1).double()
        x_test = activations(agent.policy, test_states, layer).flatten(1).double()
        out[layer] = {
            t: probe_target(x_fit, fit_labels[t], x_test, test_labels[t], target=t, seed=seed, l2=l2) for t in targets
        }
    return out


def probes_text(found: dict[str, dict[str, dict]]) -> str:
    lines = []
    for layer, targets in found.items():
        lines += [f"layer {layer}", f"{'target':>11} {'metric':>9} {'value [95% CI]':>24} {'shuffled':>9} {'n':>6}"]
        for target, r in targets.items():
            if "skipped" in r:
                lines.append(f"{target:>11} {'skipped (' + r['skipped'] + ')':>34} {r['n']:>16}")
                continue
            for m in ("r2",) if target in CONTINUOUS else BINARY_METRICS:
                ci = f"{r[m]:.3f} [{r[m + '_ci95'][0]:.3f},{r[m + '_ci95'][1]:.3f}]"
                lines.append(f"{target:>11} {m:>9} {ci:>24} {r['control_' + m]:>9.3f} {r['n']:>6}")
    return "\n".join(lines)


def probe_verb(
    agent,
    *,
    layers: list[str] | None = None,
    fit_split: str = "ood",
    n_fit: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    **_: object,
):
    """`workbench probe`: inventory (ridge) and has_key / key_needed (logistic) probes per layer on the agent's own
    rollout states, with shuffled-label controls. `data["targets"]` holds the first layer's numbers flat
    (`targets.key_needed.auroc`, `targets.key_needed.control_auroc`, ...); `rows` one row per target and metric."""
    from workbench.rl.verbs import VerbResult

    names = list(layers or [DEFAULT_LAYER])
    if not names:
        raise WorkbenchError("probe needs at least one layer")
    found = key_probes(agent, layers=names, split=fit_split, n_fit=n_fit or 300, n_test=n_test or 200, seed=seed)
    rows = []
    for layer, targets in found.items():
        for target, r in targets.items():
            if "skipped" in r:
                continue
            for m in ("r2",) if target in CONTINUOUS else BINARY_METRICS:
                rows.append(
                    {
                        "layer": layer,
                        "target": target,
                        "metric": m,
                        "value": r[m],
                        "ci95": r[m + "_ci95"],
                        "n": r["n"],
                        "shuffled_control": r["control_" + m],
                        "test_split": fit_split,
                    }
                )
    data = {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "split": fit_split,
        "seed": seed,
        "n_fit": n_fit or 300,
        "n_test": n_test or 200,
        "targets": found[names[0]],
        "layers": found,
        "rows": rows,
    }
    return VerbResult(data, probes_text(found))
