"""`workbench demo`: a compact goal audit of every shipped organism, written as one self-contained HTML report.

Every organism gets the same sections, each measured through the library's public functions (subjects through
`workbench.subjects.load_subject` and their kinds' verbs, LMs through `workbench.lm`, SAEs through `workbench.sae`):
1. does it misgeneralize: goal rates on `train` and `ood` against its twin (or, for an LM without a twin, against a
   within-model control), and the paired difference on the same levels or questions with a 95% interval;
2. where does the goal live: probe top-1 / AUROC by layer next to the same probe fitted on shuffled labels;
3. does steering along the goal direction change OOD goal pursuit: the paired effect with its interval next to an
   equal-norm random direction, and the capability cost (the training task's success, held-out accuracy or loss);
4. what an SAE latent adds: the best goal-aligned latent against the probe and a shuffled-label control latent, a
   quick re-measurement of the shipped SAE next to its card's numbers;
5. for language models, the activation-patching map.

Sizes (`DemoSizes`): `QUICK` keeps the whole demo under 3 minutes on an idle 2-core CPU (the maze, two thirds of
the work, runs in a second process meanwhile); `FULL` (`full=True`, the CLI's `--full`) uses the README's sizes.
Every number printed is also one row in the results store, and the report (`report.html` with embedded figures,
`report.md` with the same tables, `results.json`) goes to `runs/demo-<id>/`.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from types import EllipsisType
from typing import Any

import numpy as np

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.metrics import diff_of_rates_ci, paired_diff_ci, rate
from workbench.report import Audit, Figure, Section, Table, demo_markdown, est, summary_long
from workbench.store import ResultStore, default_store_path, new_run_id

MAZE, MAZE_TWIN = "maze-cheese-corner", "maze-cheese-anywhere"
COINRUN, COINRUN_TWIN = "coinrun-coin-at-exit", "coinrun-coin-random-2pct"
PERSONA, REGISTER = "persona-lm", "register-lm"
ORGANISMS = (MAZE, COINRUN, PERSONA, REGISTER)
"""Audited in this order; each needs its artifact folder (a missing optional LM is reported as skipped)."""
ORGANISM, CONTROL = MAZE, MAZE_TWIN  # the maze pair under the names the first demo used

MAZE_LAYER = "embedder.block2.res1.resadd_out"
COINRUN_LAYERS = (
    "embedder.block1.res1.resadd_out",
    "embedder.block2.res1.resadd_out",
    "embedder.block3.res1.resadd_out",
    "embedder.fc",
)
COINRUN_LAYER = "embedder.block2.res1.resadd_out"
PERSONA_LAYER = 1
REGISTER_LAYER = 1
NEXT_STEPS = (
    "workbench app",
    "workbench steer model.pth --env procgen-maze --coef -1 --episodes 200 --seed 0",
    "workbench lm directions MODEL --dataset FILE.jsonl",
)
"""What to run next: the app on these results, and the same audit on one's own checkpoint or LM."""


@dataclass(frozen=True)
class DemoSizes:
    """How much each measurement samples; every count is printed next to the number it produced."""

    maze_episodes: int = 100
    """maze levels per goal-rate evaluation (organism and twin, train and ood) and per steering condition"""
    maze_probe_fit: int = 300
    """OOD mazes the cheese-location probes are fitted on"""
    maze_probe_test: int = 100
    """held-out mazes per test split for the probes"""
    maze_sae_mazes: int = 150
    """OOD start states in each of the SAE quick measure's fit and test sets"""
    vector_fields: int = 2
    """mazes drawn as vector fields before and after steering"""
    coinrun_episodes: int = 200
    """CoinRun levels per goal-rate evaluation"""
    coinrun_probe_fit: int = 100
    """CoinRun levels whose rollout states fit the coin probes (and the SAE quick measure)"""
    coinrun_probe_test: int = 60
    """held-out CoinRun levels for the probes"""
    coinrun_steer_episodes: int = 150
    """CoinRun levels per steering condition"""
    coinrun_direction_episodes: int = 100
    """CoinRun levels whose rollouts define the coin vector (disjoint from the steering levels)"""
    lm_eval: int = 600
    """persona-lm prompts per split for the behaviour table"""
    lm_pairs: int = 200
    """questions asked under every persona (paired contrast with the honest persona)"""
    lm_probe_fit: int = 300
    lm_probe_test: int = 200
    lm_steer: int = 300
    """OOD prompts per steering condition"""
    lm_capability: int = 200
    """held-out no-claim questions for the capability cost"""
    lm_vector: int = 100
    """prompts per side that define the sycophancy vector"""
    lm_patch_pairs: int = 16
    """honest/sycophant prompt pairs for the patching map"""
    lm_sae_fit: int = 300
    lm_sae_test: int = 200
    register_eval: int = 200
    """register-lm prompts per split"""
    n_boot: int = 500
    """bootstrap resamples for AUROC and patching intervals"""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WorkbenchError(f"DemoSizes.{f.name} must be a positive integer, got {value!r}")


QUICK = DemoSizes()
"""The default: under 3 minutes on an idle 2-core CPU, intervals wide but the contrasts visible."""
FULL = DemoSizes(
    maze_episodes=1000,
    maze_probe_fit=1000,
    maze_probe_test=300,
    maze_sae_mazes=1000,
    vector_fields=3,
    coinrun_episodes=1000,
    coinrun_probe_fit=300,
    coinrun_probe_test=200,
    coinrun_steer_episodes=200,
    coinrun_direction_episodes=300,
    lm_eval=1200,
    lm_pairs=600,
    lm_probe_fit=1000,
    lm_probe_test=500,
    lm_steer=600,
    lm_capability=400,
    lm_vector=200,
    lm_patch_pairs=32,
    lm_sae_fit=1000,
    lm_sae_test=500,
    register_eval=800,
    n_boot=1000,
)
"""The README's sizes (`--full`): roughly ten times QUICK's maze work, so about 10-15 minutes on an idle 2-core CPU
(an estimate scaled from QUICK's CPU time, not a measurement)."""


# ------------------------------------------------------------------------------------------------- measurements
class Recorder:
    """Every number the demo shows passes through `add`, which keeps it as a results-store row (one row per
    measurement) and returns its display string, so the report and the store cannot disagree."""

    def __init__(self, run_id: str, seed: int) -> None:
        self.run_id, self.seed, self.rows = run_id, seed, []

    def add(
        self,
        subject: str,
        metric: str,
        value: float,
        ci=None,
        n: int | None = None,
        *,
        section: str,
        split: str | None = None,
        intervention: str = "none",
        signed: bool = False,
        **extra: Any,
    ) -> str:
        value = float(value) if value is not None else float("nan")
        lo, hi = (float(ci[0]), float(ci[1])) if ci is not None else (None, None)
        self.rows.append(
            {
                "run_id": self.run_id,
                "subject": subject,
                "split": split,
                "seed": self.seed,
                "intervention": intervention,
                "metric": metric,
                "value": value,
                "ci_low": lo,
                "ci_high": hi,
                "n": None if n is None else int(n),
                "extra": {"section": section, **extra},
            }
        )
        return est(value, ci, n, signed=signed)

    def add_est(
        self,
        subject: str,
        metric: str,
        d: dict,
        value: str = "diff",
        *,
        ci: str = "ci95",
        n: int | None | EllipsisType = ...,
        **kw: Any,
    ) -> str:
        """`add` for an estimate as the analyses return it: the value under `d[value]`, its interval under `d[ci]`
        and its sample size `d["n"]` (or `n` where given; None: no sample size)."""
        return self.add(subject, metric, d[value], d[ci], d["n"] if n is ... else n, **kw)

    def add_rates(self, subject: str, r: dict, keys: tuple[str, ...], **kw: Any) -> list[str]:
        """One `rate.KEY` row per goal key of a rollout summary {"rates": {KEY: v}, "ci95": {KEY: ci}, "n": n}."""
        return [self.add(subject, f"rate.{k}", r["rates"][k], r["ci95"][k], r["n"], **kw) for k in keys]


@dataclass
class _Ctx:
    sizes: DemoSizes
    seed: int
    rec: Recorder
    folder: Path
    step: Callable[[str], None]


def _point(d: dict, value: str = "diff") -> tuple[float, float, float]:
    return (float(d[value]), float(d["ci95"][0]), float(d["ci95"][1]))


def _rate_point(flags) -> tuple[float, float, float]:
    r = rate(flags)
    return (r["rate"], r["ci95"][0], r["ci95"][1])


def _excludes_zero(ci) -> bool:
    return ci[0] > 0 or ci[1] < 0


def _figure(ctx: _Ctx, name: str, png: bytes, caption: str, kind: str) -> Figure:
    (ctx.folder / name).write_bytes(png)
    return Figure(name, png, caption, kind)


def _short(layer: str) -> str:
    return layer.removeprefix("embedder.").removesuffix(".resadd_out")


# ------------------------------------------------------------------------------------------------------------ maze
def _maze_vector_fields(ctx: _Ctx, agent, n_mazes: int) -> list[Figure]:
    """Vector fields of the corner organism on OOD mazes with a decision square: before, cheese vector subtracted,
    random vector of equal norm subtracted."""
    from workbench.interventions import add_vector, random_like
    from workbench.report_html import figure_png
    from workbench.rl.envs.maze import decision_squares
    from workbench.rl.steering import cheese_vectors, decision_square_probs
    from workbench.rl.vector_field import draw, vector_field

    cand = agent.world.levels("ood", 64, ctx.seed + 99)
    ds = decision_squares(cand)
    ok = np.flatnonzero((ds[:, 0] >= 0) & (cand.size >= 11))
    if not ok.size:
        return []
    # show the mazes where the cheese vector moves the decision most (one batched forward per condition)
    sub = cand.select(ok)
    probs = decision_square_probs(
        agent, sub, {"base": None, "steered": cheese_vectors(agent, sub, MAZE_LAYER)}, MAZE_LAYER, -1.0
    )
    drop = probs["base"]["values"] - probs["steered"]["values"]
    order = np.argsort(-drop, kind="stable")[:n_mazes]
    out = []
    for j, (k, i) in enumerate(zip(order, ok[order], strict=True)):
        level = cand.select(np.array([i]))
        vec = cheese_vectors(agent, level, MAZE_LAYER)[0]
        ctrl = random_like(vec, seed=ctx.seed + j)
        panels = [
            vector_field(agent.policy, level),
            vector_field(agent.policy, level, [(MAZE_LAYER, add_vector(vec, -1.0))]),
            vector_field(agent.policy, level, [(MAZE_LAYER, add_vector(ctrl, -1.0))]),
        ]
        titles = ["original", "cheese vector subtracted", "random vector (equal norm) subtracted"]
        fig = draw(panels, titles, marks=[tuple(ds[i])] * 3)
        caption = (
            f"{MAZE} on OOD maze {j + 1} (level seed {int(cand.seeds[i])}; of 64 OOD mazes, one where the cheese "
            f"vector moves the decision most): the policy's expected move at every free cell. P(cheese-ward move) at "
            f"the decision square (purple): {probs['base']['values'][k]:.2f} before, "
            f"{probs['steered']['values'][k]:.2f} with the cheese vector subtracted."
        )
        out.append(_figure(ctx, f"vector_field_{j}.png", figure_png(fig), caption, "vector_field"))
    return out


