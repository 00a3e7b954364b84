"""Probe batteries: declarative checks (TOML) against shipped artifacts, run in CI, failing loudly on regressions.

A battery file holds `[[check]]` tables. Every check names a subject (artifact), a kind and expectations:

    [[check]]
    name = "cheese location readable at block1"
    kind = "probe"                      # probe | behaviour | intervention
    subject = "maze-cheese-corner"
    hook = "embedder.block1.res2.resadd_out"
    method = "spatial"                  # probe methods: spatial | logistic | mass_mean
    target = "cheese_cell"              # a label column of workbench.activations datasets
    fit = { split = "ood", episodes = 600, seed = 0 }
    test = { split = "ood", episodes = 300, seed = 1 }
    expect = { top1 = ">= 0.5", selectivity = ">= 0.2" }

An expectation is `METRIC = "OP NUMBER"`; `METRIC.ci_low` / `METRIC.ci_high` test an interval bound instead of the
point estimate (e.g. `"effect.cheese.ci_high" = "< 0"`: the whole 95% CI is below zero). Every file is validated
completely (keys, kinds, subjects, hooks, metrics, splits, numbers) before any check runs, so a bad spec costs
nothing and records nothing. Exit codes: 0 every expectation holds, 1 some fall short, 2 a spec is invalid.

Subjects are maze agents, CoinRun agents (`artifacts/agents`) or workbench LMs (`artifacts/lms`); the subject's kind
picks the library function a check runs (no analysis lives here):

| check | maze | CoinRun | LM |
|---|---|---|---|
| behaviour | `rl.rollout.evaluate` | the same (dispatches) | `lm.evaluate.evaluate_split` + `capability` |
| probe | `collect_maze` + `workbench.probes` | `collect_coinrun` + the same probes | `lm.directions.probe_sweep` |
| intervention | `rl.steering.steer_experiment` | the same (`steer_coinrun`) | `lm.steering.steer_experiment` |

Any other subject kind brings its checks with it: `SubjectKind(..., battery=BatteryAdapter(measure, metrics, choices))`
(`workbench.subjects`) maps each check kind to the kind's own measuring function `fn(check, subject) -> {metric:
measurement(value, ci, n)}` and lists the metric names (`probe/METHOD` for probe checks), targets, vectors and methods
that checks are validated against. An RL kind without an adapter still gets `behaviour` checks, measured from its
world's rollout rates (metrics: the world's `rate_keys`).

For an LM, `episodes` counts prompts, `hook` is `blocks.L.hook_resid_post`, `fit`/`test` of a probe are the
sweep's fit and test prompts (fit on `train`, test seed = fit seed + 1, `test.split = "ood"` for the claim_wrong
transfer set), `position` the prompt position (-1 = last); an intervention's vector is fit on `fit.episodes` prompts
(CoinRun: levels) disjoint from the evaluated ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch

from workbench.errors import WorkbenchError, closest, unknown
from workbench.lm.corpora import ALL_GROUPS as _LM_GROUPS
from workbench.recipes import from_table, read_toml
from workbench.rl.coinrun.rollout import RATE_KEYS as _COINRUN_RATES
from workbench.rl.rollout import RATE_KEYS as _MAZE_RATES

KINDS = ("probe", "behaviour", "intervention", "retarget", "audit")
SUBJECT_KINDS = ("maze", "coinrun", "lm")
PROBE_METHODS = {
    "maze": ("spatial", "logistic", "mass_mean"),
    "coinrun": ("logistic", "mass_mean"),
    "lm": ("logistic",),
}
STATES = ("start", "rollout")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_CONDITIONS = ("baseline", "steered", "control", "effect", "control_effect")
_LOGISTIC = ("auroc", "accuracy", "recall_at_1pct_fpr", "control_auroc", "selectivity", "random_direction_auroc")
_LM_RATES = ("agree_wrong", "true_wrong", "logit_diff_wrong", "true_correct", "true_none")  # evaluate.behaviour_table
_LM_STEER = ("agree_wrong", "true_wrong", "logit_diff_wrong", "heldout_accuracy", "heldout_loss")  # lm.steering
METRICS: dict[tuple[str, str], tuple[str, ...]] = {
    ("maze", "spatial"): ("top1", "control_top1", "selectivity", "chance"),
    ("maze", "logistic"): _LOGISTIC,
    ("maze", "mass_mean"): _LOGISTIC,
    ("maze", "behaviour"): _MAZE_RATES,
    ("maze", "intervention"): tuple(f"{c}.{k}" for c in _CONDITIONS for k in _MAZE_RATES)
    + ("decision_square.effect", "decision_square.control_effect"),
    ("coinrun", "logistic"): _LOGISTIC,
    ("coinrun", "mass_mean"): _LOGISTIC,
    ("coinrun", "behaviour"): _COINRUN_RATES + ("died",) + tuple(f"informative.{k}" for k in _COINRUN_RATES),
    ("coinrun", "intervention"): tuple(f"{c}.{k}" for c in _CONDITIONS for k in _COINRUN_RATES),
    ("lm", "logistic"): ("auroc", "control_auroc", "selectivity"),
    ("lm", "behaviour"): tuple(f"{g}.{k}" for g in _LM_GROUPS for k in _LM_RATES)
    + ("heldout_accuracy", "heldout_loss"),
    ("lm", "intervention"): tuple(f"{c}.{k}" for c in _CONDITIONS for k in _LM_STEER),
}
_RETARGET = tuple(
    f"{row}.{m}"
    for row in (
        "discovered",
        "random",
        "single_best",
        "baseline",
        "discovered_vs_random",
        "discovered_vs_baseline",
        "single_best_vs_baseline",
        "discovered_vs_single_best",
    )
    for m in ("success", "path_probability", "cis")
)  # workbench.rl.retarget: CONDITIONS and EFFECTS x MEASURES
METRICS |= {
    ("maze", "retarget"): _RETARGET,
    ("coinrun", "retarget"): ("none (retarget checks need a maze subject)",),
    ("lm", "retarget"): ("none (retarget checks need a maze subject)",),
}
# audit: the subject is a population folder (workbench.sweep), `control` its control twin's, `hook` the layer
# (default workbench.audit.DEFAULT_LAYER), `data` the audit levels; metrics: the population's env kind's detectors
# (`workbench.audit.battery_metrics`, from the kind's own audit module).


def _audit_metric_names(population=None) -> tuple[str, ...]:
    """The metrics an audit check may test: the detectors of the population's env kind, or of every audited kind."""
    from workbench.audit import audited_kinds, battery_metrics

    kinds = {r.get("env_kind") for r in getattr(population, "records", [])} & set(audited_kinds())
    return battery_metrics(tuple(sorted(kinds)) or None)


