"""Probe batteries: declarative checks (TOML) against shipped artifacts, run in CI, failing loudly on regressions.

A battery file holds `[[check]]` tables. Every check names a subject (artifact), a kind and expectations:

    [[check]]
    name = "cheese location readable at block1"
    kind = "probe"                      # behaviour | probe | intervention | retarget | audit (what the subject takes)
    subject = "maze-cheese-corner"
    hook = "embedder.block1.res2.resadd_out"
    method = "spatial"                  # the subject kind's probe methods (maze: spatial | logistic | mass_mean)
    target = "cheese_cell"              # one of the kind's probe targets (maze: a label column of collect_maze)
    fit = { split = "ood", episodes = 600, seed = 0 }
    test = { split = "ood", episodes = 300, seed = 1 }
    expect = { top1 = ">= 0.5", selectivity = ">= 0.2" }

An expectation is `METRIC = "OP NUMBER"`; `METRIC.ci_low` / `METRIC.ci_high` test an interval bound instead of the
point estimate (e.g. `"effect.cheese.ci_high" = "< 0"`: the whole 95% CI is below zero). Every file is validated
completely (keys, kinds, subjects, hooks, metrics, splits, numbers) before any check runs, so a bad spec costs
nothing and records nothing. Exit codes: 0 every expectation holds, 1 some fall short, 2 a spec is invalid.

Why this module holds no subject knowledge: every subject kind brings its checks with it,
`SubjectKind(..., battery=BatteryAdapter(measure, metrics, choices, validate))` (`workbench.subjects`). The adapter
maps each check kind the subject takes to the kind's own measuring function `fn(check, subject) -> {metric:
measurement(value, ci, n)}`, lists the metric names (`probe/METHOD` for probe checks), the hooks, targets, vectors
and probe methods checks may name, and any further rule (`validate`). This module parses, validates through the
adapter, runs through it, stores rows and reports. The built-in families' adapters live in their packages:

| family | adapter | behaviour | probe | intervention |
|---|---|---|---|---|
| maze (native, procgen) | `rl/maze/battery.py` | world rates | `collect_maze` + `workbench.probes` | `rl.steering` |
| CoinRun (native, procgen) | `rl/coinrun/battery.py` | rates, deaths | `collect_coinrun` + the same probes | the same |
| LM | `lm/battery.py` | `lm.evaluate` | `lm.directions.probe_sweep` | `lm.steering` |

(maze and CoinRun share `workbench.rl.battery.rl_adapter`; mazes add `retarget` checks.) An RL kind without an
adapter still gets `behaviour` checks, measured from its world's rollout rates (metrics: the world's `rate_keys`).
`audit` checks are not a subject kind's: their subject is a population folder (`workbench.sweep`) and their metrics
the population's env kind's detectors (`workbench.audit.battery_metrics`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from workbench.battery_measure import measurement, world_rates
from workbench.errors import WorkbenchError, closest, unknown
from workbench.recipes import from_table, read_toml

KINDS = ("probe", "behaviour", "intervention", "retarget", "audit")
"""Every check kind a file may name; which of them a subject takes is its adapter's (`BatteryAdapter.measure`)."""
STATES = ("start", "rollout")
OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def _audit_metric_names(population=None) -> tuple[str, ...]:
    """The metrics an audit check may test: the detectors of the population's env kind, or of every audited kind."""
    from workbench.audit import audited_kinds, battery_metrics

    kinds = {r.get("env_kind") for r in getattr(population, "records", [])} & set(audited_kinds())
    return battery_metrics(tuple(sorted(kinds)) or None)


@dataclass(frozen=True)
class DataSpec:
    """Which levels: `episodes` fresh levels of `split` drawn with `seed`; `states` start positions or rollouts.
    `split` is checked against the subject's own splits (its world's, or its adapter's `split` choices) once the
    subject is loaded (`validate_check`)."""

    split: str = "ood"
    episodes: int = 300
    seed: int = 0
    states: str = "start"
    max_steps: int = 0  # with states="rollout": keep only the first max_steps states of each episode (0: all)

    def __post_init__(self) -> None:
        if not self.split.strip():
            raise WorkbenchError("split must not be empty")
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


def _kind_of(subject):
    """The subject's registered kind (`workbench.subjects.kind_of`)."""
    from workbench.subjects import kind_of

    return kind_of(subject)


def _adapter(subject):
    """The subject kind's `BatteryAdapter`, or an empty one (behaviour checks from the world's rates only)."""
    from workbench.subjects import BatteryAdapter

    return _kind_of(subject).battery or BatteryAdapter(measure={}, metrics={})


def _world_behaviour(adapter, subject) -> bool:
    """Behaviour checks come from the world's rollout rates: the subject has a world and its kind no behaviour
    measure."""
    return "behaviour" not in adapter.measure and getattr(subject, "world", None) is not None


def _validate_splits(c: CheckSpec, splits, where: str) -> None:
    """`fit`, `test` and `data` name one of the subject's splits (nothing to check when it declares none)."""
    for key in ("fit", "test", "data") if splits else ():
        split = getattr(c, key).split
        if split not in splits:
            raise WorkbenchError(f"{where} [{key}]: {unknown('split', split, tuple(splits))}")