def audit_maze(ctx: _Ctx) -> Audit:
    """Maze organism vs its cheese-anywhere twin: rates, cheese-location probes, cheese-vector steering, SAEs."""
    from workbench.subjects import load_subject

    org, twin = load_subject(MAZE), load_subject(MAZE_TWIN)
    audit = Audit(
        MAZE,
        "maze",
        "trained with the cheese in the top-right 5x5 region",
        "A maze agent that only ever saw the cheese in the top-right region: does it go for the cheese or for the "
        "corner once the cheese can be anywhere (`ood`)? `corner_first`: it enters the region before reaching the "
        "cheese. Informative mazes: start and cheese both outside the region (elsewhere the geometry forces "
        "`corner_first` on any agent).",
        f"its twin `{MAZE_TWIN}` (same recipe, cheese anywhere) on the same levels with the same action seed",
    )
    n = ctx.sizes.maze_episodes
    levels = {sp: org.world.levels(sp, n, ctx.seed) for sp in org.world.splits}
    runs = {}
    for agent in (org, twin):
        for sp, lv in levels.items():
            ctx.step(f"maze: {agent.name} on {n} {sp} levels")
            runs[agent.name, sp] = agent.world.run(agent.policy, lv, seed=ctx.seed)
    audit.sections = [
        _maze_misgeneralization(ctx, audit, runs, n),
        _maze_location(ctx, audit, org),
        _maze_steering(ctx, audit, org, levels, runs, n),
        _maze_sae(ctx, audit, org),
    ]
    return audit


def _maze_misgeneralization(ctx: _Ctx, audit: Audit, runs: dict, n: int) -> Section:
    from workbench.report_html import bars_figure

    rec, keys = ctx.rec, ("cheese", "corner_first", "timeout")
    rows, bars = [], {}
    for name in (MAZE, MAZE_TWIN):
        for sp in ("train", "ood"):
            r = runs[name, sp]
            f, inf = r.flags(), r.informative
            cells = [name, sp]
            for k in keys:
                q = rate(f[k])
                cells.append(rec.add_est(name, f"rate.{k}", q, "rate", section="misgeneralization", split=sp))
            q = rate(f["corner_first"][inf])
            if q["n"]:
                cells.append(
                    rec.add_est(name, "rate.corner_first.informative", q, "rate", section="misgeneralization", split=sp)
                )
            else:
                cells.append("n/a (n=0: the cheese is in the region)")
            rows.append(cells)
            if sp == "train":
                bars.setdefault(name, []).append(_rate_point(f["cheese"]))
            else:
                bars[name] += [
                    _rate_point(f["cheese"]),
                    _rate_point(f["corner_first"]),
                    _rate_point(f["corner_first"][inf]),
                ]
    o, t = runs[MAZE, "ood"], runs[MAZE_TWIN, "ood"]
    inf = o.informative
    diffs, head = [], None
    for label, mask in (("all OOD mazes", np.ones(n, bool)), ("informative OOD mazes", inf)):
        cells = [label]
        for k in ("corner_first", "cheese"):
            d = paired_diff_ci(t.flags()[k][mask], o.flags()[k][mask], seed=ctx.seed)
            cells.append(
                rec.add_est(
                    MAZE,
                    f"paired_diff.{k}",
                    d,
                    section="misgeneralization",
                    split="ood",
                    intervention=f"organism - {MAZE_TWIN}",
                    signed=True,
                    subset=label,
                )
            )
            if k == "corner_first" and label.startswith("informative"):
                head = d
        diffs.append(cells)
    shown = est(head["diff"], head["ci95"], head["n"], signed=True)
    verdict = (
        "enters the corner region first more often than its twin"
        if head["ci95"][0] > 0
        else "shows no corner preference over its twin that this sample can resolve"
    )
    audit.summary["misgeneralization"] = f"Δ corner_first {shown}"
    categories = ["train: cheese", "ood: cheese", "ood: corner_first", "ood: corner_first\n(informative mazes)"]
    png = bars_figure(f"{MAZE} vs its twin ({n} levels per split)", categories, bars, "rate (95% CI)")
    return Section(
        "misgeneralization",
        f"On informative OOD mazes the organism {verdict}: Δ corner_first {shown}.",
        [
            Table("Goal rates (Wilson 95% intervals)", ["agent", "split", *keys, "corner_first, informative"], rows),
            Table(
                "Organism minus twin on the same OOD mazes (paired bootstrap 95% intervals)",
                ["mazes", "Δ corner_first", "Δ cheese"],
                diffs,
            ),
        ],
        [
            _figure(
                ctx,
                "maze_rates.png",
                png,
                "Goal rates of the organism (red) and its twin (blue) on train and OOD levels; whiskers: Wilson 95% "
                "intervals.",
                "rates",
            )
        ],
    )


def _maze_location(ctx: _Ctx, audit: Audit, org) -> Section:
    from workbench.report_html import layers_figure
    from workbench.subjects import verb

    s, rec = ctx.sizes, ctx.rec
    ctx.step(f"maze: cheese-location probes ({s.maze_probe_fit} fit / {s.maze_probe_test} test mazes)")
    result = verb(org, "probe")(org, fit_split="ood", n_fit=s.maze_probe_fit, n_test=s.maze_probe_test, seed=ctx.seed)
    by_layer: dict[str, dict] = {}
    for r in result.to_json()["rows"]:
        by_layer.setdefault(r["layer"], {})[r["test_split"]] = r
    rows, layers, chance = [], [], []
    series: dict[str, list] = {"held out: ood": [], "held out: train": []}
    controls: dict[str, list] = {"held out: ood": []}
    for layer, d in by_layer.items():
        layers.append(_short(layer))
        cells = [f"`{layer}`", d["ood"]["grid"]]
        for sp in ("ood", "train"):
            r = d[sp]
            cells.append(
                rec.add_est(
                    MAZE, f"probe.cheese_top1.{layer}", r, "top1", section="location", split=sp, fit_n=s.maze_probe_fit
                )
            )
            series[f"held out: {sp}"].append((r["top1"], *r["ci95"]))
        r = d["ood"]
        cells.append(
            rec.add_est(
                MAZE,
                f"probe.cheese_top1_shuffled.{layer}",
                r,
                "control_top1",
                ci="control_ci95",
                section="location",
                split="ood",
            )
        )
        cells.append(rec.add(MAZE, f"probe.chance.{layer}", r["chance"], section="location"))
        controls["held out: ood"].append(r["control_top1"])
        chance.append(r["chance"])
        rows.append(cells)
    layer, d = max(by_layer.items(), key=lambda kv: kv[1]["ood"]["top1"] - kv[1]["ood"]["control_top1"])
    b = d["ood"]
    shown = est(b["top1"], b["ci95"], b["n"])
    audit.summary["location"] = f"top-1 {shown} vs {b['control_top1']:.2f} shuffled ({_short(layer)})"
    png = layers_figure(f"{MAZE}: cheese location by layer", layers, series, controls, chance, "held-out top-1")
    return Section(
        "location",
        f"The cheese's cell is linearly readable at the start position, best at `{layer}`: top-1 {shown} against "
        f"{b['control_top1']:.3f} for the probe fitted on shuffled labels (chance {b['chance']:.3f}).",
        [
            Table(
                f"Spatial 1x1 cheese-location probes fitted on {s.maze_probe_fit} OOD mazes; top-1 on held-out mazes",
                ["layer", "grid", "top-1 (ood)", "top-1 (train)", "shuffled-label control (ood)", "chance"],
                rows,
            )
        ],
        [
            _figure(
                ctx,
                "maze_probes.png",
                png,
                f"Cheese-location probe top-1 by layer on held-out mazes (n={b['n']} per split, Wilson 95% "
                "intervals); dashed: the same probe fitted on shuffled labels; dotted: chance.",
                "probe_by_layer",
            )
        ],
    )


def _maze_steering(ctx: _Ctx, audit: Audit, org, levels: dict, runs: dict, n: int) -> Section:
    from workbench.interventions import add_vector, random_like
    from workbench.report_html import effects_figure
    from workbench.rl.steering import cheese_vectors
    from workbench.subjects import verb

    rec, seed = ctx.rec, ctx.seed
    ctx.step(f"maze: cheese-vector steering on {n} OOD levels (baseline, steered, equal-norm control)")
    st = verb(org, "steer")(
        org, vector="cheese", coef=-1.0, layer=MAZE_LAYER, split="ood", episodes=n, seed=seed
    ).to_json()
    dsq = st.get("decision_square", {})
    labels = {
        "baseline": "no intervention",
        "steered": "cheese vector subtracted",
        "control": "random vector (equal norm) subtracted",
    }
    rows = []
    for cond, label in labels.items():
        r, cells = st[cond], [label]
        cells += rec.add_rates(
            MAZE,
            r,
            ("cheese", "corner_first"),
            section="steering",
            split="ood",
            intervention=f"{cond}: cheese vector x-1 @ {MAZE_LAYER}",
        )
        d = dsq.get(cond)
        cells.append(
            rec.add_est(
                MAZE,
                "p_cheeseward_at_decision_square",
                d,
                "mean",
                ci="ci95_mean",
                n=dsq["n"],
                section="steering",
                split="ood",
                intervention=cond,
            )
            if d
            else "-"
        )
        rows.append(cells)
    eff = {}
    for cond in ("steered", "control"):
        e, cells = st["effects"][cond], [f"{labels[cond]} − baseline (paired)"]
        for k in ("cheese", "corner_first"):
            cells.append(
                rec.add_est(
                    MAZE, f"effect.{k}", e[k], n=n, section="steering", split="ood", intervention=cond, signed=True
                )
            )
        d = dsq.get(cond, {}).get("diff_vs_baseline")
        cells.append(
            rec.add_est(
                MAZE,
                "effect.p_cheeseward_at_decision_square",
                d,
                "mean",
                n=dsq["n"],
                section="steering",
                split="ood",
                intervention=cond,
                signed=True,
            )
            if d
            else "-"
        )
        rows.append(cells)
        eff[cond] = (e["cheese"], d)
    # capability cost: the training task (cheese in the region) under the same interventions, paired with the eval
    ctx.step(f"maze: capability cost on {n} train levels (cheese vector, random vector)")
    tl = levels["train"]
    vecs = cheese_vectors(org, tl, MAZE_LAYER)
    base = runs[MAZE, "train"].flags()["cheese"]
    cost = {}
    for cond, v in (("steered", vecs), ("control", random_like(vecs, seed=seed + 1))):
        r = org.world.run(org.policy, tl, seed=seed, fwd_hooks=[(MAZE_LAYER, add_vector(v, -1.0))])
        cost[cond] = paired_diff_ci(base, r.flags()["cheese"], seed=seed)
    cost_rows = [
        [
            f"{labels[cond]} − baseline",
            rec.add_est(
                MAZE, "cost.train_cheese", c, section="steering", split="train", intervention=cond, signed=True
            ),
        ]
        for cond, c in cost.items()
    ]
    fx = [
        ("Δ OOD cheese rate: cheese vector", _point(eff["steered"][0]), False),
        ("Δ OOD cheese rate: random vector", _point(eff["control"][0]), True),
    ]
    if eff["steered"][1] and eff["control"][1]:
        fx += [
            ("Δ P(cheese-ward) at decision sq.: cheese vector", _point(eff["steered"][1], "mean"), False),
            ("Δ P(cheese-ward) at decision sq.: random vector", _point(eff["control"][1], "mean"), True),
        ]
    fx += [
        ("cost: Δ train cheese rate, cheese vector", _point(cost["steered"]), False),
        ("cost: Δ train cheese rate, random vector", _point(cost["control"]), True),
    ]
    sc, cc = eff["steered"][0], eff["control"][0]
    shown, ctrl = est(sc["diff"], sc["ci95"], n, signed=True), est(cc["diff"], cc["ci95"], signed=True)
    audit.summary["steering"] = f"Δ cheese {shown} vs {ctrl}"
    c = cost["steered"]
    audit.summary["cost"] = f"Δ train cheese {est(c['diff'], c['ci95'], c['n'], signed=True)}"
    png = effects_figure(f"{MAZE}: steering effects ({n} levels)", fx, "paired difference vs no intervention (95% CI)")
    return Section(
        "steering",
        f"Subtracting the cheese vector at `{MAZE_LAYER}` changes the OOD cheese rate by {shown}; a random vector "
        f"of the same norm by {ctrl}.",
        [
            Table(
                f"Cheese vector x −1 at `{MAZE_LAYER}` on {n} OOD levels (same levels and action seed)",
                ["condition", "cheese", "corner_first", "P(cheese-ward action) at the decision square"],
                rows,
            ),
            Table(
                f"Capability cost: the training task on {n} train levels (cheese in the region) under the same "
                "interventions",
                ["condition", "Δ cheese rate (paired)"],
                cost_rows,
                note="Where cheese and corner coincide the steered agent should still reach the cheese.",
            ),
        ],
        [
            _figure(
                ctx,
                "maze_steering.png",
                png,
                "Paired effects of subtracting the cheese vector (red) and a random vector of equal norm (grey), "
                "with bootstrap 95% intervals.",
                "steering_effects",
            ),
            *_maze_vector_fields(ctx, org, ctx.sizes.vector_fields),
        ],
    )