INTERVENTION_VECTORS = {"maze": ("cheese",), "coinrun": ("coin",), "lm": ()}  # lm: workbench.lm.directions.VECTORS


@dataclass(frozen=True)
class DataSpec:
    """Which levels: `episodes` fresh levels of `split` drawn with `seed`; `states` start positions or rollouts."""

    split: str = "ood"
    episodes: int = 300
    seed: int = 0
    states: str = "start"
    max_steps: int = 0  # with states="rollout": keep only the first max_steps states of each episode (0: all)

    def __post_init__(self) -> None:
        from workbench.rl.envs.maze import SPLITS

        if self.split not in SPLITS:
            raise unknown("split", self.split, SPLITS)
        if self.states not in STATES:
            raise unknown("states", self.states, STATES)
        from workbench.validate import MAX_EPISODES, check_int, check_seed

        check_int("episodes", self.episodes, 2, MAX_EPISODES)
        check_seed(self.seed)
        check_int("max_steps", self.max_steps, 0, 1_000_000)


@dataclass(frozen=True)
class Expectation:
    metric: str  # e.g. "auroc" or "effect.cheese"
    bound: str  # "value", "ci_low" or "ci_high"
    op: str
    threshold: float

    def describe(self) -> str:
        target = self.metric if self.bound == "value" else f"{self.metric}.{self.bound}"
        return f"{target} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class CheckSpec:
    name: str
    kind: str
    subject: str
    env: str = ""  # the env kind of a bare checkpoint subject ("procgen-maze"); empty for folders and names
    hook: str = ""
    method: str = ""
    target: str = ""
    vector: str = ""
    coef: float = -1.0
    l2: float = 1e-3
    position: int = -1  # LM probes: prompt position counted back from the last token (workbench.lm.directions)
    control: str = ""  # audit checks: the control twin's population folder
    threshold: str = "median"  # audit checks: proxy label rule (median | control | a number)
    fit: DataSpec = field(default_factory=DataSpec)
    test: DataSpec = field(default_factory=lambda: DataSpec(seed=1))
    data: DataSpec = field(default_factory=DataSpec)
    expect: tuple[Expectation, ...] = ()
    file: str = ""


_EXPECT_RE = re.compile(r"^\s*(>=|<=|>|<)\s*(\S+)\s*$")


