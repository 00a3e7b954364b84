"""Retargeting over a population of seeds: does automatic goal-channel discovery retarget every seed, or only some?

Why: one seed is an anecdote (the reviewers' point against Turner et al.), and `workbench sweep` trains many seeds of
one recipe. Channels are not aligned across independently trained networks -- channel 3 of seed 0 and channel 3 of
seed 1 share nothing but an index -- so "the same channels in every seed" is not a question one can ask. What is
comparable, and what this module reports per seed and across seeds:

- the discovered set's size and push magnitude, both chosen on that seed's fit mazes (`retarget_experiment`);
- how concentrated the goal signal is: the share of the layer's total |correlation| (and |probe weight|) that the
  chosen set holds, against k / C for a set of k channels that were no better than average;
- within-seed ranking stability: the bootstrap Spearman of the ranking and the Jaccard of the set;
- retargeting: success and path probability of the discovered set, random sets of the same size and magnitude, and
  no intervention, on that seed's own >= 200 (maze, target) pairs, with 95% intervals and paired effects;
- across seeds: the mean per-seed effect with a bootstrap interval over seeds, and how many seeds show an effect
  whose paired interval excludes zero.

Each seed runs the ordinary experiment on its own agent; the seeds share the evaluation seed, so the same mazes and
targets are asked of every network (mazes whose targets depend on the layer grid are the same for seeds that share
an architecture).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError
from workbench.metrics import bootstrap_ci
from workbench.rl.goal_channels import DEFAULT_LAYER

__all__ = ["PopulationRetargetConfig", "concentration", "population_text", "retarget_population", "seed_summary"]


@dataclass(frozen=True)
class PopulationRetargetConfig:
    """One retargeting sweep over a population folder (made by `workbench sweep`)."""

    layer: str = DEFAULT_LAYER
    """Spatial hook, the same name in every seed (the seeds share one recipe, hence one architecture)."""
    episodes: int = 200
    """Evaluated (maze, target) pairs per seed."""
    seed: int = 0
    """Evaluation seed: the same mazes, targets and action streams for every network."""
    n_fit: int = 500
    """Fit mazes per seed for discovery and the choice of set (disjoint from the evaluated ones)."""
    n_boot: int = 10
    """Bootstraps of the fit mazes per seed for ranking stability (>= 2)."""
    max_seeds: int | None = None
    """Use only the first N finished runs (by run id); None: all."""
    mode: str = "clamp"
    """clamp (set the channels at the target) or add (raise them there)."""
    magnitudes: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)
    """Pushes (std units) each seed's fit mazes choose from."""

    def __post_init__(self) -> None:
        if int(self.episodes) < 1:
            raise WorkbenchError(f"episodes must be >= 1, got {self.episodes}")
        if int(self.n_boot) < 2:
            raise WorkbenchError(
                f"n_boot must be >= 2 for a population (stability is part of the report), got {self.n_boot}"
            )
        if self.max_seeds is not None and int(self.max_seeds) < 1:
            raise WorkbenchError(f"max_seeds must be >= 1 (or omitted for all seeds), got {self.max_seeds}")


def concentration(scores: np.ndarray, chosen: Sequence[int]) -> dict:
    """The chosen channels' share of the layer's total |score|, and the share k / C a set of k average channels
    would hold (the baseline the share is read against)."""
    s = np.abs(np.asarray(scores, dtype=np.float64))
    total = float(s.sum())
    k, c = len(chosen), s.size
    share = float(s[list(chosen)].sum() / total) if total > 0 else float("nan")
    return {"share": share, "uniform_share": k / c, "ratio": share / (k / c) if total > 0 else float("nan")}