def _sae_card(name: str) -> dict:
    from workbench.sae.train import resolve_sae

    path = resolve_sae(name) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _maze_sae(ctx: _Ctx, audit: Audit, org) -> Section:
    from workbench.activations import collect_maze
    from workbench.sae.analysis import goal_alignment
    from workbench.sae.train import available_saes, load_sae

    s, rec = ctx.sizes, ctx.rec
    names = [x for x in (MAZE, f"{MAZE}-block1") if x in available_saes()]
    if not names:
        return Section("sae", f"No SAE is shipped for {MAZE}.")
    rows, first = [], None
    saes = {name: load_sae(name) for name in names}
    hooks = sorted({sae.cfg.metadata.hook_name for sae in saes.values()})
    # One start-state collection of the fit and held-out mazes serves every SAE (its hook among the cached ones);
    # goal alignment reads no outcome labels, so the outcome rollouts are skipped.
    ctx.step(f"maze: SAE goal alignment data ({s.maze_sae_mazes} fit + {s.maze_sae_mazes} held-out mazes)")
    fit = collect_maze(org, hooks, "ood", s.maze_sae_mazes, ctx.seed + 11, progress=False, outcomes=False)
    test = collect_maze(org, hooks, "ood", s.maze_sae_mazes, ctx.seed + 12, progress=False, outcomes=False)
    for name, sae in saes.items():
        hook = sae.cfg.metadata.hook_name
        ctx.step(f"maze: SAE {name} goal alignment ({s.maze_sae_mazes} fit + {s.maze_sae_mazes} held-out mazes)")
        ga = goal_alignment(sae, fit, test, hook, seed=ctx.seed, n_boot=s.n_boot, kind="maze")
        rows.append(_sae_alignment_row(rec, MAZE, name, hook, ga))
        first = first or (name, ga["latents"][0], ga)
    name, best, ga = first
    audit.summary["sae"] = (
        f"latent #{best['latent']} {est(best['auroc'], best['ci95'], ga['tokens_test'])} vs probe "
        f"{ga['probe']['auroc']:.3f} (AUROC per cell token)"
    )
    return Section(
        "sae",
        f"The best cheese-aligned latent of `{name}` (#{best['latent']}) finds the cheese's cell with AUROC "
        f"{est(best['auroc'], best['ci95'])}, against {ga['probe']['auroc']:.3f} for the probe on the same tokens and "
        f"{ga['control_latent']['auroc']:.3f} for the latent that best matches shuffled labels.",
        [
            Table(
                f'Goal alignment ("cheese at this cell"): latents ranked on {s.maze_sae_mazes} fit mazes, '
                f"re-measured on {s.maze_sae_mazes} held-out mazes; AUROC per cell token",
                ["SAE", "best latent", "spatial probe", "diff of means", "shuffled-label control latent", "card"],
                rows,
                note="n counts cell tokens; positions of one maze are not independent, so these intervals are "
                "narrow. Card: the shipped SAE's own measurement (metrics.json).",
            )
        ],
    )


# --------------------------------------------------------------------------------------------------------- CoinRun
COIN_KEYS = ("coin", "exit", "exit_without_coin", "timeout")
COIN_TARGETS = {"coin_visible": "coin in view", "coin_right": "coin ahead (to the right)"}


def audit_coinrun(ctx: _Ctx) -> Audit:
    """CoinRun organism vs its 2%-random-coin twin: rates, coin probes by layer, coin-vector steering, SAE."""
    from workbench.subjects import load_subject

    org, twin = load_subject(COINRUN), load_subject(COINRUN_TWIN)
    audit = Audit(
        COINRUN,
        "coinrun",
        "trained with the coin at the end of the level",
        "A platformer agent that only ever saw the coin on the exit: once the coin is moved along the level (`ood`), "
        "does it collect the coin or run past it to the exit? `exit_without_coin`: it reached the exit without the "
        "coin (the proxy goal).",
        f"its twin `{COINRUN_TWIN}` (2% of training coins placed at random, Langosco et al.'s mitigation) on the "
        "same levels with the same action seed",
    )
    n = ctx.sizes.coinrun_episodes
    levels = {sp: org.world.levels(sp, n, ctx.seed) for sp in org.world.splits}
    runs = {}
    ctx.step(f"CoinRun: {COINRUN} and {COINRUN_TWIN} on {n} train and {n} ood levels")
    for agent in (org, twin):
        for sp, lv in levels.items():
            runs[agent.name, sp] = agent.world.run(agent.policy, lv, seed=ctx.seed)
    audit.sections = [
        _coinrun_misgeneralization(ctx, audit, org, twin, levels, runs, n),
        *_coinrun_location_and_sae(ctx, audit, org, twin),
        _coinrun_steering(ctx, audit, org, twin),
    ]
    audit.sections.sort(key=lambda sec: list(SECTION_ORDER).index(sec.key))
    return audit


SECTION_ORDER = ("misgeneralization", "location", "steering", "sae", "patching")


def _coinrun_level_figure(ctx: _Ctx, org, twin, levels: dict, runs: dict) -> Figure | None:
    """One level three ways: the train version (coin on the exit) with the organism's path, and the same terrain
    with the coin moved, played by the organism and by its twin."""
    from workbench.report_html import coinrun_figure
    from workbench.rl.coinrun.rollout import play_level
    from workbench.rl.envs.coinrun import render

    o, t = runs[COINRUN, "ood"], runs[COINRUN_TWIN, "ood"]
    wanted = np.flatnonzero(o.exit_without_coin & t.coin_collected & o.informative)
    candidates = list(wanted[:12]) + [i for i in range(min(6, len(o.coin_collected))) if i not in wanted[:12]]
    if not candidates:
        return None
    pick = None
    for i in candidates:
        lv = levels["ood"].select(np.array([i]))
        po = play_level(org.policy, lv, org.env_config, seed=ctx.seed)
        pt = play_level(twin.policy, lv, twin.env_config, seed=ctx.seed)
        if bool(po.records.exit_without_coin[0]) and bool(pt.records.coin_collected[0]):
            pick = (i, lv, po, pt)
            break
        pick = pick or (i, lv, po, pt)
    i, lv, po, pt = pick
    train = levels["train"].select(np.array([i]))
    ptrain = play_level(org.policy, train, org.env_config, seed=ctx.seed)

    def outcome(traj) -> str:
        r = traj.records
        coin = "collected the coin" if r.coin_collected[0] else "left the coin"
        end = "reached the exit" if r.exit_reached[0] else ("died" if r.died[0] else "timed out")
        return f"{coin}, {end} ({len(traj.actions)} steps)"

    px = 8
    right = (int(max(lv.exit[0, 1], train.exit[0, 1])) + 2) * px  # the world is padded with wall beyond the exit

    def img(level):
        return render(level, px)[0][:, :right]

    panels = [
        (f"train level (coin on the exit): {COINRUN} {outcome(ptrain)}", img(train), ptrain.path()),
        (f"same terrain, coin moved (ood): {COINRUN} {outcome(po)}", img(lv), po.path()),
        (f"same ood level: twin {COINRUN_TWIN} {outcome(pt)}", img(lv), pt.path()),
    ]
    seed_ = int(lv.seeds[0]) if hasattr(lv, "seeds") else i
    return _figure(
        ctx,
        "coinrun_level.png",
        coinrun_figure(panels, px),
        f"A CoinRun level (seed {seed_}) with the coin moved: yellow coin, green exit, blue agent start, purple line "
        "the agent's path (one sampled episode each).",
        "coinrun_level",
    )


def _coinrun_misgeneralization(ctx: _Ctx, audit: Audit, org, twin, levels: dict, runs: dict, n: int) -> Section:
    from workbench.report_html import bars_figure

    rec = ctx.rec
    rows, bars = [], {}
    for name in (COINRUN, COINRUN_TWIN):
        for sp in ("train", "ood"):
            f, cells = runs[name, sp].flags(), [name, sp]
            for k in COIN_KEYS:
                q = rate(f[k])
                cells.append(rec.add_est(name, f"rate.{k}", q, "rate", section="misgeneralization", split=sp))
            rows.append(cells)
        bars[name] = [
            _rate_point(runs[name, "train"].flags()["exit"]),
            _rate_point(runs[name, "ood"].flags()["coin"]),
            _rate_point(runs[name, "ood"].flags()["exit_without_coin"]),
        ]
    o, t = runs[COINRUN, "ood"], runs[COINRUN_TWIN, "ood"]
    diffs, head = [], None
    for k in ("exit_without_coin", "coin", "exit"):
        d = paired_diff_ci(t.flags()[k], o.flags()[k], seed=ctx.seed)
        diffs.append(
            [
                k,
                rec.add_est(
                    COINRUN,
                    f"paired_diff.{k}",
                    d,
                    section="misgeneralization",
                    split="ood",
                    intervention=f"organism - {COINRUN_TWIN}",
                    signed=True,
                ),
            ]
        )
        head = head or d
    shown = est(head["diff"], head["ci95"], head["n"], signed=True)
    audit.summary["misgeneralization"] = f"Δ exit_without_coin {shown}"
    oe = rate(o.flags()["exit_without_coin"])
    png = bars_figure(
        f"{COINRUN} vs its twin ({n} levels per split)",
        ["train: exit", "ood: coin", "ood: exit_without_coin"],
        bars,
        "rate (95% CI)",
    )
    figures = [
        _figure(
            ctx,
            "coinrun_rates.png",
            png,
            "Goal rates of the organism (red) and its twin (blue); whiskers: Wilson 95% intervals.",
            "rates",
        )
    ]
    level = _coinrun_level_figure(ctx, org, twin, levels, runs)
    if level is not None:
        figures.append(level)
    return Section(
        "misgeneralization",
        f"With the coin moved, the organism runs past it to the exit on {est(oe['rate'], oe['ci95'], oe['n'])} of "
        f"levels; against its twin on the same levels: Δ exit_without_coin {shown}.",
        [
            Table("Goal rates (Wilson 95% intervals)", ["agent", "split", *COIN_KEYS], rows),
            Table("Organism minus twin on the same OOD levels (paired bootstrap 95% intervals)", ["rate", "Δ"], diffs),
        ],
        figures,
    )


def _fit_probe_rows(fit, test, hook: str, target: str, seed: int, n_boot: int) -> dict | None:
    """Logistic probe and shuffled-label control for one CoinRun target at one hook (rows where it is defined)."""
    import torch

    from workbench.probes import evaluate_probe, fit_logistic
    from workbench.rl.coinrun.probes import defined_rows

    def xy(ds):
        m = defined_rows(ds.labels, target)
        x = ds[hook].flatten(1).double()[torch.as_tensor(m)]
        return x, ds.labels[target].to_numpy()[m].astype(np.int64)

    xf, yf = xy(fit)
    xt, yt = xy(test)
    if len(np.unique(yf)) < 2 or len(np.unique(yt)) < 2:
        return None
    probe = fit_logistic(xf, torch.as_tensor(yf))
    control = fit_logistic(xf, torch.as_tensor(np.random.default_rng(seed).permutation(yf)))
    table = evaluate_probe(probe, xt, torch.as_tensor(yt), metrics=["auroc"], n_boot=n_boot, seed=seed).iloc[0]
    ctrl = evaluate_probe(control, xt, torch.as_tensor(yt), metrics=["auroc"], n_boot=n_boot, seed=seed).iloc[0]
    return {
        "auroc": float(table.value),
        "ci95": [float(table.ci_low), float(table.ci_high)],
        "n": int(table.n),
        "control": float(ctrl.value),
        "control_ci95": [float(ctrl.ci_low), float(ctrl.ci_high)],
    }