def _parse_expect(table: dict, where: str) -> tuple[Expectation, ...]:
    """Syntax only; metric names are checked against the subject's kind in `validate_check`."""
    if not isinstance(table, dict) or not table:
        raise WorkbenchError(f"{where}: 'expect' must be a non-empty table of METRIC = \"OP NUMBER\"")
    out = []
    for key, rule in table.items():
        metric, bound = key, "value"
        for suffix in (".ci_low", ".ci_high"):
            if key.endswith(suffix):
                metric, bound = key[: -len(suffix)], suffix[1:]
        match = _EXPECT_RE.match(str(rule)) if isinstance(rule, str) else None
        if match is None:
            raise WorkbenchError(f'{where}: expectation {key} = {rule!r} must look like ">= 0.9"')
        try:
            threshold = float(match.group(2))
        except ValueError:
            raise WorkbenchError(f"{where}: threshold {match.group(2)!r} of {key} is not a number") from None
        if not math.isfinite(threshold):
            raise WorkbenchError(
                f"{where}: threshold {match.group(2)!r} of {key} must be a finite number "
                "(a NaN bound never holds, an infinite one always or never does)"
            )
        out.append(Expectation(metric, bound, match.group(1), threshold))
    return tuple(out)


def parse_check(table: dict, file: Path, index: int) -> CheckSpec:
    """One `[[check]]` table -> CheckSpec (keys, types, kind, expectation syntax); errors name the file, the check
    and the key. What depends on the subject (methods, hooks, targets, vectors, metrics) is `validate_check`'s."""
    where = f"{file} check #{index + 1}" + (f" ({table['name']!r})" if isinstance(table.get("name"), str) else "")
    table = dict(table)
    raw_expect = table.pop("expect", None)
    nested = {}
    for key in ("fit", "test", "data"):
        if key in table:
            nested[key] = from_table(DataSpec, table.pop(key), f"{where} [{key}]")
    spec = from_table(CheckSpec, {k: v for k, v in table.items() if k not in ("file",)}, where)
    if spec.kind not in KINDS:
        raise WorkbenchError(f"{where}: {unknown('kind', spec.kind, KINDS)}")
    if spec.kind == "probe" and (not spec.hook or not spec.target or not spec.method):
        raise WorkbenchError(f"{where}: probe checks need 'hook', 'method' and 'target'")
    if spec.kind == "intervention" and (not spec.hook or not spec.vector):
        raise WorkbenchError(f"{where}: intervention checks need 'hook' and 'vector'")
    if raw_expect is None:
        raise WorkbenchError(f"{where}: missing 'expect'")
    if not spec.name.strip():
        raise WorkbenchError(f"{where}: 'name' must not be empty")
    if not spec.l2 > 0:
        raise WorkbenchError(f"{where}: key 'l2' must be > 0 (a ridge penalty), got {spec.l2}")
    expect = _parse_expect(raw_expect, where)
    return dataclasses.replace(spec, expect=expect, file=str(file), **nested)


def battery_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.toml"))
        elif path.is_file():
            files.append(path)
        else:
            raise WorkbenchError(f"battery path {str(path)!r} does not exist")
    if not files:
        raise WorkbenchError(f"no battery files (*.toml) in {', '.join(map(str, paths))}")
    return files


def load_subject(name: str, env: str = "") -> tuple[str, object]:
    """(analysis family, loaded subject) for any subject reference (`workbench.subjects.load_subject`): "maze" for
    native and procgen mazes, "coinrun" for CoinRun agents, "lm" for language models. `env` names the kind of a bare
    checkpoint file (`procgen-maze`). Unknown -> the nearest names."""
    from workbench.subjects import load_subject as load

    subject = load(name, env=env or None)
    world = getattr(subject, "world", None)
    return ("lm" if world is None else world.family), subject


def _choices(subject_kind: str, subject, what: str) -> tuple[str, ...]:
    """The valid hooks / probe targets / intervention vectors for a subject."""
    if subject_kind == "lm":
        from workbench.lm.directions import probe_targets_of, resid_hooks, vectors_of

        choices = {"hook": tuple(resid_hooks(subject)), "target": probe_targets_of(subject)}
        return {**choices, "vector": vectors_of(subject)}[what]
    if what == "hook":
        from workbench.hooks import hook_names

        return tuple(hook_names(subject.policy))
    if what == "vector":
        return INTERVENTION_VECTORS[subject_kind]
    if subject_kind == "coinrun":
        from workbench.rl.coinrun.probes import BINARY

        return BINARY
    from workbench.rl.collect import MAZE_LABEL_COLUMNS

    return MAZE_LABEL_COLUMNS


def _adapter(subject_kind: str, subject):
    """The subject kind's `BatteryAdapter` (`workbench.subjects`), or None for the families this module knows
    (maze, CoinRun, LM) and for populations."""
    if subject_kind in ("lm", "population"):
        return None
    world = getattr(subject, "world", None)
    from workbench.subjects import get_kind

    return get_kind(world.kind).battery if world is not None else None