def seed_summary(run_id: str, seed: int, result: dict) -> dict:
    """What compares across seeds from one `retarget_experiment` result (see the module docstring)."""
    disc = result["discovery"]
    by_channel = {row["channel"]: row for row in disc["channels"]}
    c = len(by_channel)
    chosen = result["set"]
    corr = np.array([by_channel[ch]["correlation"] for ch in range(c)])
    probe = np.array([by_channel[ch]["probe"] for ch in range(c)])
    cond, eff = result["conditions"], result["effects"]
    stab = result["stability"] or {}
    return {
        "run_id": run_id,
        "training_seed": int(seed),
        "channels": c,
        "set": chosen,
        "set_size": len(chosen),
        "magnitude": result["magnitude"],
        "correlation_mass": concentration(corr, chosen),
        "probe_mass": concentration(probe, chosen),
        "stability": {
            "spearman": stab.get("spearman_vs_full"),
            "jaccard": stab.get("jaccard_vs_full"),
        },
        "conditions": {
            name: {"success": cond[name]["success"], "path_probability": cond[name]["path_probability"]}
            for name in ("discovered", "random", "single_best", "baseline")
        },
        "effects": {
            name: {"success": eff[name]["success"], "path_probability": eff[name]["path_probability"]}
            for name in ("discovered_vs_random", "discovered_vs_baseline")
        },
        "pairs": result["pairs"],
        "seconds": result["seconds"],
    }


def _across(values: Sequence[float], seed: int) -> dict:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=np.float64)
    lo, hi = bootstrap_ci(v, seed=seed) if v.size >= 2 else (float("nan"), float("nan"))
    return {
        "mean": float(v.mean()) if v.size else float("nan"),
        "ci95": [lo, hi],
        "min": float(v.min()) if v.size else float("nan"),
        "max": float(v.max()) if v.size else float("nan"),
        "n": int(v.size),
    }


def population_summary(rows: list[dict], seed: int) -> dict:
    """Across seeds: per-seed quantities averaged with a bootstrap 95% interval over seeds, and counts of seeds whose
    paired discovered-vs-random interval lies above zero."""

    def get(path: str) -> list[float]:
        out = []
        for r in rows:
            x: Any = r
            for key in path.split("."):
                x = None if x is None else x[int(key)] if isinstance(x, list) else x[key]
            out.append(None if x is None else float(x))
        return out

    summary = {
        "seeds": len(rows),
        "set_size": _across(get("set_size"), seed),
        "correlation_mass_ratio": _across(get("correlation_mass.ratio"), seed),
        "stability_spearman": _across(get("stability.spearman.mean"), seed),
        "stability_jaccard": _across(get("stability.jaccard.mean"), seed),
    }
    for cond in ("discovered", "random", "single_best", "baseline"):
        summary[f"{cond}_success"] = _across(get(f"conditions.{cond}.success.rate"), seed)
    for eff in ("discovered_vs_random", "discovered_vs_baseline"):
        for key in ("success", "path_probability"):
            summary[f"{eff}.{key}"] = _across(get(f"effects.{eff}.{key}.diff"), seed)
            lows = get(f"effects.{eff}.{key}.ci95.0")
            summary[f"{eff}.{key}.seeds_above_zero"] = int(sum(lo is not None and lo > 0 for lo in lows))
    return summary