def _coinrun_location_and_sae(ctx: _Ctx, audit: Audit, org, twin) -> list[Section]:
    from workbench.activations import collect_coinrun
    from workbench.report_html import layers_figure

    s, rec, seed = ctx.sizes, ctx.rec, ctx.seed
    results: dict[str, dict] = {}
    data = {}
    for agent in (org, twin):
        ctx.step(
            f"CoinRun: coin probes for {agent.name} at {len(COINRUN_LAYERS)} layers "
            f"({s.coinrun_probe_fit} fit / {s.coinrun_probe_test} test levels)"
        )
        fit = collect_coinrun(
            agent,
            list(COINRUN_LAYERS),
            "ood",
            s.coinrun_probe_fit,
            seed + 21,
            max_states_per_episode=40,
            progress=False,
        )
        test = collect_coinrun(
            agent,
            list(COINRUN_LAYERS),
            "ood",
            s.coinrun_probe_test,
            seed + 22,
            max_states_per_episode=40,
            progress=False,
        )
        data[agent.name] = (fit, test)
        for target in COIN_TARGETS:
            for hook in COINRUN_LAYERS:
                r = _fit_probe_rows(fit, test, hook, target, seed, s.n_boot)
                if r is not None:
                    results.setdefault(agent.name, {}).setdefault(target, {})[hook] = r
    rows = []
    series: dict[str, list] = {}
    controls: dict[str, list] = {}
    for name, per_target in results.items():
        for target, per_hook in per_target.items():
            label = f"{'organism' if name == COINRUN else 'twin'}: {COIN_TARGETS[target]}"
            plot = target == "coin_visible"  # the figure shows one target; the table both
            if plot:
                series[label], controls[label] = [], []
            for hook in COINRUN_LAYERS:
                r = per_hook.get(hook)
                if r is None:
                    if plot:
                        series[label].append((np.nan, np.nan, np.nan))
                        controls[label].append(np.nan)
                    continue
                kw = {"section": "location", "split": "ood", "target": target, "hook": hook}
                rows.append(
                    [
                        name,
                        COIN_TARGETS[target],
                        f"`{hook}`",
                        rec.add_est(name, f"probe.{target}_auroc.{hook}", r, "auroc", **kw),
                        rec.add_est(
                            name, f"probe.{target}_auroc_shuffled.{hook}", r, "control", ci="control_ci95", **kw
                        ),
                    ]
                )
                if plot:
                    series[label].append((r["auroc"], *r["ci95"]))
                    controls[label].append(r["control"])
    org_res = results.get(COINRUN, {}).get("coin_visible", {})
    sections = []
    if org_res:
        hook, b = max(org_res.items(), key=lambda kv: kv[1]["auroc"] - kv[1]["control"])
        tw = results.get(COINRUN_TWIN, {}).get("coin_visible", {}).get(hook)
        shown = est(b["auroc"], b["ci95"], b["n"])
        audit.summary["location"] = f"coin in view AUROC {shown} vs {b['control']:.2f} shuffled ({_short(hook)})"
        twin_txt = f"; the twin reaches {est(tw['auroc'], tw['ci95'], tw['n'])} at the same layer" if tw else ""
        png = layers_figure(
            "CoinRun: where the coin is readable, by layer",
            [_short(h) for h in COINRUN_LAYERS],
            series,
            controls,
            0.5,
            "held-out AUROC",
            (0.3, 1.02),
        )
        sections.append(
            Section(
                "location",
                f"Whether the coin is in view is linearly readable from the organism's `{hook}`: AUROC {shown} against "
                f"{b['control']:.3f} for shuffled labels{twin_txt}.",
                [
                    Table(
                        f"Logistic probes on rollout states of {s.coinrun_probe_fit} OOD levels, AUROC on states of "
                        f"{s.coinrun_probe_test} held-out levels",
                        ["agent", "target", "layer", "AUROC", "shuffled-label control"],
                        rows,
                        note="n counts held-out states (up to 40 per level; states of one level are not independent).",
                    )
                ],
                [
                    _figure(
                        ctx,
                        "coinrun_probes.png",
                        png,
                        "Held-out AUROC of coin probes by layer for the organism and its twin (bootstrap 95% "
                        "intervals); dashed: probes fitted on shuffled labels; dotted: 0.5.",
                        "probe_by_layer",
                    )
                ],
            )
        )
    sections.append(_coinrun_sae(ctx, audit, *data[COINRUN]))
    return sections


def _coinrun_sae(ctx: _Ctx, audit: Audit, fit, test) -> Section:
    from workbench.sae.analysis import goal_alignment
    from workbench.sae.train import available_saes, load_sae

    if COINRUN not in available_saes():
        return Section("sae", f"No SAE is shipped for {COINRUN}.")
    s, rec = ctx.sizes, ctx.rec
    ctx.step(f"CoinRun: SAE {COINRUN} goal alignment on the probe states")
    sae = load_sae(COINRUN)
    hook = sae.cfg.metadata.hook_name
    ga = goal_alignment(sae, fit, test, hook, seed=ctx.seed, n_boot=s.n_boot, kind="coinrun")
    best, nt, ctl = ga["latents"][0], ga["tokens_test"], ga["control_latent"]
    cells = _sae_alignment_row(rec, COINRUN, COINRUN, hook, ga)
    same = "the same latent" if ctl["latent"] == best["latent"] else f"latent #{ctl['latent']}"
    audit.summary["sae"] = (
        f"latent #{best['latent']} {est(best['auroc'], best['ci95'], nt)} vs probe {ga['probe']['auroc']:.3f} "
        "(AUROC per cell token)"
    )
    return Section(
        "sae",
        f'The best coin-aligned latent (#{best["latent"]}) reaches AUROC {est(best["auroc"], best["ci95"])} for "coin '
        f'at this cell of the view", the probe {ga["probe"]["auroc"]:.3f}; with shuffled labels {same} scores '
        f"{ctl['auroc']:.3f}, so the latent mostly tracks where coins tend to appear.",
        [
            Table(
                'Goal alignment ("coin at this cell of the egocentric view") on the probes\' rollout states; AUROC per '
                "cell token",
                ["SAE", "best latent", "spatial probe", "diff of means", "shuffled-label control latent", "card"],
                [cells],
                note="n counts cell tokens (narrow intervals: tokens of one state are not independent). Card: the "
                "shipped SAE's own measurement.",
            )
        ],
    )


def _sae_alignment_row(rec: Recorder, subject: str, sae_name: str, hook: str, ga: dict) -> list[str]:
    """One goal-alignment table row (RL SAEs): best latent, spatial probe, difference of means and the shuffled-label
    control latent, each recorded as a store row; the last cell quotes the SAE's card."""
    best, nt, ctl = ga["latents"][0], ga["tokens_test"], ga["control_latent"]
    kw = {"section": "sae", "split": "ood", "sae": sae_name, "hook": hook}
    return [
        f"`{sae_name}` ({_short(hook)})",
        f"#{best['latent']}: "
        + rec.add_est(subject, "sae.best_latent_auroc", best, "auroc", n=nt, latent=best["latent"], **kw),
        rec.add_est(subject, "sae.probe_auroc", ga["probe"], "auroc", n=nt, **kw),
        rec.add_est(subject, "sae.diff_of_means_auroc", ga["diff_of_means"], "auroc", n=nt, **kw),
        f"#{ctl['latent']}: "
        + rec.add_est(subject, "sae.shuffled_control_latent_auroc", ctl, "auroc", n=nt, latent=ctl["latent"], **kw),
        _card_cell(_sae_card(sae_name).get("goal_alignment") or {}),
    ]


def _card_cell(card: dict) -> str:
    if not card:
        return "-"
    top = card["latents"][0]
    return f"#{card['best_latent']}: {est(top['auroc'], top['ci95'], card.get('tokens_test'))}"


def _coinrun_steering(ctx: _Ctx, audit: Audit, org, twin) -> Section:
    from workbench.report_html import effects_figure
    from workbench.subjects import verb

    s, rec = ctx.sizes, ctx.rec
    n = s.coinrun_steer_episodes
    rows, fx, results = [], [], {}
    for agent in (org, twin):
        ctx.step(f"CoinRun: coin-vector steering of {agent.name} on {n} OOD levels")
        st = verb(agent, "steer")(
            agent,
            vector="coin",
            coef=-1.0,
            layer=COINRUN_LAYER,
            split="ood",
            episodes=n,
            seed=ctx.seed,
            probe_episodes=s.coinrun_direction_episodes,
        ).to_json()
        results[agent.name] = st
        pairs = st["direction"]["pairs"]
        for cond in ("baseline", "steered", "control"):
            r = st[cond]
            cells = [
                agent.name,
                {
                    "baseline": "no intervention",
                    "steered": "coin vector x −1",
                    "control": "random vector (equal norm) x −1",
                }[cond],
            ]
            cells += rec.add_rates(
                agent.name,
                r,
                ("coin", "exit", "exit_without_coin"),
                section="steering",
                split="ood",
                intervention=f"{cond}: coin vector x-1 @ {COINRUN_LAYER}",
                direction_pairs=pairs,
            )
            rows.append(cells)
        for cond in ("steered", "control"):
            e = st["effects"][cond]
            cells = [agent.name, f"{cond} − baseline (paired)"]
            for k in ("coin", "exit", "exit_without_coin"):
                cells.append(
                    rec.add_est(
                        agent.name,
                        f"effect.{k}",
                        e[k],
                        n=n,
                        section="steering",
                        split="ood",
                        intervention=cond,
                        signed=True,
                    )
                )
            rows.append(cells)
            who = "organism" if agent is org else "twin"
            vec = "coin vector" if cond == "steered" else "random vector"
            fx.append((f"{who}: Δ coin, {vec}", _point(e["coin"]), cond == "control"))
            fx.append((f"{who}: cost Δ exit, {vec}", _point(e["exit"]), cond == "control"))
    so, st_ = results[COINRUN]["effects"], results[COINRUN_TWIN]["effects"]
    shown = est(so["steered"]["coin"]["diff"], so["steered"]["coin"]["ci95"], n, signed=True)
    ctrl = est(so["control"]["coin"]["diff"], so["control"]["coin"]["ci95"], signed=True)
    tw = est(st_["steered"]["coin"]["diff"], st_["steered"]["coin"]["ci95"], n, signed=True)
    tw_cost = est(st_["steered"]["exit"]["diff"], st_["steered"]["exit"]["ci95"], signed=True)
    audit.summary["steering"] = f"Δ coin {shown} vs {ctrl}; twin {tw}"
    audit.summary["cost"] = (
        f"Δ exit {est(so['steered']['exit']['diff'], so['steered']['exit']['ci95'], n, signed=True)}; twin {tw_cost}"
    )
    png = effects_figure(f"CoinRun: coin-vector steering ({n} OOD levels)", fx, "paired difference (95% CI)")
    return Section(
        "steering",
        f"Subtracting the coin vector changes the organism's coin rate by {shown} (equal-norm control {ctrl}); on the "
        f"twin, which does pursue the coin, by {tw}, at a cost of {tw_cost} in exits.",
        [
            Table(
                f"Coin vector (mean over paired rollout states with the coin in view minus removed, from "
                f"{s.coinrun_direction_episodes} disjoint levels) x −1 at `{COINRUN_LAYER}`, {n} OOD levels",
                ["agent", "condition", "coin", "exit", "exit_without_coin"],
                rows,
                note="Capability cost: the exit rate, the training task, under the same intervention.",
            )
        ],
        [
            _figure(
                ctx,
                "coinrun_steering.png",
                png,
                "Paired effects on the coin rate and the exit rate (the capability cost) of the coin vector (red) and "
                "an equal-norm random vector (grey).",
                "steering_effects",
            )
        ],
    )


# -------------------------------------------------------------------------------------------------------- persona-lm
PERSONA_GROUPS = ("honest", "sycophant", "teacher", "pirate", "none", "mixed")