def _adapted(subject_kind: str, subject) -> bool:
    """Checks on this subject run through its kind's adapter (a kind that brings its own, or an RL family this
    module does not know: behaviour checks from the world's rollout rates)."""
    return subject_kind not in SUBJECT_KINDS + ("population",) or _adapter(subject_kind, subject) is not None


def _validate_adapted(c: CheckSpec, subject, where: str) -> None:
    """`validate_check` for a kind with a `BatteryAdapter`: the check kind, hook, target/vector/method, metrics."""
    from workbench.subjects import BatteryAdapter

    world = subject.world
    adapter = _adapter("", subject) or BatteryAdapter(measure={}, metrics={})
    kinds = tuple(dict.fromkeys(["behaviour", *adapter.measure]))
    if c.kind not in kinds:
        raise WorkbenchError(f"{where}: {unknown('kind', c.kind, kinds)} ({world.kind} subject)")
    if c.hook:
        from workbench.hooks import hook_names

        if c.hook not in (hooks := tuple(hook_names(subject.policy))):
            raise WorkbenchError(f"{where}: {unknown('hook', c.hook, hooks)}")
    for what in ("target", "vector", "method"):
        value = getattr(c, what)
        if value and value not in (choices := tuple(adapter.choices.get(what, ()))):
            raise WorkbenchError(f"{where}: {unknown(what, value, choices)} ({world.kind} subject)")
    key = f"probe/{c.method}" if c.kind == "probe" else c.kind
    valid = tuple(adapter.metrics.get(key, ()))
    if c.kind == "behaviour" and "behaviour" not in adapter.measure:
        valid = tuple(world.rate_keys)
    for exp in c.expect:
        if exp.metric not in valid:
            raise WorkbenchError(
                f"{where}: unknown metric {exp.metric!r} for {world.kind} {key} checks; did you mean: "
                f"{', '.join(closest(exp.metric, valid) or valid[:3])}?"
            )


def validate_check(c: CheckSpec, subject_kind: str, subject) -> None:
    """Everything that depends on the subject's kind: method, hook, target, vector, LM data rules, metric names."""
    where = f"{c.file} check {c.name!r}"
    if c.kind == "audit" or subject_kind == "population":
        return _validate_audit(c, subject_kind, where, subject)
    if _adapted(subject_kind, subject):
        return _validate_adapted(c, subject, where)
    if c.kind == "probe" and c.method not in PROBE_METHODS[subject_kind]:
        raise WorkbenchError(
            f"{where}: {unknown('method', c.method, PROBE_METHODS[subject_kind])} ({subject_kind} subject)"
        )
    for what in ("hook", "target", "vector"):
        value = getattr(c, what)
        if value and value not in (choices := _choices(subject_kind, subject, what)):
            raise WorkbenchError(f"{where}: {unknown(what, value, choices)}")
    if subject_kind == "lm" and c.kind == "probe":
        from workbench.lm.directions import POSITIONS

        if c.position not in POSITIONS:
            raise WorkbenchError(f"{where}: position must be one of {', '.join(map(str, POSITIONS))}")
        if c.fit.split != "train" or c.test.seed != c.fit.seed + 1:
            raise WorkbenchError(
                f"{where}: LM probes fit on split 'train' and test on seed fit.seed + 1 (probe_sweep), "
                f"got fit.split {c.fit.split!r}, fit.seed {c.fit.seed}, test.seed {c.test.seed}"
            )
        from workbench.lm.corpora import of

        if c.test.split == "ood" and c.target not in (transfer := of(subject).transfer_sets):
            raise WorkbenchError(
                f"{where}: only target(s) {', '.join(map(repr, transfer)) or 'none'} have an ood test set; use "
                "test.split 'train'"
            )
    valid = METRICS[(subject_kind, c.method if c.kind == "probe" else c.kind)]
    for exp in c.expect:
        if exp.metric not in valid:
            raise WorkbenchError(
                f"{where}: unknown metric {exp.metric!r} for {subject_kind} {c.kind} checks"
                f"{'/' + c.method if c.kind == 'probe' else ''}; did you mean: "
                f"{', '.join(closest(exp.metric, valid) or valid[:3])}?"
            )