def retarget_population(
    folder: str,
    config: PopulationRetargetConfig = PopulationRetargetConfig(),
    *,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the retargeting experiment on every finished seed of the population in `folder` (or the first
    `config.max_seeds`) and report per-seed rows plus the across-seed summary. JSON-ready."""
    from workbench.rl.retarget import retarget_experiment
    from workbench.subjects import load_subject
    from workbench.sweep import load_population

    t0 = time.time()
    pop = load_population(folder)
    records = sorted(pop.records, key=lambda r: r["run_id"])
    if not records:
        raise WorkbenchError(f"population {pop.name} in {folder} has no finished runs yet; run `workbench sweep` first")
    if config.max_seeds is not None:
        records = records[: int(config.max_seeds)]
    rows = []
    for i, rec in enumerate(records):
        agent = load_subject(str(pop.agent_folder(rec["run_id"])))
        if getattr(agent.world, "family", None) != "maze":
            raise WorkbenchError(
                f"population {pop.name} holds {getattr(agent.world, 'family', '?')} agents; population retargeting "
                "needs a maze-family population (e.g. maze-corner-fast)"
            )
        result = retarget_experiment(
            agent,
            layer=config.layer,
            episodes=config.episodes,
            seed=config.seed,
            n_fit=config.n_fit,
            n_boot=config.n_boot,
            mode=config.mode,
            magnitudes=config.magnitudes,
            offsets=(),
        )
        rows.append(seed_summary(rec["run_id"], rec.get("seed", i), result))
        if progress is not None:
            e = rows[-1]["effects"]["discovered_vs_random"]["success"]
            progress(
                f"[{i + 1}/{len(records)}] {rec['run_id']}: set {rows[-1]['set']} at {rows[-1]['magnitude']:g} std, "
                f"discovered - random success {e['diff']:+.3f} [{e['ci95'][0]:+.3f}, {e['ci95'][1]:+.3f}]"
            )
    return {
        "population": pop.name,
        "folder": str(folder),
        "layer": config.layer,
        "episodes": config.episodes,
        "seed": config.seed,
        "n_fit": config.n_fit,
        "n_boot": config.n_boot,
        "mode": config.mode,
        "per_seed": rows,
        "summary": population_summary(rows, config.seed),
        "seconds": round(time.time() - t0, 1),
    }


def population_text(r: dict) -> str:
    """The population sweep as one table for people."""

    def ci(d: dict, key: str = "diff") -> str:
        return f"{d[key]:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"

    lines = [
        f"{r['population']} @ {r['layer']}: {len(r['per_seed'])} seeds, {r['episodes']} (maze, target) pairs each, "
        f"eval seed {r['seed']}",
        "",
        f"{'run':<7} {'set':<16} {'mag':>4} {'corr mass':>9} {'rho':>5} {'jacc':>5}  {'discovered':>8} "
        f"{'random':>7} {'base':>6}  {'disc - random, success':<24} {'disc - random, path prob':<24}",
    ]
    for row in r["per_seed"]:
        c = row["conditions"]
        e = row["effects"]["discovered_vs_random"]
        st = row["stability"]
        lines.append(
            f"{row['run_id']:<7} {str(row['set']):<16} {row['magnitude']:>4g} "
            f"{row['correlation_mass']['ratio']:>9.2f} {st['spearman']['mean']:>5.2f} {st['jaccard']['mean']:>5.2f}  "
            f"{c['discovered']['success']['rate']:>8.3f} {c['random']['success']['rate']:>7.3f} "
            f"{c['baseline']['success']['rate']:>6.3f}  {ci(e['success']):<24} {ci(e['path_probability']):<24}"
        )
    s = r["summary"]
    lines += [
        "",
        f"across {s['seeds']} seeds (mean, bootstrap 95% over seeds):",
        f"  discovered success {ci(s['discovered_success'], 'mean')}, random {ci(s['random_success'], 'mean')}, "
        f"baseline {ci(s['baseline_success'], 'mean')}",
        f"  discovered - random: success {ci(s['discovered_vs_random.success'], 'mean')} "
        f"({s['discovered_vs_random.success.seeds_above_zero']}/{s['seeds']} seeds above zero), path probability "
        f"{ci(s['discovered_vs_random.path_probability'], 'mean')} "
        f"({s['discovered_vs_random.path_probability.seeds_above_zero']}/{s['seeds']} seeds above zero)",
        f"  set size {s['set_size']['mean']:.1f} ({s['set_size']['min']:g}..{s['set_size']['max']:g}); |correlation| "
        f"mass of the set / uniform {s['correlation_mass_ratio']['mean']:.2f}; within-seed Spearman "
        f"{s['stability_spearman']['mean']:.2f}, Jaccard {s['stability_jaccard']['mean']:.2f}",
    ]
    return "\n".join(lines)