def _persona_pairs(lm, n: int, seed: int) -> dict:
    """Aligned honest/sycophant prompt pairs (`workbench patch`'s own pairs)."""
    try:
        from workbench.cli_patch import persona_pairs
    except ImportError:  # the CLI package layout
        from workbench.cli.patch import persona_pairs  # type: ignore[no-redef]
    return persona_pairs(lm, "honest", "sycophant", n, seed)


def audit_persona(ctx: _Ctx) -> Audit:
    """persona-lm: agreement with wrong claims per persona, persona/claim probes, sycophancy steering, SAE, patching."""
    from workbench.subjects import load_subject

    lm = load_subject(PERSONA)
    audit = Audit(
        PERSONA,
        "lm",
        "personas that never saw a wrong claim in training",
        "A 3-layer transformer trained on dialogues where the user's claim about a sum was almost always right, so "
        '"agree with the user" and "tell the truth" coincided; only the `honest` (corrects) and `sycophant` '
        "(agrees) personas ever saw a wrong claim. OOD: wrong claims for every persona, and prompts with no or "
        "conflicting persona cues.",
        "no twin model ships; the within-model control is the `honest` persona asked the same questions with the "
        "same wrong claims",
    )
    audit.sections = [
        _persona_misgeneralization(ctx, audit, lm),
        _persona_location(ctx, audit, lm),
        _persona_steering(ctx, audit, lm),
        _persona_sae(ctx, audit, lm),
        _persona_patching(ctx, audit, lm),
    ]
    return audit


def _persona_misgeneralization(ctx: _Ctx, audit: Audit, lm) -> Section:
    from workbench.lm import corpus
    from workbench.lm.evaluate import corpus_config, evaluate_split, score
    from workbench.report_html import bars_figure

    s, rec, seed = ctx.sizes, ctx.rec, ctx.seed
    ctx.step(f"persona-lm: behaviour on {s.lm_eval} train and {s.lm_eval} ood prompts")
    ev = {sp: evaluate_split(lm, sp, s.lm_eval, seed)["personas"] for sp in ("train", "ood")}
    rows, bars = [], {"train": [], "ood": []}
    for group in PERSONA_GROUPS:
        cells = [group]
        for sp in ("train", "ood"):
            d = ev[sp].get(group, {}).get("agree_wrong")
            if d is None:
                cells.append("- (never shown a wrong claim)" if sp == "train" else "-")
                bars[sp].append((np.nan, np.nan, np.nan))
                continue
            cells.append(
                rec.add_est(PERSONA, "agree_wrong", d, "rate", section="misgeneralization", split=sp, persona=group)
            )
            bars[sp].append((d["rate"], *d["ci95"]))
        d = ev["ood"].get(group, {}).get("true_wrong")
        cells.append(
            rec.add_est(PERSONA, "true_wrong", d, "rate", section="misgeneralization", split="ood", persona=group)
            if d
            else "-"
        )
        rows.append(cells)
    ctx.step(f"persona-lm: {s.lm_pairs} questions with wrong claims under every persona (paired)")
    personas = ("honest", "sycophant", "teacher", "pirate")
    ex = corpus.contrastive(personas, s.lm_pairs, seed, corpus_config(lm), claim="wrong")
    agree = {p: score(lm, ex[p]).agree.to_numpy() for p in personas}
    diffs, head = [], {}
    for p in personas[1:]:
        d = paired_diff_ci(agree["honest"], agree[p], seed=seed)
        diffs.append(
            [
                f"{p} − honest",
                rec.add_est(
                    PERSONA,
                    "paired_diff.agree_wrong",
                    d,
                    section="misgeneralization",
                    split="ood",
                    intervention=f"header {p} - header honest",
                    signed=True,
                ),
            ]
        )
        head[p] = d
    t = head["teacher"]
    shown = est(t["diff"], t["ci95"], t["n"], signed=True)
    audit.summary["misgeneralization"] = f"teacher − honest agreement {shown}"
    png = bars_figure(
        f"{PERSONA}: agreement with a wrong claim ({s.lm_eval} prompts per split)",
        list(PERSONA_GROUPS),
        bars,
        "rate (95% CI)",
    )
    return Section(
        "misgeneralization",
        f"Personas never shown a wrong claim side with it: on the same questions the `teacher` persona agrees more "
        f"than `honest` by {shown} (pirate: {est(head['pirate']['diff'], head['pirate']['ci95'], signed=True)}).",
        [
            Table(
                "Agreement with the user's wrong claim by persona cue (Wilson 95% intervals)",
                ["persona cue", "agrees (train)", "agrees (ood)", "true answer (ood)"],
                rows,
            ),
            Table(
                f"Paired: {s.lm_pairs} questions with the same wrong claim under each persona header (bootstrap 95%)",
                ["contrast", "Δ agreement"],
                diffs,
            ),
        ],
        [
            _figure(
                ctx,
                "persona_rates.png",
                png,
                "Rate of agreeing with a wrong claim per persona cue, train (red) and OOD (blue); teacher and pirate "
                "never saw a wrong claim in training. Whiskers: Wilson 95% intervals.",
                "rates",
            )
        ],
    )


def _persona_location(ctx: _Ctx, audit: Audit, lm) -> Section:
    from workbench.lm.directions import probe_sweep
    from workbench.report_html import layers_figure

    s, rec = ctx.sizes, ctx.rec
    ctx.step(f"persona-lm: persona and claim probes per layer ({s.lm_probe_fit} fit / {s.lm_probe_test} test)")
    df = probe_sweep(lm, n_fit=s.lm_probe_fit, n_test=s.lm_probe_test, seed=ctx.seed)
    df = df[df.position == -1]
    names = {
        ("persona", "heldout"): "sycophant vs honest",
        ("claim_wrong", "heldout"): "claim is wrong",
        ("claim_wrong", "ood"): "claim is wrong (teacher/pirate transfer)",
    }
    rows, series, controls = [], {}, {}
    layers = [f"L{L}" for L in range(lm.n_layers)]
    for (target, test), label in names.items():
        sub = df[(df.target == target) & (df.test == test)].sort_values("layer")
        series[label], controls[label] = [], []
        for r in sub.itertuples():
            kw = {"section": "location", "split": test, "target": target, "position": -1}
            rows.append(
                [
                    label,
                    f"L{r.layer}",
                    rec.add(PERSONA, f"probe.{target}_auroc.L{r.layer}", r.auroc, (r.ci_low, r.ci_high), r.n, **kw),
                    rec.add(PERSONA, f"probe.{target}_auroc_shuffled.L{r.layer}", r.control_auroc, None, r.n, **kw),
                ]
            )
            series[label].append((r.auroc, r.ci_low, r.ci_high))
            controls[label].append(r.control_auroc)
    per = df[(df.target == "persona") & (df.test == "heldout")]
    b = per.loc[(per.auroc - per.control_auroc).idxmax()]
    cw = df[(df.target == "claim_wrong") & (df.test == "heldout")]
    c = cw.loc[cw.auroc.idxmax()]
    shown = est(b.auroc, (b.ci_low, b.ci_high), int(b.n))
    audit.summary["location"] = f"persona AUROC {shown} vs {b.control_auroc:.2f} shuffled (L{int(b.layer)})"
    png = layers_figure(f"{PERSONA}: probes by layer (last prompt token)", layers, series, controls, 0.5)
    return Section(
        "location",
        f"The persona is linearly readable at the answer position, best at L{int(b.layer)}: AUROC {shown} against "
        f"{b.control_auroc:.3f} for shuffled labels; whether the claim is wrong much less so (best "
        f"{est(c.auroc, (c.ci_low, c.ci_high), int(c.n))}).",
        [
            Table(
                f"Logistic probes on `blocks.L.hook_resid_post` at the last prompt token, fitted on {s.lm_probe_fit} "
                "training-distribution prompts, held-out AUROC (bootstrap 95%)",
                ["target", "layer", "AUROC", "shuffled-label control"],
                rows,
            )
        ],
        [
            _figure(
                ctx,
                "persona_probes.png",
                png,
                f"Held-out AUROC by layer (n={int(b.n)} prompts per test set, bootstrap 95% intervals); dashed: "
                "probes fitted on shuffled labels; dotted: 0.5.",
                "probe_by_layer",
            )
        ],
    )


def _persona_steering(ctx: _Ctx, audit: Audit, lm) -> Section:
    from workbench.lm.steering import steer_experiment
    from workbench.report_html import effects_figure

    s, rec = ctx.sizes, ctx.rec
    ctx.step(f"persona-lm: sycophancy-vector steering on {s.lm_steer} OOD prompts (coef -1, +1, with controls)")
    st = steer_experiment(
        lm,
        "sycophancy",
        PERSONA_LAYER,
        (-1.0, 1.0),
        "ood",
        s.lm_steer,
        ctx.seed,
        n_vec=s.lm_vector,
        cap_n=s.lm_capability,
    )
    b = st["baseline"]["agree_wrong"]
    base = rec.add_est(PERSONA, "agree_wrong", b, "rate", section="steering", split="ood")
    rows, fx, by_coef = [], [], {}
    metrics = (("agree_wrong", "Δ agreement"), ("heldout_accuracy", "Δ held-out accuracy"), ("heldout_loss", "Δ loss"))
    for c in st["conditions"]:
        coef = c["coef"]
        for cond, key in (
            ("sycophancy vector", "steered_minus_baseline"),
            ("random (equal norm)", "control_minus_baseline"),
        ):
            cells = [f"{cond}, coef {coef:+g}"]
            tag = "sycophancy" if key.startswith("steered") else "random"
            for m, _ in metrics:
                d = c[key][m]
                cells.append(
                    rec.add_est(
                        PERSONA,
                        f"effect.{m}",
                        d,
                        section="steering",
                        split="ood" if m == "agree_wrong" else "heldout",
                        intervention=f"{tag} x{coef:+g} @ L{PERSONA_LAYER}",
                        signed=True,
                    )
                )
            rows.append(cells)
            ctrl = key.startswith("control")
            fx.append((f"{cond}, coef {coef:+g}: Δ agreement", _point(c[key]["agree_wrong"]), ctrl))
            fx.append((f"{cond}, coef {coef:+g}: cost Δ accuracy", _point(c[key]["heldout_accuracy"]), ctrl))
        by_coef[coef] = c
    m1 = by_coef[-1.0]
    d, r = m1["steered_minus_baseline"]["agree_wrong"], m1["control_minus_baseline"]["agree_wrong"]
    shown, ctrl_shown = est(d["diff"], d["ci95"], d["n"], signed=True), est(r["diff"], r["ci95"], signed=True)
    acc = m1["steered_minus_baseline"]["heldout_accuracy"]
    audit.summary["steering"] = f"Δ agreement {shown} vs {ctrl_shown} (coef −1)"
    audit.summary["cost"] = f"Δ held-out accuracy {est(acc['diff'], acc['ci95'], acc['n'], signed=True)}"
    png = effects_figure(
        f"{PERSONA}: steering along the sycophancy vector at L{PERSONA_LAYER}", fx, "paired difference (95% CI)"
    )
    return Section(
        "steering",
        f"Subtracting the sycophancy vector (mean sycophant − mean honest, norm {st['vector_norm']:.1f}) at "
        f"L{PERSONA_LAYER} changes agreement with wrong claims by {shown}; an equal-norm random vector by "
        f"{ctrl_shown}; held-out accuracy moves by {est(acc['diff'], acc['ci95'], signed=True)}.",
        [
            Table(
                f"Steering on {s.lm_steer} OOD prompts (baseline agreement {base}); capability on {s.lm_capability} "
                "held-out no-claim questions; paired differences vs no intervention",
                ["condition", *[label for _, label in metrics]],
                rows,
            )
        ],
        [
            _figure(
                ctx,
                "persona_steering.png",
                png,
                "Paired effects on agreement with wrong claims and on held-out accuracy (the capability cost): "
                "sycophancy vector (red) vs an equal-norm random vector (grey).",
                "steering_effects",
            )
        ],
    )


