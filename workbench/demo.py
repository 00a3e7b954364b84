"""`workbench demo`: the maze goal-misgeneralization study end to end on the shipped artifacts.

1. goal rates of the corner-trained organism and its cheese-anywhere control on `train` and `ood`;
2. cheese-location probes per layer (held-out top-1 accuracy, shuffled-label control);
3. cheese-vector steering on `ood` against the un-intervened run and a random equal-norm vector;
4. vector fields before/after steering; a markdown report, a JSON dump and rows in the results store.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.interventions import add_vector, random_like
from workbench.metrics import paired_diff_ci, rate
from workbench.report import contrast_table, probe_table, rates_table, steering_table
from workbench.rl.agent import load_agent
from workbench.rl.cheese_probe import cheese_location_probes
from workbench.rl.envs.maze import SPLITS, decision_squares
from workbench.rl.rollout import RATE_KEYS
from workbench.rl.steering import DEFAULT_LAYER, cheese_vectors, steer_experiment
from workbench.rl.vector_field import draw, vector_field
from workbench.store import ResultStore, default_store_path, new_run_id

ORGANISM, CONTROL = "maze-cheese-corner", "maze-cheese-anywhere"


def _store_rows(run_id: str, evals: list[dict], probes: list[dict], steering: dict, seed: int) -> list[dict]:
    rows = []
    for e in evals:
        for k in RATE_KEYS:
            rows.append(
                {
                    "run_id": run_id,
                    "subject": e["artifact"],
                    "split": e["split"],
                    "seed": seed,
                    "intervention": "none",
                    "metric": f"rate.{k}",
                    "value": e["rates"][k],
                    "ci_low": e["ci95"][k][0],
                    "ci_high": e["ci95"][k][1],
                    "n": e["episodes"],
                }
            )
    for p in probes:
        rows.append(
            {
                "run_id": run_id,
                "subject": ORGANISM,
                "split": p["test_split"],
                "seed": seed,
                "intervention": "none",
                "metric": f"probe.cheese_top1.{p['layer']}",
                "value": p["top1"],
                "ci_low": p["ci95"][0],
                "ci_high": p["ci95"][1],
                "n": p["n"],
                "extra": {"fit_split": p["fit_split"], "control_top1": p["control_top1"]},
            }
        )
    for cond in ("baseline", "steered", "control"):
        label = {"baseline": "none", "steered": "cheese_vector", "control": "random_equal_norm"}[cond]
        for k in RATE_KEYS:
            r = steering[cond]
            rows.append(
                {
                    "run_id": run_id,
                    "subject": ORGANISM,
                    "split": steering["split"],
                    "seed": seed,
                    "intervention": f"{label} x{steering['coef']:+g} @ {steering['layer']}",
                    "metric": f"rate.{k}",
                    "value": r["rates"][k],
                    "ci_low": r["ci95"][k][0],
                    "ci_high": r["ci95"][k][1],
                    "n": r["n"],
                }
            )
    return rows


def misgeneralization_contrast(episodes: int, seed: int) -> dict:
    """corner_first of the organism vs its control twin on the *same* OOD levels: the behavioural signature of the
    learned goal, with a paired bootstrap CI. Reported overall and where start and cheese lie outside the region
    (elsewhere corner_first is forced by the geometry for both agents)."""
    recs = {}
    for name in (ORGANISM, CONTROL):
        agent = load_agent(name)
        recs[name] = agent.world.run(agent.policy, agent.world.levels("ood", episodes, seed), seed=seed)
    org, ctl = recs[ORGANISM], recs[CONTROL]
    subsets = {"all": np.ones(episodes, dtype=bool), "start and cheese outside region": org.informative}
    out: dict = {"organism": ORGANISM, "control": CONTROL, "episodes": episodes, "seed": seed, "subsets": {}}
    for label, mask in subsets.items():
        a, b = ctl.corner_first[mask], org.corner_first[mask]
        diff = paired_diff_ci(a, b, seed=seed)
        out["subsets"][label] = {
            "n": int(mask.sum()),
            "organism": rate(b)["rate"],
            "organism_ci95": rate(b)["ci95"],
            "control": rate(a)["rate"],
            "control_ci95": rate(a)["ci95"],
            "diff": diff["diff"],
            "ci95": diff["ci95"],
        }
    return out


def _figures(folder: Path, seed: int, n_mazes: int = 3) -> list[str]:
    """Vector fields of the corner organism on a few OOD mazes that have a decision square: before, cheese vector
    subtracted, random vector of equal norm subtracted."""
    agent = load_agent(ORGANISM)
    cand = agent.world.levels("ood", 64, seed + 99)
    ds = decision_squares(cand)
    big = np.flatnonzero((ds[:, 0] >= 0) & (cand.size >= 11))[:n_mazes]
    names = []
    for j, i in enumerate(big):
        level = cand.select(np.array([i]))
        vec = cheese_vectors(agent, level, DEFAULT_LAYER)[0]
        ctrl = random_like(vec, seed=seed + j)
        fields = [
            vector_field(agent.policy, level),
            vector_field(agent.policy, level, [(DEFAULT_LAYER, add_vector(vec, -1.0))]),
            vector_field(agent.policy, level, [(DEFAULT_LAYER, add_vector(ctrl, -1.0))]),
        ]
        name = f"vector_field_{j}.png"
        draw(
            fields,
            ["original", "cheese vector subtracted", "random vector (equal norm) subtracted"],
            folder / name,
            marks=[tuple(ds[i])] * 3,
        )
        names.append(name)
    return names


def run_demo(
    out: Path | None = None,
    episodes: int = 200,
    seed: int = 0,
    n_fit: int = 1000,
    n_test: int = 300,
    store_path: Path | None = None,
) -> Path:
    """Run the study and write `report.md`, `results.json` and figures into a run folder; returns the folder."""
    missing = [n for n in (ORGANISM, CONTROL) if n not in artifacts.available("agents")]
    if missing:
        raise WorkbenchError(f"missing artifact(s) {', '.join(missing)}; train with `workbench train agents/NAME.toml`")
    console = Console(soft_wrap=True)  # tables stay whole when piped to a file
    run_id = new_run_id("demo")
    folder = out or Path("runs") / run_id
    t0 = time.time()
    with artifacts.writing(folder) as tmp:
        evals = []
        with console.status("evaluating goal rates ..."):
            for name in (ORGANISM, CONTROL):
                agent = load_agent(name)
                for split in SPLITS:
                    r = agent.world.run(agent.policy, agent.world.levels(split, episodes, seed), seed=seed).rates()
                    evals.append({"artifact": name, "split": split, "episodes": episodes, "seed": seed, **r})
        console.print("\n[bold]Goal rates[/bold] (Wilson 95% CIs)\n" + rates_table(evals))
        contrast = misgeneralization_contrast(episodes, seed)
        console.print(
            "\n[bold]Misgeneralization: organism vs control on the same OOD mazes[/bold]\n" + contrast_table(contrast)
        )
        with console.status("fitting cheese-location probes per layer ..."):
            probes = cheese_location_probes(load_agent(ORGANISM), n_fit=n_fit, n_test=n_test, seed=seed)
        console.print(f"\n[bold]Cheese-location probes[/bold] ({ORGANISM})\n" + probe_table(probes))
        with console.status("steering with the cheese vector ..."):
            steering = steer_experiment(load_agent(ORGANISM), "cheese", -1.0, DEFAULT_LAYER, "ood", episodes, seed)
        console.print("\n[bold]Cheese-vector steering[/bold]\n" + steering_table(steering))
        with console.status("drawing vector fields ..."):
            figures = _figures(tmp, seed)
        elapsed = time.time() - t0
        report = [
            f"# Maze goal-misgeneralization demo ({run_id})",
            "",
            f"Command: `workbench demo --episodes {episodes} --seed {seed}`; {elapsed:.0f} s on CPU.",
            "",
            "## Goal rates",
            "",
            rates_table(evals),
            "",
            "## Misgeneralization: organism vs control on the same OOD mazes",
            "",
            contrast_table(contrast),
            "",
            "Paired bootstrap 95% CI of the difference (same levels, same action seed). The informative subset keeps "
            "mazes where both the start and the cheese lie outside the top-right region.",
            "",
            f"## Cheese-location probes ({ORGANISM}, start position, fit on {n_fit} mazes, {n_test} held out)",
            "",
            probe_table(probes),
            "",
            "## Cheese-vector steering",
            "",
            steering_table(steering),
            "",
            "Effects are paired differences on the same levels (bootstrap 95% CI). The control adds a random Gaussian "
            "vector with the same norm as each maze's cheese vector.",
            "",
            "## Vector fields",
            "",
            "Arrows: the policy's expected move at every free cell; purple square: the decision square.",
            "",
        ] + [f"![vector field]({f})" for f in figures]
        (tmp / "report.md").write_text("\n".join(report) + "\n")
        (tmp / "results.json").write_text(
            json.dumps(
                {"run_id": run_id, "evals": evals, "contrast": contrast, "probes": probes, "steering": steering},
                indent=2,
                default=float,
            )
        )
    with ResultStore(store_path or default_store_path()) as db:
        db.add(_store_rows(run_id, evals, probes, steering, seed))
    console.print(f"\nwrote {folder}/report.md ({time.time() - t0:.0f} s); results stored under run id {run_id}")
    return folder