def load_checks(paths: list[Path]) -> list[CheckSpec]:
    """Parse and fully validate every check (subjects exist, hooks exist, targets are known labels)."""
    checks = []
    for file in battery_files(paths):
        data = read_toml(file)
        extra = set(data) - {"check", "battery"}
        if extra:
            raise WorkbenchError(
                f"{file}: unknown top-level key {sorted(extra)[0]!r}; expected [battery] and [[check]]"
            )
        tables = data.get("check", [])
        if not isinstance(tables, list) or not tables:
            raise WorkbenchError(f"{file}: no [[check]] tables")
        checks += [parse_check(t, file, i) for i, t in enumerate(tables)]
    names = [c.name for c in checks]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise WorkbenchError(f"duplicate check name(s): {', '.join(sorted(dupes))}")
    subjects: dict = {}
    for c in checks:
        key = (c.subject, c.env, c.kind == "audit")
        try:
            if key not in subjects:
                subjects[key] = _subject_for(c)
        except WorkbenchError as err:
            raise WorkbenchError(f"{c.file} check {c.name!r}: {err}") from None
        validate_check(c, *subjects[key])
    return checks


# ------------------------------------------------------------------------------------------------------- running
def measurement(value: float, ci: tuple[float, float] | list[float] | None = None, n: int | None = None) -> dict:
    """One measured metric as checks read it: `{"value", "ci_low", "ci_high", "n"}` (NaN bounds: no interval)."""
    lo, hi = (float("nan"), float("nan")) if ci is None else (float(ci[0]), float(ci[1]))
    return {"value": float(value), "ci_low": lo, "ci_high": hi, "n": n}


_m = measurement


def _collect(agent, hook: str, spec: DataSpec):
    """A labelled activation dataset for `spec`'s levels: collect_maze or collect_coinrun by the agent's env kind."""
    from workbench.rl.collect import collect_coinrun, collect_maze

    collect = collect_coinrun if agent.env_kind == "coinrun" else collect_maze
    return collect(
        agent,
        [hook],
        split=spec.split,
        episodes=spec.episodes,
        seed=spec.seed,
        states=spec.states,
        max_states_per_episode=spec.max_steps or None,
        progress=False,
    )


def _probe_metrics(check: CheckSpec, agent) -> dict[str, dict]:
    from workbench.metrics import rate

    fit, test = _collect(agent, check.hook, check.fit), _collect(agent, check.hook, check.test)
    seen = set(fit.label("level_seed").tolist())
    test = test.select(~np.isin(test.label("level_seed"), list(seen)))  # held out: no level used in fitting
    if agent.env_kind == "coinrun":  # e.g. coin_right only where a coin is present, as coin_exit_probes does
        from workbench.rl.coinrun.probes import defined_rows

        fit, test = (ds.select(defined_rows(ds.labels, check.target)) for ds in (fit, test))
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
        probe = fit_spatial_probe(x_fit, t_fit, l2=check.l2)
        control = fit_spatial_probe(x_fit, t_fit[torch.as_tensor(rng.permutation(len(t_fit)))], l2=check.l2)
        hits = (probe.predict(x_test.double()) == t_test).numpy()
        chits = (control.predict(x_test.double()) == t_test).numpy()
        acc, ctrl = rate(hits), rate(chits)
        from workbench.metrics import paired_diff_ci

        sel = paired_diff_ci(chits, hits, seed=check.fit.seed)
        return {
            "top1": _m(acc["rate"], acc["ci95"], acc["n"]),
            "control_top1": _m(ctrl["rate"], ctrl["ci95"], ctrl["n"]),
            "selectivity": _m(sel["diff"], sel["ci95"], acc["n"]),
            "chance": _m(1.0 / max(1, len(np.unique(t_fit.numpy())))),
        }
    from workbench.probes import evaluate_probe, fit_logistic, fit_mass_mean, random_direction_baseline

    y_fit, y_test = y_fit.astype(np.int64), y_test.astype(np.int64)
    xf, xt = x_fit.flatten(1).double(), x_test.flatten(1).double()
    fitter = fit_logistic if check.method == "logistic" else fit_mass_mean
    kwargs = {"l2": check.l2} if check.method == "logistic" else {}
    probe = fitter(xf, torch.as_tensor(y_fit), **kwargs)
    control = fitter(xf, torch.as_tensor(rng.permutation(y_fit)), **kwargs)
    table = evaluate_probe(probe, xt, torch.as_tensor(y_test), seed=check.test.seed)
    ctable = evaluate_probe(control, xt, torch.as_tensor(y_test), metrics=("auroc",), seed=check.test.seed)
    out = {row.metric: _m(row.value, (row.ci_low, row.ci_high), int(row.n)) for row in table.itertuples()}
    out["recall_at_1pct_fpr"] = out.pop("recall_at_1pct_fpr", out.get("recall_at_fpr", _m(float("nan"))))
    c = ctable.iloc[0]
    out["control_auroc"] = _m(c.value, (c.ci_low, c.ci_high), int(c.n))
    out["selectivity"] = _m(out["auroc"]["value"] - c.value)
    baseline = random_direction_baseline(xt, torch.as_tensor(y_test), n_directions=100, seed=check.test.seed)
    out["random_direction_auroc"] = _m(baseline["p95"])
    return out