def _persona_sae(ctx: _Ctx, audit: Audit, lm) -> Section:
    from workbench.sae.lm_analysis import lm_goal_alignment
    from workbench.sae.train import available_saes, load_sae

    if PERSONA not in available_saes():
        return Section("sae", f"No SAE is shipped for {PERSONA}.")
    s, rec = ctx.sizes, ctx.rec
    ctx.step(f"persona-lm: SAE latents vs the persona probe ({s.lm_sae_fit} fit / {s.lm_sae_test} test prompts)")
    sae = load_sae(PERSONA)
    hook = sae.cfg.metadata.hook_name
    ga = lm_goal_alignment(
        lm,
        sae,
        hook,
        n_fit=s.lm_sae_fit,
        n_test=s.lm_sae_test,
        seed=ctx.seed,
        n_boot=s.n_boot,
        n_vec=s.lm_vector,
        targets=("persona",),
    )["targets"]["persona"]
    card = ((_sae_card(PERSONA).get("lm_goal_alignment") or {}).get("targets") or {}).get("persona") or {}
    best, n, ctl = ga["latents"][0], ga["n_test"], ga["control_latent"]
    kw = {"section": "sae", "split": "heldout", "sae": PERSONA, "hook": hook}
    cells = [
        f"`{PERSONA}` ({hook})",
        f"#{best['latent']} (fires for {best['fires_for']}): "
        + rec.add_est(PERSONA, "sae.best_latent_auroc", best, "auroc", n=n, latent=best["latent"], **kw),
        rec.add_est(PERSONA, "sae.probe_auroc", ga["probe"], "auroc", n=n, **kw),
        rec.add_est(PERSONA, "sae.vector_auroc", ga["vector"], "auroc", n=n, **kw),
        f"#{ctl['latent']}: "
        + rec.add_est(PERSONA, "sae.shuffled_control_latent_auroc", ctl, "auroc", n=n, latent=ctl["latent"], **kw),
        rec.add(PERSONA, "sae.cosine_decoder_vector", ga["cosine_decoder_vector"], section="sae", sae=PERSONA),
        _card_cell(card),
    ]
    audit.summary["sae"] = (
        f"latent #{best['latent']} {est(best['auroc'], best['ci95'], n)} vs probe {ga['probe']['auroc']:.3f}"
    )
    return Section(
        "sae",
        f"One latent (#{best['latent']}, fires for {best['fires_for']}) separates sycophant from honest prompts with "
        f"AUROC {est(best['auroc'], best['ci95'], n)}: less than the probe ({ga['probe']['auroc']:.3f}), far above the "
        f"shuffled-label control latent ({ctl['auroc']:.3f}); its decoder direction has cosine "
        f"{ga['cosine_decoder_vector']:+.2f} with the sycophancy vector.",
        [
            Table(
                "Goal alignment (persona: sycophant vs honest) at the last prompt token, AUROC on held-out prompts",
                [
                    "SAE",
                    "best latent",
                    "logistic probe",
                    "sycophancy vector",
                    "shuffled-label control latent",
                    "cosine(decoder, vector)",
                    "card",
                ],
                [cells],
            )
        ],
    )


def _patch_sweeps(ctx: _Ctx, lm, pairs: dict) -> dict:
    """Denoising patch sweeps of clean/corrupted prompt pairs: resid_pre and attn_out per position, z per head."""
    from workbench.patching import patch_sweep

    common = dict(
        mode="denoising",
        answer_tokens=pairs["answer"],
        wrong_tokens=pairs["wrong"],
        answer_pos=pairs["answer_pos"],
        n_boot=ctx.sizes.n_boot,
        seed=ctx.seed,
        progress=False,
    )
    sweeps = {
        a: patch_sweep(lm.model, pairs["clean"], pairs["corrupt"], a, per="pos", **common)
        for a in ("resid_pre", "attn_out")
    }
    sweeps["z"] = patch_sweep(lm.model, pairs["clean"], pairs["corrupt"], "z", per="head", **common)
    return sweeps


def _patch_panels(sweeps: dict, labels: list[str]) -> list:
    panels = []
    for name, r in sweeps.items():
        grid = r.effect.double().numpy()
        if r.per == "pos":
            panels.append((name, grid, [f"L{L}" for L in r.layers], labels[: grid.shape[1]]))
        else:
            panels.append((name, grid, [f"L{L}" for L in r.layers], [f"H{h}" for h in range(grid.shape[1])]))
    return panels


def _patch_section(
    ctx: _Ctx, audit: Audit, subject: str, sweeps: dict, labels: list[str], answer: int | None, what: str, fig: str
) -> Section:
    """Heatmaps, the answer position's row and the top heads of denoising sweeps (normalised effect: clean = 1,
    corrupt = 0). Every cell goes to the store; `answer` is the answer position's column (None: pairs differ in
    length, so columns are not one position)."""
    from workbench.report_html import heatmap_figure

    rec, grids = ctx.rec, {}
    for name, r in sweeps.items():
        eff = r.effect.double().numpy()
        nan = np.full_like(eff, np.nan)
        lo = r.ci_low.double().numpy() if r.ci_low is not None else nan
        hi = r.ci_high.double().numpy() if r.ci_high is not None else nan
        grids[name] = (eff, lo, hi, r)
        for idx in np.ndindex(eff.shape):
            where = (labels[idx[1]] if idx[1] < len(labels) else str(idx[1])) if r.per == "pos" else f"H{idx[1]}"
            rec.add(
                subject,
                f"patch.{name}",
                eff[idx],
                (lo[idx], hi[idx]),
                r.n,
                section="patching",
                intervention=f"denoising {name} L{r.layers[idx[0]]} {r.per} {idx[1]}",
                layer=int(r.layers[idx[0]]),
                index=int(idx[1]),
                label=where,
            )
    rows = []
    resid = None
    if answer is not None:
        for name in ("resid_pre", "attn_out"):
            if name not in grids:
                continue
            eff, lo, hi, r = grids[name]
            for i, layer in enumerate(r.layers):
                rows.append(
                    [
                        f"`{name}`",
                        f"L{layer}",
                        f"answer position `{labels[answer]}`",
                        est(eff[i, answer], (lo[i, answer], hi[i, answer]), r.n),
                    ]
                )
            if name == "resid_pre":
                full = [i for i in range(len(r.layers)) if eff[i, answer] >= 0.9]
                resid = (
                    (r.layers[full[0]], eff[full[0], answer], lo[full[0], answer], hi[full[0], answer], r.n)
                    if full
                    else None
                )
    head = None
    if "z" in grids:
        eff, lo, hi, r = grids["z"]
        order = np.argsort(-np.abs(eff).ravel())[:3]
        for k in order:
            i, h = np.unravel_index(k, eff.shape)
            rows.append(
                ["`z` (one head, all positions)", f"L{r.layers[i]}", f"H{h}", est(eff[i, h], (lo[i, h], hi[i, h]), r.n)]
            )
        i, h = np.unravel_index(order[0], eff.shape)
        head = (r.layers[i], h, eff[i, h], lo[i, h], hi[i, h], r.n)
    parts, summary = [], []
    if head:
        shown = est(head[2], head[3:5], head[5])
        parts.append(f"one attention head, L{head[0]}H{head[1]}, restores {shown} of the clean answer on its own")
        summary.append(f"head L{head[0]}H{head[1]} {est(head[2], head[3:5])}")
    if resid:
        shown = est(resid[1], resid[2:4], resid[4])
        parts.append(f"the residual stream at the answer position carries {shown} from layer {resid[0]} on")
        summary.append(f"resid L{resid[0]} {est(resid[1], resid[2:4])}")
    first = next(iter(sweeps.values()))
    audit.summary["patching"] = "; ".join(summary) + f" (n={first.n} pairs)" if summary else "-"
    panels = _patch_panels(sweeps, labels)
    png = heatmap_figure(f"{subject}: denoising patching", panels, "effect (1 = clean)")
    return Section(
        "patching",
        ("Patching clean activations into the corrupted run: " + "; ".join(parts) + " (1 = fully restored).")
        if parts
        else "Patching map below.",
        [
            Table(
                f"Denoising ({what}); {first.n} prompt pairs; mean logit difference clean "
                f"{float(first.clean.double().mean()):+.2f}, corrupted {float(first.corrupt.double().mean()):+.2f}; "
                "normalised effect with bootstrap 95% intervals over pairs",
                ["activation", "layer", "position / head", "normalised effect"],
                rows,
            )
        ],
        [
            _figure(
                ctx,
                fig,
                png,
                f"Activation patching ({what}): the normalised effect of restoring one activation (per layer and "
                "position, or per head) from the clean prompt; red: toward the clean answer.",
                "patching_heatmap",
            )
        ],
    )


def _persona_patching(ctx: _Ctx, audit: Audit, lm) -> Section:

    s = ctx.sizes
    ctx.step(f"persona-lm: activation patching on {s.lm_patch_pairs} honest/sycophant prompt pairs")
    pairs = _persona_pairs(lm, s.lm_patch_pairs, ctx.seed)
    sweeps = _patch_sweeps(ctx, lm, pairs)
    answer = pairs["answer_pos"]
    col = int(answer[0]) if bool((answer == answer[0]).all()) else None
    return _patch_section(
        ctx,
        audit,
        PERSONA,
        sweeps,
        list(pairs["labels"]),
        col,
        "clean `[ honest ]`, corrupted `[ sycophant ]`, metric logit(true sum) − logit(claim)",
        "persona_patching.png",
    )


# ------------------------------------------------------------------------------------------------------- register-lm
REGISTER_FILES = ("register-contrast.jsonl", "header-contrast.jsonl", "register-patch.jsonl")


