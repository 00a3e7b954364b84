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
"""

from __future__ import annotations

import dataclasses
import json
import operator
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import torch

from workbench.errors import WorkbenchError, closest, unknown
from workbench.recipes import from_table, read_toml

KINDS = ("probe", "behaviour", "intervention")
PROBE_METHODS = ("spatial", "logistic", "mass_mean")
STATES = ("start", "rollout")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
METRICS = {
    "spatial": ("top1", "control_top1", "selectivity", "chance"),
    "logistic": ("auroc", "accuracy", "recall_at_1pct_fpr", "control_auroc", "selectivity", "random_direction_auroc"),
    "behaviour": ("cheese", "corner_first", "timeout"),
    "intervention": tuple(
        f"{prefix}.{key}"
        for prefix in ("baseline", "steered", "control", "effect", "control_effect")
        for key in ("cheese", "corner_first", "timeout")
    )
    + ("decision_square.effect", "decision_square.control_effect"),
}
METRICS["mass_mean"] = METRICS["logistic"]
INTERVENTION_VECTORS = ("cheese",)


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
        if self.episodes < 2:
            raise WorkbenchError(f"episodes must be >= 2, got {self.episodes}")


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
    hook: str = ""
    method: str = ""
    target: str = ""
    vector: str = ""
    coef: float = -1.0
    l2: float = 1e-3
    fit: DataSpec = field(default_factory=DataSpec)
    test: DataSpec = field(default_factory=lambda: DataSpec(seed=1))
    data: DataSpec = field(default_factory=DataSpec)
    expect: tuple[Expectation, ...] = ()
    file: str = ""


_EXPECT_RE = re.compile(r"^\s*(>=|<=|>|<)\s*(\S+)\s*$")


def _parse_expect(table: dict, where: str, kind: str, method: str) -> tuple[Expectation, ...]:
    if not isinstance(table, dict) or not table:
        raise WorkbenchError(f"{where}: 'expect' must be a non-empty table of METRIC = \"OP NUMBER\"")
    valid = METRICS[method if kind == "probe" else kind]
    out = []
    for key, rule in table.items():
        metric, bound = key, "value"
        for suffix in (".ci_low", ".ci_high"):
            if key.endswith(suffix):
                metric, bound = key[: -len(suffix)], suffix[1:]
        if metric not in valid:
            raise WorkbenchError(
                f"{where}: unknown metric {metric!r} for {kind} checks"
                f"{'/' + method if kind == 'probe' else ''}; did you mean: "
                f"{', '.join(closest(metric, valid) or valid[:3])}?"
            )
        match = _EXPECT_RE.match(str(rule)) if isinstance(rule, str) else None
        if match is None:
            raise WorkbenchError(f'{where}: expectation {key} = {rule!r} must look like ">= 0.9"')
        try:
            threshold = float(match.group(2))
        except ValueError:
            raise WorkbenchError(f"{where}: threshold {match.group(2)!r} of {key} is not a number") from None
        out.append(Expectation(metric, bound, match.group(1), threshold))
    return tuple(out)


def parse_check(table: dict, file: Path, index: int) -> CheckSpec:
    """One `[[check]]` table -> CheckSpec; errors name the file, the check and the key."""
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
    if spec.kind == "probe":
        if spec.method not in PROBE_METHODS:
            raise WorkbenchError(f"{where}: {unknown('method', spec.method, PROBE_METHODS)}")
        if not spec.hook or not spec.target:
            raise WorkbenchError(f"{where}: probe checks need 'hook' and 'target'")
    if spec.kind == "intervention":
        if spec.vector not in INTERVENTION_VECTORS:
            raise WorkbenchError(f"{where}: {unknown('vector', spec.vector, INTERVENTION_VECTORS)}")
        if not spec.hook:
            raise WorkbenchError(f"{where}: intervention checks need 'hook'")
    if raw_expect is None:
        raise WorkbenchError(f"{where}: missing 'expect'")
    expect = _parse_expect(raw_expect, where, spec.kind, spec.method)
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


def load_checks(paths: list[Path]) -> list[CheckSpec]:
    """Parse and fully validate every check (subjects exist, hooks exist, targets are known labels)."""
    from workbench.activations import MAZE_LABEL_COLUMNS as LABEL_COLUMNS
    from workbench.hooks import hook_names
    from workbench.rl.agent import load_agent

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
    agents: dict = {}
    for c in checks:
        where = f"{c.file} check {c.name!r}"
        try:
            agent = agents.setdefault(c.subject, load_agent(c.subject))
        except WorkbenchError as err:
            raise WorkbenchError(f"{where}: {err}") from None
        if c.hook and c.hook not in hook_names(agent.policy):
            raise WorkbenchError(f"{where}: {unknown('hook', c.hook, hook_names(agent.policy))}")
        if c.kind == "probe" and c.target not in LABEL_COLUMNS:
            raise WorkbenchError(f"{where}: {unknown('target', c.target, LABEL_COLUMNS)}")
    return checks


# ------------------------------------------------------------------------------------------------------- running
def _m(value: float, ci: tuple[float, float] | list[float] | None = None, n: int | None = None) -> dict:
    lo, hi = (float("nan"), float("nan")) if ci is None else (float(ci[0]), float(ci[1]))
    return {"value": float(value), "ci_low": lo, "ci_high": hi, "n": n}


def _collect(agent, hook: str, spec: DataSpec):
    from workbench.activations import collect_maze

    return collect_maze(
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
    x_fit, x_test = fit[check.hook], test[check.hook]
    y_fit, y_test = fit.label(check.target), test.label(check.target)
    rng = np.random.default_rng(check.fit.seed)
    if check.method == "spatial":
        from workbench.probes import fit_spatial_probe, layer_cell_index

        if x_fit.ndim != 4:
            raise WorkbenchError(f"check {check.name!r}: {check.hook} is not a spatial layer")
        grid, world = x_fit.shape[-1], agent.env_config.world_size
        t_fit = torch.as_tensor(layer_cell_index(y_fit, world, grid))
        t_test = torch.as_tensor(layer_cell_index(y_test, world, grid))
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
    from workbench.rl.rollout import evaluate

    rec = evaluate(agent.policy, check.data.split, check.data.episodes, check.data.seed, agent.env_config).rates()
    return {k: _m(v, rec["ci95"][k], rec["n"]) for k, v in rec["rates"].items()}


def _intervention_metrics(check: CheckSpec, agent) -> dict[str, dict]:
    from workbench.rl.steering import steer_experiment

    r = steer_experiment(
        agent, check.vector, check.coef, check.hook, check.data.split, check.data.episodes, check.data.seed
    )
    out = {}
    for cond in ("baseline", "steered", "control"):
        for k, v in r[cond]["rates"].items():
            out[f"{cond}.{k}"] = _m(v, r[cond]["ci95"][k], r[cond]["n"])
    for cond, prefix in (("steered", "effect"), ("control", "control_effect")):
        for k, eff in r["effects"][cond].items():
            out[f"{prefix}.{k}"] = _m(eff["diff"], eff["ci95"], r["baseline"]["n"])
    ds = r["decision_square"]
    for cond, name in (("steered", "decision_square.effect"), ("control", "decision_square.control_effect")):
        if cond in ds:
            d = ds[cond]["diff_vs_baseline"]
            out[name] = _m(d["mean"], d["ci95"], ds["n"])
    return out


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
    from workbench.rl.agent import load_agent

    t0 = time.time()
    agent = load_agent(check.subject)
    measure = {"probe": _probe_metrics, "behaviour": _behaviour_metrics, "intervention": _intervention_metrics}
    measured = measure[check.kind](check, agent)
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


def to_json(results: list[CheckResult], run_id: str) -> dict:
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


def write_reports(
    results: list[CheckResult], run_id: str, json_path: Path | None, junit: Path | None, report_dir: Path | None
) -> None:
    """Write the requested reports atomically (temp file + rename)."""

    def atomic(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.replace(path)

    if json_path is not None:
        atomic(json_path, json.dumps(to_json(results, run_id), indent=2, default=float))
    if junit is not None:
        atomic(junit, to_junit(results))
    if report_dir is not None:
        atomic(report_dir / "battery.md", to_markdown(results, run_id))