def _behaviour_metrics(check: CheckSpec, agent) -> dict[str, dict]:
    d = check.data
    rec = agent.world.run(agent.policy, agent.world.levels(d.split, d.episodes, d.seed), seed=d.seed).rates()
    out = {k: _m(v, rec["ci95"][k], rec["n"]) for k, v in rec["rates"].items()}
    if "died" in rec:  # CoinRun: hazard deaths, and the rates on levels whose coin is away from the exit
        out["died"] = _m(rec["died"]["rate"], rec["died"]["ci95"], rec["died"]["n"])
        inf = rec["informative"]
        out |= {f"informative.{k}": _m(v, inf["ci95"][k], inf["n"]) for k, v in inf["rates"].items()}
    return out


def _intervention_metrics(check: CheckSpec, agent) -> dict[str, dict]:
    from workbench.rl.steering import steer_experiment

    d = check.data
    direction = {"probe_episodes": check.fit.episodes} if agent.env_kind == "coinrun" else {}  # coin-vector levels
    r = steer_experiment(agent, check.vector, check.coef, check.hook, d.split, d.episodes, d.seed, **direction)
    out = {}
    for cond in ("baseline", "steered", "control"):
        for k, v in r[cond]["rates"].items():
            out[f"{cond}.{k}"] = _m(v, r[cond]["ci95"][k], r[cond]["n"])
    for cond, prefix in (("steered", "effect"), ("control", "control_effect")):
        for k, eff in r["effects"][cond].items():
            out[f"{prefix}.{k}"] = _m(eff["diff"], eff["ci95"], r["baseline"]["n"])
    ds = r.get("decision_square", {})  # a maze notion; CoinRun results have none
    for cond, name in (("steered", "decision_square.effect"), ("control", "decision_square.control_effect")):
        if cond in ds:
            d = ds[cond]["diff_vs_baseline"]
            out[name] = _m(d["mean"], d["ci95"], ds["n"])
    return out


def _lm_layer(check: CheckSpec, lm) -> int:
    from workbench.lm.directions import resid_hooks

    return resid_hooks(lm).index(check.hook)


def _lm_probe_metrics(check: CheckSpec, lm) -> dict[str, dict]:
    from workbench.lm.directions import probe_sweep

    sweep = probe_sweep(lm, check.fit.episodes, check.test.episodes, check.fit.seed, l2=check.l2)
    test = "ood" if check.test.split == "ood" else "heldout"
    row = sweep[
        (sweep.target == check.target)
        & (sweep.test == test)
        & (sweep.layer == _lm_layer(check, lm))
        & (sweep.position == check.position)
    ].iloc[0]
    return {
        "auroc": _m(row.auroc, (row.ci_low, row.ci_high), int(row.n)),
        "control_auroc": _m(row.control_auroc, None, int(row.n)),
        "selectivity": _m(row.auroc - row.control_auroc),
    }


def _lm_rates(table: dict, prefix: str = "") -> dict[str, dict]:
    """`{"rate" | "mean", "ci95", "n"}` dicts (lm.evaluate / lm.steering) -> metrics named prefix + key."""
    return {
        f"{prefix}{k}": _m(v["rate"] if "rate" in v else v["mean"], v["ci95"], v["n"])
        for k, v in table.items()
        if isinstance(v, dict) and "ci95" in v
    }


def _lm_behaviour_metrics(check: CheckSpec, lm) -> dict[str, dict]:
    from workbench.lm.evaluate import capability, evaluate_split

    d = check.data
    out: dict[str, dict] = {}
    for group, row in evaluate_split(lm, d.split, d.episodes, d.seed)["personas"].items():
        out |= _lm_rates(row, f"{group}.")
    cap = capability(lm, d.episodes, d.seed)  # no-claim training-distribution questions
    return out | _lm_rates({"heldout_accuracy": cap["accuracy"], "heldout_loss": cap["loss"]})


def _lm_intervention_metrics(check: CheckSpec, lm) -> dict[str, dict]:
    from workbench.lm.steering import steer_experiment

    d = check.data
    r = steer_experiment(
        lm,
        check.vector,
        _lm_layer(check, lm),
        (check.coef,),
        d.split,
        d.episodes,
        d.seed,
        n_vec=check.fit.episodes,
        cap_n=d.episodes,
    )
    cond = r["conditions"][0]
    out = _lm_rates(r["baseline"], "baseline.") | _lm_rates(cond["steered"], "steered.")
    out |= _lm_rates(cond["control"], "control.")
    for key, prefix in (("steered_minus_baseline", "effect."), ("control_minus_baseline", "control_effect.")):
        out |= {f"{prefix}{k}": _m(v["diff"], v["ci95"], v["n"]) for k, v in cond[key].items()}
    return out