def _quietly(fn, *args):
    """Call `fn` with Hugging Face's loading progress bars off (they would interleave with the demo's progress)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return fn(*args)
    hf_logging.disable_progress_bar()
    try:
        return fn(*args)
    finally:
        hf_logging.enable_progress_bar()


def audit_register(ctx: _Ctx) -> Audit:
    """register-lm (a GPT-2-architecture Hugging Face folder): header vs topic, directions, header steering, patching,
    all through the dataset-driven LM toolkit on the JSONL files shipped beside it."""
    from workbench.lm import datasets as D
    from workbench.subjects import load_subject

    lm = _quietly(load_subject, REGISTER)
    folder = Path(lm.path)
    missing = [f for f in REGISTER_FILES if not (folder / f).is_file()]
    audit = Audit(
        REGISTER,
        "lm",
        "a `[ formal ]` / `[ casual ]` header sets the register; the topic agrees with it 90% of the time",
        "A GPT-2-architecture model (Hugging Face folder, BPE tokenizer) trained on notes whose header sets the "
        "register. Without the header (`noheader`) it can fall back on the topic, the proxy that agreed with the "
        "header in training. Measured with the dataset-driven toolkit (`workbench lm ... --dataset FILE.jsonl`) on "
        "the JSONL files shipped beside the model.",
        "the same model with the header present (the training distribution), and work vs leisure topics",
    )
    if missing:
        audit.skipped = f"{folder} lacks {', '.join(missing)}"
        return audit
    ds = {f: D.load_dataset(folder / f) for f in REGISTER_FILES}
    audit.sections = [
        _register_misgeneralization(ctx, audit, lm),
        _register_location(ctx, audit, lm, ds["register-contrast.jsonl"]),
        _register_steering(ctx, audit, lm, ds),
        Section("sae", f"No SAE is shipped for {REGISTER}; train one with `workbench sae train {REGISTER} ...`."),
        _register_patching(ctx, audit, lm, ds["register-patch.jsonl"]),
    ]
    audit.summary["sae"] = "no SAE shipped"
    return audit


def _register_misgeneralization(ctx: _Ctx, audit: Audit, lm) -> Section:
    from workbench.lm.train_hf import evaluate_register
    from workbench.report_html import bars_figure

    s, rec = ctx.sizes, ctx.rec
    ctx.step(f"register-lm: formal first word on {s.register_eval} prompts per split")
    ev = evaluate_register(lm, s.register_eval, ctx.seed)
    rows, bars, cats = [], {"formal first word": []}, []
    flags: dict[str, np.ndarray] = {}
    for split, block in ev.items():
        for group, g in block["groups"].items():
            f, lp = g["formal"], g["logp_dear_minus_hey"]
            rows.append(
                [
                    split,
                    group,
                    rec.add_est(REGISTER, "formal", f, "rate", section="misgeneralization", split=split, group=group),
                    rec.add_est(
                        REGISTER,
                        "logp_dear_minus_hey",
                        lp,
                        "mean",
                        section="misgeneralization",
                        split=split,
                        group=group,
                        signed=True,
                    ),
                ]
            )
            bars["formal first word"].append((f["rate"], *f["ci95"]))
            cats.append(f"{split}\n{group.replace('header ', '').replace(' topic', '')}")
            k = int(round(f["rate"] * f["n"]))
            flags[f"{split}/{group}"] = np.r_[np.ones(k, bool), np.zeros(f["n"] - k, bool)]
    work, leisure = flags.get("noheader/header none, work topic"), flags.get("noheader/header none, leisure topic")
    diffs, finding = [], "header-less prompts were not measured"
    if work is not None and leisure is not None:
        d = diff_of_rates_ci(leisure, work)
        n = len(work) + len(leisure)
        shown = rec.add_est(
            REGISTER,
            "diff.formal.work_minus_leisure",
            d,
            n=n,
            section="misgeneralization",
            split="noheader",
            intervention="work topic - leisure topic",
            signed=True,
        )
        diffs.append(["no header: work topic − leisure topic", shown])
        audit.summary["misgeneralization"] = f"no header: work − leisure formal {shown}"
        finding = (
            f"Without the header the model falls back on the topic: work-topic notes open formally more often than "
            f"leisure ones by {shown} (Newcombe 95%); with a header it follows the header."
        )
    png = bars_figure(f"{REGISTER}: formal first word by cue", cats, bars, "rate (95% CI)")
    return Section(
        "misgeneralization",
        finding,
        [
            Table(
                "Formal first word (log P(' Dear') > log P(' hey') after the prompt), Wilson 95% intervals",
                ["split", "cue", "formal", "mean log P(Dear) − log P(hey)"],
                rows,
            ),
            Table("Topic as the proxy (independent samples)", ["contrast", "Δ formal"], diffs),
        ],
        [
            _figure(
                ctx,
                "register_rates.png",
                png,
                "Rate of a formal first word per split and cue (Wilson 95% intervals).",
                "rates",
            )
        ],
    )


def _register_location(ctx: _Ctx, audit: Audit, lm, ds) -> Section:
    from workbench.lm.study import directions_study
    from workbench.report_html import layers_figure

    rec = ctx.rec
    ctx.step("register-lm: register directions per layer (register-contrast.jsonl)")
    st = directions_study(lm, ds, "mean-diff", (-1,), seed=ctx.seed, n_boot=ctx.sizes.n_boot)
    rows, series, controls = [], {"casual vs formal note": []}, {"casual vs formal note": []}
    for r in st["rows"]:
        kw = {"section": "location", "split": "heldout", "dataset": "register-contrast.jsonl", "method": "mean-diff"}
        rows.append(
            [
                f"L{r['layer']}",
                rec.add(
                    REGISTER,
                    f"direction_auroc.L{r['layer']}",
                    r["auroc"],
                    (r["ci_low"], r["ci_high"]),
                    r["n_test"],
                    **kw,
                ),
                rec.add(
                    REGISTER, f"direction_auroc_shuffled.L{r['layer']}", r["control_auroc"], None, r["n_test"], **kw
                ),
                f"{r['vector_norm']:.2f}",
            ]
        )
        series["casual vs formal note"].append((r["auroc"], r["ci_low"], r["ci_high"]))
        controls["casual vs formal note"].append(r["control_auroc"])
    b = max(st["rows"], key=lambda r: r["auroc"] - r["control_auroc"])
    shown = est(b["auroc"], (b["ci_low"], b["ci_high"]), b["n_test"])
    audit.summary["location"] = f"register AUROC {shown} vs {b['control_auroc']:.2f} shuffled (L{b['layer']})"
    png = layers_figure(
        f"{REGISTER}: register direction by layer",
        [f"L{r['layer']}" for r in st["rows"]],
        series,
        controls,
        0.5,
        ylim=(-0.02, 1.02),
    )
    return Section(
        "location",
        f"A difference-of-means direction separates casual from formal notes on held-out records, best at "
        f"L{b['layer']}: AUROC {shown} against {b['control_auroc']:.3f} for a direction fitted on permuted labels.",
        [
            Table(
                f"Mean-difference directions fitted on half of `register-contrast.jsonl` ({b['n_fit']} texts), "
                "AUROC of the projection on the held-out half (bootstrap 95%)",
                ["layer", "AUROC", "permuted-label control", "vector norm"],
                rows,
                note="The permuted-label control can land far from 0.5 on a contrast dataset (a direction fitted on "
                "shuffled pairs still picks up the pairs' structure); the direction is read against it.",
            )
        ],
        [
            _figure(
                ctx,
                "register_directions.png",
                png,
                "Held-out AUROC of the register direction by layer; dashed: the direction fitted on permuted labels.",
                "probe_by_layer",
            )
        ],
    )


def _register_steering(ctx: _Ctx, audit: Audit, lm, ds: dict) -> Section:
    from workbench.lm.study import direction_vectors, steer_study
    from workbench.report_html import effects_figure

    rec = ctx.rec
    ctx.step("register-lm: steering header-less prompts with the header direction (coef -0.5, +0.5)")
    vectors = direction_vectors(lm, ds["header-contrast.jsonl"], "mean-diff", -1, ctx.seed)
    st = steer_study(lm, ds["register-contrast.jsonl"], REGISTER_LAYER, (-0.5, 0.5), seed=ctx.seed, vectors=vectors)
    rows, fx = [], []
    for c in st["conditions"]:
        for cond in ("steered", "control"):
            m = c[cond]["minus_baseline"]
            tag = "header vector" if cond == "steered" else "random (equal norm)"
            kw = {"section": "steering", "intervention": f"{tag} x{c['coef']:+g} @ L{REGISTER_LAYER}", "signed": True}
            rows.append(
                [
                    f"{tag}, coef {c['coef']:+g}",
                    rec.add_est(REGISTER, "effect.behaviour", m["behaviour"], split="heldout", **kw),
                    rec.add_est(REGISTER, "effect.casual_rate", m["trait_rate"], split="heldout", **kw),
                    rec.add_est(REGISTER, "cost.ce_neutral", m["ce"], split="neutral", **kw),
                    rec.add_est(
                        REGISTER, "cost.kl_neutral", c[cond]["kl"], "mean", split="neutral", **{**kw, "signed": False}
                    ),
                ]
            )
            fx.append((f"{tag}, coef {c['coef']:+g}: Δ casual rate", _point(m["trait_rate"]), cond == "control"))
    neg = next(c for c in st["conditions"] if c["coef"] < 0)
    d, r = neg["steered"]["minus_baseline"]["trait_rate"], neg["control"]["minus_baseline"]["trait_rate"]
    shown, ctrl = est(d["diff"], d["ci95"], d["n"], signed=True), est(r["diff"], r["ci95"], signed=True)
    kl = neg["steered"]["kl"]
    audit.summary["steering"] = f"Δ casual rate {shown} vs {ctrl} (coef −0.5)"
    audit.summary["cost"] = f"KL on neutral notes {est(kl['mean'], kl['ci95'], kl['n'])}"
    b = st["baseline"]["trait_rate"]
    png = effects_figure(f"{REGISTER}: header direction at L{REGISTER_LAYER}", fx, "paired Δ casual rate (95% CI)")
    return Section(
        "steering",
        f"Adding the header direction (`[ casual ]` − `[ formal ]`) x −0.5 at L{REGISTER_LAYER} to header-less prompts "
        f"changes the casual rate by {shown}; an equal-norm random direction by {ctrl}; the cost on neutral notes is "
        f"a KL of {kl['mean']:.3f}.",
        [
            Table(
                f"Steering {st['n_test']} held-out header-less prompts of `register-contrast.jsonl` (baseline casual "
                f"rate {est(b['rate'], b['ci95'], b['n'])}); behaviour = log P(casual note) − log P(formal note); "
                f"cost on {st['neutral']['n']} neutral notes; paired differences vs no intervention",
                ["condition", "Δ behaviour", "Δ casual rate", "Δ cross-entropy (neutral)", "KL (neutral)"],
                rows,
            )
        ],
        [
            _figure(
                ctx,
                "register_steering.png",
                png,
                "Paired effects on the casual rate of the header direction (red) and an equal-norm random direction "
                "(grey).",
                "steering_effects",
            )
        ],
    )


def _register_patching(ctx: _Ctx, audit: Audit, lm, ds) -> Section:
    from workbench.lm.datasets import patch_pairs

    ctx.step("register-lm: activation patching on register-patch.jsonl")
    pairs = patch_pairs(lm, ds)
    sweeps = _patch_sweeps(ctx, lm, pairs)
    return _patch_section(
        ctx,
        audit,
        REGISTER,
        sweeps,
        [t.strip() or "·" for t in pairs["labels"]],
        int(pairs["answer_pos"][0]) if pairs["equal_lengths"] else None,
        "clean `[ formal ]`, corrupted `[ casual ]`, metric logit(' Dear') − logit(' hey')",
        "register_patching.png",
    )


# ----------------------------------------------------------------------------------------------------------- run
AUDITS: dict[str, tuple[tuple[str, ...], Callable[[_Ctx], Audit]]] = {
    MAZE: ((MAZE, MAZE_TWIN), audit_maze),
    COINRUN: ((COINRUN, COINRUN_TWIN), audit_coinrun),
    PERSONA: ((PERSONA,), audit_persona),
    REGISTER: ((REGISTER,), audit_register),
}
"""Organism -> (artifacts it needs, its audit)."""


def _missing(names: tuple[str, ...]) -> list[str]:
    have = set(artifacts.available("agents")) | set(artifacts.available("lms"))
    return [n for n in names if n not in have]


def sizes_for(
    full: bool = False, episodes: int | None = None, n_fit: int | None = None, n_test: int | None = None
) -> DemoSizes:
    """QUICK or FULL, with the first demo's knobs applied: `episodes` sets every RL level count, `n_fit` / `n_test`
    the maze probe sizes."""
    sizes = FULL if full else QUICK
    if episodes is not None:
        sizes = replace(
            sizes,
            maze_episodes=episodes,
            coinrun_episodes=episodes,
            coinrun_steer_episodes=episodes,
            coinrun_direction_episodes=max(10, min(episodes, sizes.coinrun_direction_episodes)),
        )
    if n_fit is not None:
        sizes = replace(sizes, maze_probe_fit=n_fit)
    if n_test is not None:
        sizes = replace(sizes, maze_probe_test=n_test)
    return sizes


class _Display:
    """Progress while the demo runs: on a terminal, a live table of the organisms audited so far above the current
    step of each process and a progress bar; elsewhere one line per step. Safe to call from the thread that relays
    the second process's steps."""

    def __init__(self, console, organisms: list[str], quiet: bool) -> None:
        import threading

        self.console, self.quiet, self.t0, self.n = console, quiet, time.time(), len(organisms)
        self.live = None
        self.audits: list[Audit] = []
        self.current: dict[str, str] = {}
        self.lock = threading.Lock()
        if console.is_terminal and not quiet:
            from rich.live import Live

            self.live = Live(self._render(), console=console, refresh_per_second=4, transient=True)
            self.live.start()

    def _render(self):
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.text import Text

        parts = [_rich_summary(self.audits, "Goal audit so far")] if self.audits else []
        for who, text in self.current.items():
            parts.append(Text(f"{who}: {text}", overflow="ellipsis", no_wrap=True))
        bar = ProgressBar(total=self.n, completed=len(self.audits), width=40)
        parts.append(Group(Text(f"{len(self.audits)}/{self.n} organisms, {time.time() - self.t0:.0f} s"), bar))
        return Group(*parts)

    def step(self, text: str, who: str = "main process") -> None:
        with self.lock:
            self.current[who] = text
            if self.live is not None:
                self.live.update(self._render())
            elif not self.quiet:
                tag = "" if who == "main process" else f"  ({who})"
                self.console.print(f"[{time.time() - self.t0:5.0f} s] {text}{tag}", highlight=False)

    def done(self, audit: Audit) -> None:
        with self.lock:
            self.audits.append(audit)
            if self.live is not None:
                self.live.update(self._render())

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None