def validate_check(c: CheckSpec, subject) -> None:
    """Everything that depends on the subject, through its kind's adapter: the check kind, hook, target, vector and
    method, the adapter's own rules (`validate`), metric names. A population (audit checks) has its own rules."""
    where = f"{c.file} check {c.name!r}"
    if c.kind == "audit":
        return _validate_audit(c, where, subject)
    name, adapter = _kind_of(subject).name, _adapter(subject)
    world_behaviour = _world_behaviour(adapter, subject)
    kinds = tuple(dict.fromkeys([*(["behaviour"] if world_behaviour else []), *adapter.measure]))
    if c.kind not in kinds:
        raise WorkbenchError(f"{where}: {unknown('kind', c.kind, kinds)} ({name} subject)")
    choices = adapter.choices_for(subject)
    world = getattr(subject, "world", None)
    _validate_splits(c, choices.get("split") or getattr(world, "splits", ()), where)
    if c.hook:
        if "hook" in choices:
            hooks = tuple(choices["hook"])
        else:
            from workbench.hooks import hook_names

            policy = getattr(subject, "policy", None)
            hooks = tuple(hook_names(policy)) if policy is not None else ()
        if c.hook not in hooks:
            raise WorkbenchError(f"{where}: {unknown('hook', c.hook, hooks)}")
    for what in ("target", "vector", "method"):
        value = getattr(c, what)
        if value and value not in (valid := tuple(choices.get(what, ()))):
            raise WorkbenchError(f"{where}: {unknown(what, value, valid)} ({name} subject)")
    if adapter.validate is not None:
        adapter.validate(c, subject, where)
    key = f"probe/{c.method}" if c.kind == "probe" else c.kind
    if c.kind == "behaviour" and world_behaviour:
        valid = tuple(subject.world.rate_keys)
    else:
        valid = tuple(adapter.metrics.get(key, ()))
    for exp in c.expect:
        if exp.metric not in valid:
            raise WorkbenchError(
                f"{where}: unknown metric {exp.metric!r} for {name} {key} checks; did you mean: "
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
        validate_check(c, subjects[key])
    return checks


# ------------------------------------------------------------------------------------------------------- running


def _subject_for(check: CheckSpec) -> object:
    """The Population of an audit check (its subject is a population folder), else the loaded subject
    (`workbench.subjects.load_subject`; `env` names the kind of a bare checkpoint file, e.g. `procgen-maze`)."""
    if check.kind == "audit":
        from workbench.sweep import load_population

        return load_population(check.subject)
    from workbench.subjects import load_subject

    return load_subject(check.subject, env=check.env or None)


def _population_splits(population) -> tuple[str, ...]:
    """The splits of the worlds of the population's env kinds (through the registry)."""
    from workbench.subjects import get_kind, kinds

    splits: list[str] = []
    for env_kind in sorted({r.get("env_kind") for r in getattr(population, "records", [])} & set(kinds())):
        world = get_kind(env_kind).verbs.get("world")
        splits += list(getattr(world(None), "splits", ())) if world is not None else []
    return tuple(dict.fromkeys(splits))


def _validate_audit(c: CheckSpec, where: str, population=None) -> None:
    _validate_splits(c, _population_splits(population), where)
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
        out[metric] = measurement(value, ci, n)
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


def _measure(check: CheckSpec, subject):
    """The function measuring `check` on `subject`: a population's audit, or the subject kind's adapter."""
    if check.kind == "audit":
        return _audit_metrics
    adapter = _adapter(subject)
    if check.kind in adapter.measure:
        return adapter.measure[check.kind]
    if check.kind == "behaviour" and _world_behaviour(adapter, subject):
        return world_rates
    raise WorkbenchError(f"check {check.name!r}: {_kind_of(subject).name} subjects take no {check.kind} checks")


def run_check(check: CheckSpec) -> CheckResult:
    t0 = time.time()
    subject = _subject_for(check)
    measured = _measure(check, subject)(check, subject)
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


# ------------------------------------------------------------------------------------ the old tables, from the registry
class _RegisteredMetrics(Mapping):
    """`METRICS[(kind, method or check kind)]` -> metric names, read from the registered kinds' adapters (the table
    battery.py once kept by hand; kept for callers that index it)."""

    def __getitem__(self, key: tuple[str, str]) -> tuple[str, ...]:
        from workbench.subjects import get_kind

        name, what = key
        adapter = get_kind(name).battery
        metrics = adapter.metrics if adapter is not None else {}
        for k in (what, f"probe/{what}"):
            if k in metrics:
                return tuple(metrics[k])
        raise KeyError(key)

    def _items(self) -> Iterator[tuple[tuple[str, str], tuple[str, ...]]]:
        from workbench.subjects import get_kind, kinds

        for name in kinds():
            adapter = get_kind(name).battery
            for k, v in (adapter.metrics if adapter is not None else {}).items():
                yield (name, k.removeprefix("probe/")), tuple(v)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return (k for k, _ in self._items())

    def __len__(self) -> int:
        return sum(1 for _ in self._items())


METRICS: Mapping[tuple[str, str], tuple[str, ...]] = _RegisteredMetrics()


def __getattr__(name: str) -> Any:
    """`_RETARGET`: the retarget metric names of the registered kinds that take retarget checks (old name)."""
    if name == "_RETARGET":
        return tuple(dict.fromkeys(m for (_, k), v in METRICS.items() if k == "retarget" for m in v))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