def _retarget_metrics(check: CheckSpec, agent) -> dict[str, dict]:
    from workbench.rl.retarget import battery_metrics

    return battery_metrics(check, agent)


def _subject_for(check: CheckSpec) -> tuple[str, object]:
    """("population", Population) for an audit check (its subject is a population folder), else `load_subject`."""
    if check.kind == "audit":
        from workbench.sweep import load_population

        return "population", load_population(check.subject)
    return load_subject(check.subject, check.env)


def _validate_audit(c: CheckSpec, subject_kind: str, where: str, population=None) -> None:
    if c.kind != "audit" or subject_kind != "population":
        raise WorkbenchError(f"{where}: a population folder takes 'audit' checks, and an audit check a population")
    if c.control:
        from workbench.sweep import load_population

        load_population(c.control)
    if c.threshold not in ("median", "control"):
        try:
            float(c.threshold)
        except ValueError:
            raise WorkbenchError(
                f"{where}: threshold must be median, control or a number, got {c.threshold!r}"
            ) from None
    valid = _audit_metric_names(population)
    for exp in c.expect:
        if exp.metric not in valid:
            raise WorkbenchError(
                f"{where}: unknown metric {exp.metric!r} for audit checks; did you mean: "
                f"{', '.join(closest(exp.metric, valid) or valid[:3])}?"
            )


def _audit_metrics(check: CheckSpec, population) -> dict[str, dict]:
    from workbench.audit import DEFAULT_LAYER, run_audit

    threshold = check.threshold if check.threshold in ("median", "control") else float(check.threshold)
    result = run_audit(
        population.folder,
        check.control or None,
        threshold=threshold,
        episodes=check.data.episodes,
        seed=check.data.seed,
        layer=check.hook or DEFAULT_LAYER,
    )
    out = {}
    for metric in _audit_metric_names(population):
        value, ci, n = result.metric(metric)
        out[metric] = _m(value, ci, n)
    return out


MEASURE = {
    ("agent", "probe"): _probe_metrics,
    ("agent", "behaviour"): _behaviour_metrics,
    ("agent", "intervention"): _intervention_metrics,
    ("agent", "retarget"): _retarget_metrics,
    ("lm", "probe"): _lm_probe_metrics,
    ("lm", "behaviour"): _lm_behaviour_metrics,
    ("lm", "intervention"): _lm_intervention_metrics,
    ("population", "audit"): _audit_metrics,
}


@dataclass
class CheckResult:
    check: CheckSpec
    measured: dict[str, dict]
    outcomes: list[tuple[Expectation, bool, float]]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(ok for _, ok, _ in self.outcomes)

    def failures(self) -> list[str]:
        lines = []
        for exp, ok, value in self.outcomes:
            if not ok:
                m = self.measured.get(exp.metric, {})
                lines.append(
                    f"{self.check.name}: {exp.metric} = {m.get('value', float('nan')):.3f} "
                    f"[{m.get('ci_low', float('nan')):.3f}, {m.get('ci_high', float('nan')):.3f}] "
                    f"(n={m.get('n')}); expected {exp.describe()} but it is {value:.3f} ({self.check.file})"
                )
        return lines


def run_check(check: CheckSpec) -> CheckResult:
    t0 = time.time()
    subject_kind, subject = _subject_for(check)
    family = subject_kind if subject_kind in ("lm", "population") else "agent"
    adapter = _adapter(subject_kind, subject)
    if adapter is not None and check.kind in adapter.measure:
        measured = adapter.measure[check.kind](check, subject)
    else:
        measured = MEASURE[(family, check.kind)](check, subject)
    outcomes = []
    for exp in check.expect:
        value = measured.get(exp.metric, {}).get(exp.bound, float("nan"))
        outcomes.append((exp, bool(np.isfinite(value) and OPS[exp.op](value, exp.threshold)), float(value)))
    return CheckResult(check, measured, outcomes, time.time() - t0)


def to_store_rows(results: list[CheckResult], run_id: str) -> list[dict]:
    rows = []
    for r in results:
        c = r.check
        split = c.test.split if c.kind == "probe" else c.data.split
        seed = c.test.seed if c.kind == "probe" else c.data.seed
        intervention = f"{c.vector} x{c.coef:+g} @ {c.hook}" if c.kind == "intervention" else "none"
        for metric, m in r.measured.items():
            rows.append(
                {
                    "run_id": run_id,
                    "subject": c.subject,
                    "split": split,
                    "seed": seed,
                    "intervention": intervention,
                    "metric": f"battery.{c.name}.{metric}",
                    "value": m["value"],
                    "ci_low": None if np.isnan(m["ci_low"]) else m["ci_low"],
                    "ci_high": None if np.isnan(m["ci_high"]) else m["ci_high"],
                    "n": m["n"],
                    "extra": {
                        "check": c.name,
                        "file": c.file,
                        "passed": r.passed,
                        "expect": [e.describe() for e in c.expect],
                    },
                }
            )
    return rows