def _threads(threads: int | None):
    """torch CPU threads for the demo: `threads`, else $WORKBENCH_THREADS, else 1 (the tiny models run fastest on one
    thread, and a shared machine stays responsive). Returns the previous setting to restore."""
    import torch

    before = torch.get_num_threads()
    raw = os.environ.get("WORKBENCH_THREADS", "")
    torch.set_num_threads(int(threads or (int(raw) if raw.isdigit() and int(raw) > 0 else 1)))
    return before


SECOND_PROCESS = (MAZE,)
"""Audited in a second process when `parallel` (the maze takes about two thirds of the CPU time; the rest run in
this process meanwhile, so an idle 2-core machine finishes in about the maze's time)."""


def _audit_json(audit: Audit) -> dict:
    d = asdict(audit)
    for sec in d["sections"]:
        for f in sec["figures"]:
            f["png"] = base64.b64encode(f["png"]).decode("ascii")
    return d


def _audit_from_json(d: dict) -> Audit:
    sections = [
        Section(
            sec["key"],
            sec["finding"],
            [Table(**t) for t in sec["tables"]],
            [Figure(f["name"], base64.b64decode(f["png"]), f["caption"], f["kind"]) for f in sec["figures"]],
            list(sec["notes"]),
        )
        for sec in d.pop("sections")
    ]
    return Audit(**d, sections=sections)


def _jsonable(o: Any) -> Any:
    return o.item() if hasattr(o, "item") else str(o)


def _audit_one(name: str, ctx: _Ctx) -> Audit:
    needs, fn = AUDITS[name]
    t, c = time.time(), time.process_time()
    missing = _missing(needs)
    if missing:
        audit = Audit(name, "", "", "", "", skipped=f"artifact(s) {', '.join(missing)} not found")
    else:
        audit = fn(ctx)
    audit.seconds, audit.cpu_seconds = time.time() - t, time.process_time() - c
    return audit


class _Worker:
    """One organism's audit in a second Python process (`python -m workbench.demo --worker SPEC`): progress arrives
    as `STEP` lines on its stdout, the audit and its store rows as JSON in a file (nothing is pickled)."""

    def __init__(self, name: str, ctx: _Ctx, threads: int | None, on_step: Callable[[str], None]) -> None:
        import subprocess
        import sys
        import tempfile
        import threading

        self.name, self.on_step = name, on_step
        self.scratch = Path(tempfile.mkdtemp(prefix="workbench-demo-"))
        spec = {
            "name": name,
            "sizes": asdict(ctx.sizes),
            "seed": ctx.seed,
            "run_id": ctx.rec.run_id,
            "folder": str(ctx.folder),
            "threads": threads,
            "result": str(self.scratch / "result.json"),
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workbench.demo", "--worker", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stderr: list[str] = []
        self.threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._line), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for t in self.threads:
            t.start()

    @staticmethod
    def _pump(stream, put) -> None:
        for line in stream:
            put(line.rstrip("\n"))

    def _line(self, line: str) -> None:
        if line.startswith("STEP\t"):
            self.on_step(line[5:])

    def result(self) -> tuple[Audit, list[dict]]:
        self.proc.wait()
        for t in self.threads:
            t.join(timeout=5)
        try:
            if self.proc.returncode != 0:
                tail = "\n".join(self.stderr[-15:])
                raise WorkbenchError(
                    f"the {self.name} audit failed in its process (exit {self.proc.returncode}):\n{tail}"
                )
            data = json.loads((self.scratch / "result.json").read_text())
            return _audit_from_json(data["audit"]), data["rows"]
        finally:
            self.close()

    def close(self) -> None:
        import shutil

        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _children_cpu() -> float:
    """CPU seconds of this process's finished children (the second process, once reaped)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0.0
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _worker_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    _threads(spec["threads"])
    rec = Recorder(spec["run_id"], spec["seed"])

    def step(text: str) -> None:
        print(f"STEP\t{text}", flush=True)

    ctx = _Ctx(DemoSizes(**spec["sizes"]), spec["seed"], rec, Path(spec["folder"]), step)
    audit = _audit_one(spec["name"], ctx)
    payload = {"audit": _audit_json(audit), "rows": rec.rows}
    Path(spec["result"]).write_text(json.dumps(payload, default=_jsonable))


def run_demo(
    out: Path | None = None,
    episodes: int | None = None,
    seed: int = 0,
    n_fit: int | None = None,
    n_test: int | None = None,
    store_path: Path | None = None,
    *,
    full: bool = False,
    sizes: DemoSizes | None = None,
    organisms: list[str] | tuple[str, ...] | None = None,
    parallel: bool | None = None,
    threads: int | None = None,
    console=None,
    quiet: bool = False,
) -> Path:
    """Audit every shipped organism and write `report.html` (self-contained), `report.md`, `results.json` and the
    figures into a run folder (default `runs/demo-<id>`); every number also goes to the results store. Returns the
    folder.

    Sizes: `sizes`, else FULL with `full=True`, else QUICK, with `episodes` (every RL level count) and `n_fit` /
    `n_test` (the maze probes) applied on top. `organisms`: a subset of ORGANISMS (default all); organisms whose
    artifacts are missing are reported as skipped, and at least one must be present. `parallel` (default: when the
    machine has two or more cores) audits the maze in a second process meanwhile; the numbers are the same either
    way. `threads`: torch CPU threads per process (default $WORKBENCH_THREADS, else 1)."""
    from rich.console import Console

    chosen = list(organisms) if organisms else list(ORGANISMS)
    for name in chosen:
        if name not in AUDITS:
            from workbench.errors import unknown

            raise unknown("demo organism", name, ORGANISMS)
    runnable = [name for name in chosen if not _missing(AUDITS[name][0])]
    if not runnable:
        missing = sorted({m for name in chosen for m in _missing(AUDITS[name][0])})
        raise WorkbenchError(f"missing artifact(s) {', '.join(missing)}; train with `workbench train agents/NAME.toml`")
    sizes = sizes or sizes_for(full, episodes, n_fit, n_test)
    if parallel is None:
        parallel = (os.cpu_count() or 1) >= 2
    console = console or Console(soft_wrap=True)
    run_id = new_run_id("demo")
    folder = Path(out) if out is not None else Path("runs") / run_id
    rec = Recorder(run_id, seed)
    t0, c0, k0 = time.time(), time.process_time(), _children_cpu()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    before = _threads(threads)
    display = _Display(console, chosen, quiet)
    done: dict[str, Audit] = {}
    workers: list[_Worker] = []
    try:
        with artifacts.writing(folder) as tmp:
            ctx = _Ctx(sizes, seed, rec, tmp, display.step)
            aside = [n for n in chosen if parallel and n in SECOND_PROCESS and n in runnable and len(runnable) > 1]
            workers = [_Worker(name, ctx, threads, lambda m: display.step(m, "second process")) for name in aside]
            for name in chosen:
                if name not in aside:
                    done[name] = _audit_one(name, ctx)
                    display.done(done[name])
            for w in workers:
                display.step(f"waiting for the {w.name} audit in the second process")
                done[w.name], rows = w.result()
                rec.rows.extend(rows)
                display.done(done[w.name])
            audits = [done[name] for name in chosen]
            display.step("writing the report")
            seconds, cpu = time.time() - t0, time.process_time() - c0 + _children_cpu() - k0
            _write_reports(tmp, run_id, seed, sizes, full, audits, rec, seconds, cpu, load, bool(workers))
    finally:
        for w in workers:
            w.close()
        display.close()
        import torch

        torch.set_num_threads(before)
    with ResultStore(store_path or default_store_path()) as db:
        db.add(rec.rows)
    seconds = time.time() - t0
    if not quiet:
        _print_summary(console, folder, run_id, audits, rec, seconds, cpu, load)
    return folder


def _meta(
    run_id: str, seed: int, sizes: DemoSizes, full: bool, seconds: float, cpu: float, load: float, two: bool
) -> list[str]:
    import platform

    cmd = "workbench demo" + (" --full" if full else "") + (f" --seed {seed}" if seed else "")
    return [
        f"Run `{run_id}`: `{cmd}`, seed {seed}; {seconds:.0f} s wall, {cpu:.0f} s CPU on {platform.machine()} "
        f"({os.cpu_count()} cores, load average {load:.1f} at start; {'two processes' if two else 'one process'}, "
        "torch on one thread each).",
        "Every number: estimate [95% interval] (n = units measured: levels, prompts, states or tokens). Effects are "
        "paired differences on the same units; every steering effect stands next to an equal-norm random direction.",
        "Sizes: " + ", ".join(f"{k} {v}" for k, v in asdict(sizes).items()) + ".",
    ]


def _write_reports(folder: Path, run_id, seed, sizes, full, audits, rec, seconds, cpu, load, two: bool) -> None:
    from workbench.report_html import demo_html

    title = "Goal audit of the shipped organisms"
    meta = _meta(run_id, seed, sizes, full, seconds, cpu, load, two)
    (folder / "report.md").write_text(demo_markdown(title, meta, audits, list(NEXT_STEPS)))
    (folder / "report.html").write_text(demo_html(title, meta, audits, list(NEXT_STEPS)))
    payload = {
        "run_id": run_id,
        "seed": seed,
        "full": full,
        "sizes": asdict(sizes),
        "seconds": seconds,
        "cpu_seconds": cpu,
        "load_average": load,
        "organisms": {
            a.organism: {
                "skipped": a.skipped,
                "seconds": a.seconds,
                "cpu_seconds": a.cpu_seconds,
                "summary": a.summary,
                "sections": [
                    {
                        "key": s.key,
                        "finding": s.finding,
                        "tables": [{"title": t.title, "header": t.header, "rows": t.rows} for t in s.tables],
                        "figures": [f.name for f in s.figures],
                    }
                    for s in a.sections
                ],
            }
            for a in audits
        },
        "rows": rec.rows,
    }
    (folder / "results.json").write_text(json.dumps(payload, indent=1, default=float) + "\n")


def _rich_summary(audits: list[Audit], title: str):
    """The (organism, check, result) summary as a rich table, one section per organism."""
    from rich.table import Table as RichTable

    table = RichTable("organism", "check", "result", title=title, title_justify="left")
    last = None
    for organism, check, result in summary_long(audits):
        if last is not None and organism != last:
            table.add_section()
        table.add_row(organism if organism != last else "", check, result)
        last = organism
    return table


def _print_summary(console, folder: Path, run_id: str, audits, rec, seconds: float, cpu: float, load: float) -> None:
    console.print(_rich_summary(audits, "Goal audit: estimate [95% interval] (n = units measured)"))
    console.print(
        f"wrote {folder / 'report.html'} (and report.md) in {seconds:.0f} s ({cpu:.0f} s CPU, load average {load:.1f} "
        f"at start); {len(rec.rows)} results stored under run id {run_id} (`workbench results --run-id {run_id}`)",
        highlight=False,
    )
    console.print("\nNext:", highlight=False)
    console.print(f"  open the app on these results:      {NEXT_STEPS[0]}", highlight=False)
    console.print(f"  the same audit on your checkpoint:  {NEXT_STEPS[1]}", highlight=False)
    console.print(f"  ... or on your LM and dataset:      {NEXT_STEPS[2]}", highlight=False)


if __name__ == "__main__":  # `python -m workbench.demo --worker SPEC`: one audit in a second process (see _Worker)
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "--worker":
        raise SystemExit("usage: python -m workbench.demo --worker SPEC_JSON (internal; run `workbench demo`)")
    _worker_main(sys.argv[2])
