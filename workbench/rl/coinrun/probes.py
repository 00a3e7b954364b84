"""Coin-versus-exit probes for CoinRun agents: can a linear read-out of one layer say where the coin is, where the
exit is, and whether the two coincide?

Datasets come from `workbench.rl.collect.collect_coinrun` (rollout states, planner ground truth); probes from
`workbench.probes` (batched logistic and ridge). Fit and test levels are disjoint (different seeds). Every binary
probe is reported with accuracy and AUROC (95% bootstrap CIs) next to a shuffled-label control (the same probe fitted
on permuted labels: what the probe's capacity alone achieves); the regression probes report R^2.

Targets (rows restricted where the label is defined):
- coin_visible: the coin is inside the egocentric window (all rows of `ood` levels);
- coin_right: the coin is ahead of the agent (rows where the coin is present);
- coin_dx: the coin's column offset from the agent (ridge, rows where the coin is visible);
- exit_visible, exit_dx: the exit in view / its column offset (ridge) (all rows);
- coin_at_exit: coin and exit coincide (rows with the coin present, `train` and `ood` levels pooled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench.probes import LinearProbe, evaluate_probe, fit_logistic, fit_ridge
from workbench.rl.agent import Agent
from workbench.rl.envs.coinrun import CoinRunLevels

BINARY = ("coin_visible", "coin_right", "exit_visible", "coin_at_exit")
CONTINUOUS = ("coin_dx", "exit_dx")


def _rows(labels, target: str) -> np.ndarray:
    if target in ("coin_right", "coin_at_exit"):
        return labels["coin_present"].to_numpy(bool)
    if target == "coin_dx":
        return labels["coin_visible"].to_numpy(bool)
    return np.ones(len(labels), dtype=bool)


def defined_rows(labels, target: str) -> np.ndarray:
    """(n,) bool: the rows of a `collect_coinrun` labels table where `target` is defined (see the module docstring),
    so other probe code (`workbench.battery`) restricts rows exactly as these probes do."""
    return _rows(labels, target)


def _pooled(data: dict, splits: tuple[str, ...], target: str) -> tuple[torch.Tensor, np.ndarray]:
    """Activations (n, d) and labels (n,) of `target` over `splits`, restricted to the rows where it is defined."""
    xs, ys = [], []
    for sp in splits:
        x, lab = data[sp]
        m = _rows(lab, target)
        xs.append(x[torch.as_tensor(np.array(m, dtype=bool))])
        ys.append(lab[target].to_numpy()[m])
    return torch.cat(xs), np.concatenate(ys)


def coin_exit_probes(
    agent: Agent,
    layer: str = "embedder.block2.res1.resadd_out",
    fit_episodes: int = 300,
    test_episodes: int = 200,
    seed: int = 0,
    max_states_per_episode: int = 40,
) -> list[dict]:
    """One dict per (target, metric): value, ci95, n, and for binary targets the shuffled-label control's value.
    Fit on rollouts of `fit_episodes` levels (seed), test on `test_episodes` other levels (seed + 1)."""
    from workbench.rl.collect import collect_coinrun

    def data(split: str, episodes: int, s: int):
        ds = collect_coinrun(
            agent, [layer], split, episodes, s, max_states_per_episode=max_states_per_episode, progress=False
        )
        return ds[layer].flatten(1).double(), ds.labels

    fit = {sp: data(sp, fit_episodes, seed) for sp in ("ood", "train")}
    test = {sp: data(sp, test_episodes, seed + 1) for sp in ("ood", "train")}
    rng = np.random.default_rng(seed)
    out: list[dict] = []
    for target in BINARY + CONTINUOUS:
        splits = ("ood", "train") if target == "coin_at_exit" else ("ood",)

        x_fit, y_fit = _pooled(fit, splits, target)
        x_test, y_test = _pooled(test, splits, target)
        if target in CONTINUOUS:
            probe = fit_ridge(x_fit, torch.as_tensor(y_fit.astype(np.float64)))
            table = evaluate_probe(probe, x_test, torch.as_tensor(y_test.astype(np.float64)), seed=seed)
            control = None
        else:
            if len(np.unique(y_fit)) < 2 or len(np.unique(y_test)) < 2:
                out.append({"target": target, "metric": "skipped (one class only)", "n": int(len(y_test))})
                continue
            y_f = torch.as_tensor(y_fit.astype(np.int64))
            probe = fit_logistic(x_fit, y_f)
            table = evaluate_probe(probe, x_test, torch.as_tensor(y_test.astype(np.int64)), seed=seed)
            shuffled = fit_logistic(x_fit, torch.as_tensor(rng.permutation(y_fit).astype(np.int64)))
            control = evaluate_probe(shuffled, x_test, torch.as_tensor(y_test.astype(np.int64)), seed=seed)
        for _, row in table.iterrows():
            entry = {
                "target": target,
                "metric": row["metric"],
                "value": float(row["value"]),
                "ci95": [float(row["ci_low"]), float(row["ci_high"])],
                "n": int(row["n"]),
                "positive_rate": float(np.mean(y_test)) if target in BINARY else None,
            }
            if control is not None:
                entry["shuffled_control"] = float(control.loc[control["metric"] == row["metric"], "value"].iloc[0])
            out.append(entry)
    return out


READOUT_TARGETS = ("coin_visible", "coin_right", "exit_visible")


@dataclass
class CoinExitReadout:
    """Logistic probes at one layer for per-state read-outs along a trajectory (the app's CoinRun lab), with their
    held-out quality. probes: target -> LinearProbe (P = 1); quality: one row per (target, metric) as
    `coin_exit_probes` reports them (value, ci95, n, shuffled_control)."""

    layer: str
    probes: dict[str, LinearProbe]
    quality: list[dict]

    def read(self, acts: torch.Tensor) -> dict[str, np.ndarray]:
        """target -> (T,) probability the probe assigns to the label for activations (T, ...) at `layer`."""
        x = acts.flatten(1).double()
        return {t: torch.sigmoid(p.scores(x)[0]).numpy() for t, p in self.probes.items()}


def fit_coin_exit_readout(
    agent: Agent,
    layer: str = "embedder.block2.res1.resadd_out",
    episodes: int = 100,
    seed: int = 0,
    max_states_per_episode: int = 40,
) -> CoinExitReadout:
    """Fit READOUT_TARGETS' logistic probes on rollouts of `episodes` `ood` levels (seed) and test them on as many
    other levels (seed + 1), with a shuffled-label control, exactly as `coin_exit_probes` does. Why a separate
    function: `coin_exit_probes` reports metrics only; reading a probe along one episode needs the fitted probe."""
    from workbench.rl.collect import collect_coinrun

    def data(s: int):
        ds = collect_coinrun(
            agent, [layer], "ood", episodes, s, max_states_per_episode=max_states_per_episode, progress=False
        )
        return {"ood": (ds[layer].flatten(1).double(), ds.labels)}

    fit, test = data(seed), data(seed + 1)
    rng = np.random.default_rng(seed)
    probes: dict[str, LinearProbe] = {}
    quality: list[dict] = []
    for target in READOUT_TARGETS:
        x_fit, y_fit = _pooled(fit, ("ood",), target)
        x_test, y_test = _pooled(test, ("ood",), target)
        if len(np.unique(y_fit)) < 2 or len(np.unique(y_test)) < 2:
            quality.append({"target": target, "metric": "skipped (one class only)", "n": int(len(y_test))})
            continue
        probes[target] = fit_logistic(x_fit, torch.as_tensor(y_fit.astype(np.int64)))
        y_t = torch.as_tensor(y_test.astype(np.int64))
        table = evaluate_probe(probes[target], x_test, y_t, metrics=["accuracy", "auroc"], seed=seed)
        shuffled = fit_logistic(x_fit, torch.as_tensor(rng.permutation(y_fit).astype(np.int64)))
        control = evaluate_probe(shuffled, x_test, y_t, metrics=["accuracy", "auroc"], seed=seed)
        for _, row in table.iterrows():
            quality.append(
                {
                    "target": target,
                    "metric": row["metric"],
                    "value": float(row["value"]),
                    "ci95": [float(row["ci_low"]), float(row["ci_high"])],
                    "n": int(row["n"]),
                    "shuffled_control": float(control.loc[control["metric"] == row["metric"], "value"].iloc[0]),
                }
            )
    return CoinExitReadout(layer, probes, quality)


def state_labels(levels: CoinRunLevels, view: int) -> dict[str, np.ndarray]:
    """READOUT_TARGETS' ground truth (N,) bool for the levels' current states (same definitions as
    `workbench.rl.collect.collect_coinrun`): the probes' answer key along a trajectory."""
    dcoin = levels.coin - levels.agent
    dexit = levels.exit - levels.agent
    present = levels.has_coin()
    return {
        "coin_visible": present & np.all(np.abs(dcoin) <= view, axis=1),
        "coin_right": present & (dcoin[:, 1] > 0),
        "exit_visible": np.all(np.abs(dexit) <= view, axis=1),
    }


def probes_text(rows: list[dict], layer: str) -> str:
    """A plain-text table of `coin_exit_probes` rows at `layer`: value [95% CI], shuffled-label control, n."""
    lines = [f"layer {layer}", f"{'target':>13} {'metric':>20} {'value [95% CI]':>24} {'shuffled':>9} {'n':>6}"]
    for r in rows:
        if "value" not in r:
            lines.append(f"{r['target']:>13} {r['metric']:>20} {'':>24} {'':>9} {r['n']:>6}")
            continue
        ci = f"{r['value']:.3f} [{r['ci95'][0]:.3f},{r['ci95'][1]:.3f}]"
        ctrl = f"{r['shuffled_control']:.3f}" if r.get("shuffled_control") is not None else "-"
        lines.append(f"{r['target']:>13} {r['metric']:>20} {ci:>24} {ctrl:>9} {r['n']:>6}")
    return "\n".join(lines)