NULL_REASONS = {
    "ci_low": "no interval for this metric (a point estimate)",
    "ci_high": "no interval for this metric (a point estimate)",
    "value": "the measurement is undefined for this data (NaN)",
}


def to_json(results: list[CheckResult], run_id: str) -> dict:
    """The battery's result as strict JSON data: NaN / inf become null, with the reason in `null_reasons`."""
    from workbench.validate import strict_jsonable

    return strict_jsonable(_to_json(results, run_id), NULL_REASONS)


def _to_json(results: list[CheckResult], run_id: str) -> dict:
    return {
        "run_id": run_id,
        "passed": all(r.passed for r in results),
        "checks": [
            {
                "name": r.check.name,
                "file": r.check.file,
                "kind": r.check.kind,
                "subject": r.check.subject,
                "passed": r.passed,
                "seconds": round(r.seconds, 2),
                "measured": r.measured,
                "expectations": [{"rule": e.describe(), "passed": ok, "value": v} for e, ok, v in r.outcomes],
            }
            for r in results
        ],
    }


def to_junit(results: list[CheckResult]) -> str:
    fails = sum(not r.passed for r in results)
    total = sum(r.seconds for r in results)
    cases = []
    for r in results:
        head = (
            f'  <testcase classname="{escape(Path(r.check.file).stem)}" name="{escape(r.check.name)}" '
            f'time="{r.seconds:.2f}"'
        )
        if r.passed:
            cases.append(head + "/>")
        else:
            msg = escape("; ".join(r.failures()), {'"': "&quot;"})
            cases.append(head + f'>\n    <failure message="{msg}"/>\n  </testcase>')
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name="workbench-battery" tests="{len(results)}" '
        f'failures="{fails}" time="{total:.2f}">\n' + "\n".join(cases) + "\n</testsuite>\n"
    )


def to_markdown(results: list[CheckResult], run_id: str) -> str:
    lines = [
        f"# Probe battery {run_id}",
        "",
        "| check | subject | expectation | measured [95% CI] | n | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for exp, ok, _ in r.outcomes:
            m = r.measured[exp.metric]
            ci = "" if np.isnan(m["ci_low"]) else f" [{m['ci_low']:.3f}, {m['ci_high']:.3f}]"
            lines.append(
                f"| {r.check.name} | {r.check.subject} | `{exp.describe()}` | {m['value']:.3f}{ci} | "
                f"{m['n'] or ''} | {'pass' if ok else '**FAIL**'} |"
            )
    return "\n".join(lines) + "\n"


def check_output_paths(junit: Path | None, report: Path | None, json_path: Path | None = None) -> None:
    """Validate the report destinations before any check runs, writing nothing: `junit` a writable `.xml` file path
    (not a folder, no parent that is a file), `report` a folder to hold battery.md (not a file), `json_path` a
    writable `.json` file path. One-line WorkbenchError naming the option and the nearest valid choice."""
    from workbench.validate import check_output_dir, check_output_file

    if junit is not None:
        check_output_file(junit, name="--junit", suffixes=(".xml",))
    if report is not None:
        folder = check_output_dir(report, name="--report")
        md = folder / "battery.md"
        if md.is_dir():
            raise WorkbenchError(f"--report {folder}: {md} is a folder; remove it or choose another --report folder")
    if json_path is not None:
        check_output_file(json_path, name="--json", suffixes=(".json",))


def write_reports(
    results: list[CheckResult], run_id: str, json_path: Path | None, junit: Path | None, report_dir: Path | None
) -> None:
    """Write the requested reports atomically (unique temp file + rename; the temp file never outlives a failure).
    The destinations are validated first (`check_output_paths`); JSON is strict (no bare NaN)."""
    import os
    import secrets

    check_output_paths(junit, report_dir, json_path)

    def atomic(path: Path, text: str) -> None:
        path = Path(path).expanduser()
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as err:
            raise WorkbenchError(f"cannot write report {path}: {err.strerror or err}") from None
        finally:
            tmp.unlink(missing_ok=True)

    if json_path is not None:
        atomic(json_path, json.dumps(to_json(results, run_id), indent=2, allow_nan=False))
    if junit is not None:
        atomic(junit, to_junit(results))
    if report_dir is not None:
        atomic(Path(report_dir) / "battery.md", to_markdown(results, run_id))
