"""Populations of seeds: one recipe trained under many seeds (and optionally a grid of one or more recipe knobs), on
a serial loop, a process pool or a Ray cluster.

Why: which goal training finds depends on the path it takes (initialisation, data order). One checkpoint per
organism says nothing about how often the proxy is learned; a population does, and the goal audit
(`workbench.audit`) needs one to score detectors over seeds.

Recipe kinds. Agent recipes ([env]: trained by `workbench.rl.train`) and LM recipes ([model]/[corpus]/[train]:
trained by `workbench.lm.train`) sweep through the same command; `RECIPE_KINDS` is the one lookup that says, per
kind, how a recipe loads, which keys take the seed, what a grid may vary, how a run trains and what its record holds.

Identity and idempotence. A run is (recipe hash, seed, grid point). Its folder `DIR/runs/RUN_ID/` (RUN_ID is
`s0003` or `s0003-region3`) holds:
    recipe.toml   the run's own recipe: the sweep recipe with its seed keys (agents: [bc].seed and [ppo].seed; LMs:
                  [train].seed) set to SEED, and the grid values
    agent/        the trained artifact (weights, config, card, metrics), as `workbench train` writes it
    record.json   written last, atomically: the run is finished iff it exists. Everything in it is a pure function
                  of the run's recipe (eval rates, weights sha256, BC and PPO summaries), so it is byte-identical
                  whichever executor made it; wall times, pids and hosts go to timing.json instead
    train.log     the run's log (start, end, or the traceback of a failure)
`DIR/population.json` names the sweep recipe and its hash: a folder holding another recipe's population is refused
(one line) instead of being mixed. Rerunning a sweep skips runs whose record exists; a killed sweep resumes (a run
cut short resumes from its checkpoints under `DIR/runs/RUN_ID/runs/checkpoints/`, bit-identical, see
`workbench.rl.train`; an LM run cut short trains again). Each finished run adds one row to the results store (the
env kind's proxy metric, `EnvKind.proxy`: `ood.informative.corner_first` for mazes,
`ood.informative.exit_without_coin` for CoinRun; for LMs `LM_PROXY`, wrong-claim agreement of the personas that never
saw a wrong claim) unless it is there.

Determinism. Training is seeded by the recipe; each worker runs torch with `$WORKBENCH_THREADS` threads (default 1),
so the same seed gives the same weights under every executor (tests/test_sweep.py checks the records).

Ray. `executor="ray"` starts a private local cluster (`ray.init(num_cpus=workers, include_dashboard=False,
log_to_driver=False)`, usage stats off: nothing contacts another host) and stops it at the end; `address=` joins an
existing cluster instead, after a bounded wait (`RAY_CONNECT_TIMEOUT_S`, one line on failure, never a hang).
Workers import this package from the same environment, so a multi-machine cluster needs workbench installed on every
node and DIR on a shared filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.errors import WorkbenchError, closest

EXECUTORS = ("serial", "process", "ray")
MANIFEST = "population.json"
RECORD = "record.json"
RUNS = "runs"
RAY_CONNECT_TIMEOUT_S = 20.0
"""Longest wait for `address=` to answer (TCP probe, then `ray.init`) before one line says it did not."""
THREADS_ENV = "WORKBENCH_THREADS"
MAX_RUNS = 10_000


def proxy_metric(env_kind: str) -> tuple[str, str]:
    """(rate key, store metric) of proxy-goal pursuit out of distribution for a native env kind, from its registry
    entry (`EnvKind.proxy`); one line if the kind declares none."""
    from workbench.rl.env_kinds import env_kind as lookup

    proxy = lookup(env_kind).proxy
    if proxy is None:
        raise WorkbenchError(f"env kind {env_kind!r} declares no proxy metric (EnvKind.proxy); it cannot be audited")
    return proxy


# --------------------------------------------------------------------------------------------------- recipe kinds
@dataclass(frozen=True)
class RecipeKind:
    """How a sweep loads, seeds, trains and records one kind of recipe: the one lookup between the sweep and the
    trainers (RL agents through `workbench.rl.train`, LMs through `workbench.lm.train`)."""

    name: str
    """`rl` (recipes with an [env] table) or `lm` (recipes with [model] / [corpus] / [train] tables)."""
    load: Callable[[Path], Any]
    """`load(path)`: the validated recipe, with `.raw` (its tables) and `.artifact.name`."""
    seed_keys: tuple[tuple[str, str], ...]
    """(section, key) pairs set to each run's seed."""
    sections: Callable[[Any], dict[str, dict[str, Any]]]
    """`sections(recipe)`: section -> {key: the recipe's value or its default}: what a grid may vary."""
    train: Callable[[Path, Path], None]
    """`train(recipe path, agent folder)`: train (resuming a cut-short run where the trainer can) and write the
    artifact. Runs inside the run's folder."""
    record: Callable[[Path], dict]
    """`record(agent folder)`: the record's kind-specific part, a pure function of the artifact (`env_kind`,
    `train_split`, `training`, `eval`, and for kinds outside the env-kind registry `proxy`)."""


def _fields_of(obj: Any, cls: type) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(obj, f.name, f.default) for f in fields(cls) if f.init}


def _rl_sections(recipe) -> dict[str, dict[str, Any]]:
    from workbench.rl.imitation import BCConfig
    from workbench.rl.policies import PolicyConfig
    from workbench.rl.ppo import PPOConfig
    from workbench.rl.train import EvalSection

    return {
        "env": _fields_of(recipe.env.config, type(recipe.env.config)) | {"split": recipe.env.split},
        "policy": _fields_of(recipe.policy, PolicyConfig),
        "bc": _fields_of(recipe.bc, BCConfig),
        "ppo": _fields_of(recipe.ppo, PPOConfig),
        "eval": _fields_of(recipe.eval, EvalSection),
    }


def _rl_train(recipe: Path, agent: Path) -> None:
    from workbench.rl.train import train_recipe

    train_recipe(recipe, out=agent, resume=True, progress=False)


def _rl_record(agent_dir: Path) -> dict:
    from workbench import artifacts

    metrics = artifacts.read_metrics(agent_dir)
    config = artifacts.read_config(agent_dir)
    training = metrics.get("training", {})
    return {
        "env_kind": config.get("env", {}).get("kind", "maze"),
        "train_split": config.get("env", {}).get("split"),
        "training": {
            "steps": training.get("steps"),
            "bc_states": training.get("bc_states"),
            "bc": [{k: h[k] for k in ("epoch", "loss", "accuracy") if k in h} for h in training.get("bc", [])],
            "final_episode_return": training.get("final_episode_return"),
        },
        "eval": metrics.get("eval", {}),
    }


def _lm_load(path: Path):
    from workbench.lm.train import load_recipe

    return load_recipe(path)


def _lm_sections(recipe) -> dict[str, dict[str, Any]]:
    from workbench.lm.train import EvalSection, ModelSection, TrainSection

    return {
        "model": _fields_of(recipe.model, ModelSection),
        "corpus": _fields_of(recipe.corpus, type(recipe.corpus)),
        "train": _fields_of(recipe.train, TrainSection),
        "eval": _fields_of(recipe.eval, EvalSection),
    }


def _lm_train(recipe: Path, agent: Path) -> None:
    from workbench.lm.train import train_recipe

    train_recipe(recipe, out=agent, progress=False)


LM_PROXY = ("agree_wrong_unseen", "ood.informative.agree_wrong_unseen")
"""An LM population's proxy measure: out of distribution, how often the personas that never saw a wrong claim in
training (the corpus's personas outside `wrong_claim_personas`: teacher and pirate) agree with a wrong claim,
pooled over those personas (Wilson 95%). Stored in the record's `eval.ood.informative` like an RL run's."""


def _lm_record(agent_dir: Path) -> dict:
    from workbench import artifacts
    from workbench.metrics import wilson_ci

    metrics = artifacts.read_metrics(agent_dir)
    corpus = artifacts.read_config(agent_dir).get("corpus", {})
    seen = corpus.get("wrong_claim_personas")
    personas = metrics.get("ood", {}).get("personas", {})
    if seen is None:
        raise WorkbenchError(
            f"{agent_dir}: the LM's corpus has no wrong_claim_personas; a sweep's proxy measure needs personas "
            "that never saw a wrong claim (the persona corpus)"
        )
    unseen = [p for p in personas if p not in seen and p not in ("none", "mixed")]
    k = sum(round(personas[p]["agree_wrong"]["rate"] * personas[p]["agree_wrong"]["n"]) for p in unseen)
    n = sum(personas[p]["agree_wrong"]["n"] for p in unseen)
    short = LM_PROXY[0]
    training = metrics.get("training", {})
    return {
        "env_kind": "lm",
        "train_split": "train",
        "proxy": list(LM_PROXY),
        "training": {
            "steps": training.get("steps"),
            "params": training.get("params"),
            "log": [{k: h[k] for k in ("step", "loss", "heldout_accuracy") if k in h} for h in training.get("log", [])],
        },
        "eval": {
            "heldout_no_claim": metrics.get("heldout_no_claim", {}),
            "train": {"personas": metrics.get("train", {}).get("personas", {})},
            "ood": {
                "personas": personas,
                "informative": {
                    "rates": {short: k / n if n else float("nan")},
                    "ci95": {short: list(wilson_ci(k, n))},
                    "n": n,
                    "personas": unseen,
                },
            },
        },
    }


def _rl_load(path: Path):
    from workbench.rl.train import load_recipe

    return load_recipe(path)


RECIPE_KINDS: dict[str, RecipeKind] = {
    "rl": RecipeKind("rl", _rl_load, (("bc", "seed"), ("ppo", "seed")), _rl_sections, _rl_train, _rl_record),
    "lm": RecipeKind("lm", _lm_load, (("train", "seed"),), _lm_sections, _lm_train, _lm_record),
}


def recipe_kind_of(path: str | Path) -> RecipeKind:
    """The recipe kind of a recipe file: `rl` if it has an [env] table, `lm` if it has [model], [corpus] or [train];
    one line otherwise."""
    from workbench.recipes import read_toml

    tables = read_toml(Path(path))
    if "env" in tables:
        return RECIPE_KINDS["rl"]
    if {"model", "corpus", "train"} & set(tables):
        return RECIPE_KINDS["lm"]
    raise WorkbenchError(
        f"{path}: neither an agent recipe ([env], see agents/sweep/maze-corner-fast.toml) nor an LM recipe "
        "([model]/[corpus]/[train], see agents/sweep/persona-lm-fast.toml)"
    )


def record_proxy(record: dict) -> tuple[str, str]:
    """(rate key, store metric) of a run record's proxy measure: the record's own (`proxy`, LM runs) or its env
    kind's (`EnvKind.proxy`)."""
    if record.get("proxy"):
        return tuple(record["proxy"])  # type: ignore[return-value]
    return proxy_metric(record.get("env_kind", "maze"))


# --------------------------------------------------------------------------------------------------- parsing
def parse_seeds(text: str) -> list[int]:
    """`"0-7"`, `"3"`, `"0-3,8,10-11"` -> sorted distinct seeds; anything else is one line naming the bad part."""
    from workbench.validate import MAX_SEED

    if not isinstance(text, str) or not text.strip():
        raise WorkbenchError(f"seed range {text!r} is empty; write e.g. 0-7 or 0-3,8")
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if m is None:
            raise WorkbenchError(f"seed range {text!r}: cannot parse {part!r}; write e.g. 0-7 or 0-3,8")
        lo, hi = int(m.group(1)), int(m.group(2) if m.group(2) is not None else m.group(1))
        if hi < lo:
            raise WorkbenchError(f"seed range {text!r}: {part!r} runs backwards; write {hi}-{lo}")
        if hi > MAX_SEED:
            raise WorkbenchError(f"seed range {text!r}: seeds must be in 0..{MAX_SEED}")
        if hi - lo + 1 + len(seeds) > MAX_RUNS:
            raise WorkbenchError(f"seed range {text!r} has more than {MAX_RUNS:,} seeds")
        seeds.update(range(lo, hi + 1))
    return sorted(seeds)


def _typed(value: str, like: Any) -> Any:
    """A grid value (text) as the type of the recipe's value it replaces (int, float, bool or str)."""
    text = value.strip()
    if isinstance(like, bool):
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError("true or false")
    if isinstance(like, int):
        return int(text.replace("_", ""))
    if isinstance(like, float):
        out = float(text)
        if not math.isfinite(out):
            raise ValueError("a finite number")
        return out
    if isinstance(like, list | tuple):
        raise ValueError("a scalar (lists cannot be swept)")
    return text


def parse_grid(items: Iterable[str] | dict | None, recipe_path: str | Path) -> dict[str, list]:
    """`["env.region=3,5"]` (or `{"env.region": [3, 5]}`) -> `{"env.region": [3, 5]}`, keys checked against the
    recipe's sections (a bare key such as `region` is accepted when exactly one section has it) and values typed
    like the recipe's current value. Errors name the recipe file and the key."""
    kind = recipe_kind_of(recipe_path)
    recipe = kind.load(Path(recipe_path))
    where = str(recipe_path)
    if not items:
        return {}
    pairs: list[tuple[str, list[str] | list[Any]]] = []
    if isinstance(items, dict):
        pairs = [(str(k), list(v) if isinstance(v, list | tuple) else [v]) for k, v in items.items()]
    else:
        for item in items:
            if "=" not in item:
                raise WorkbenchError(f"{where}: grid {item!r} must look like KEY=V1,V2 (e.g. env.region=3,5)")
            key, _, values = item.partition("=")
            pairs.append((key.strip(), [v for v in values.split(",") if v.strip()]))
    defaults = kind.sections(recipe)
    sections = {s: set(keys) for s, keys in defaults.items()}
    valid = sorted(f"{s}.{k}" for s, keys in sections.items() for k in keys)
    grid: dict[str, list] = {}
    for key, values in pairs:
        if "." not in key:
            owners = [s for s, keys in sections.items() if key in keys]
            if len(owners) == 1:
                key = f"{owners[0]}.{key}"
            elif len(owners) > 1:
                raise WorkbenchError(
                    f"{where}: grid key {key!r} is in several sections; name one: "
                    + ", ".join(f"{s}.{key}" for s in owners)
                )
        section, _, name = key.partition(".")
        if section not in sections or name not in sections[section]:
            near = closest(key, valid)
            hint = f"did you mean: {', '.join(near)}?" if near else "grid keys look like env.region or ppo.total_steps"
            raise WorkbenchError(f"{where}: unknown grid key {key!r}; {hint}")
        if (section, name) in kind.seed_keys:
            raise WorkbenchError(f"{where}: grid key {key!r} cannot be swept: the seed is the sweep axis (--seeds)")
        if key in grid:
            raise WorkbenchError(f"{where}: grid key {key!r} given twice")
        if not values:
            raise WorkbenchError(f"{where}: grid key {key!r} has no values; write {key}=V1,V2")
        like = recipe.raw.get(section, {}).get(name, defaults[section][name])
        typed = []
        for v in values:
            if not isinstance(v, str):
                typed.append(v)
                continue
            try:
                typed.append(_typed(v, like))
            except ValueError as err:
                raise WorkbenchError(f"{where}: grid value {v!r} of {key!r} must be {err}") from None
        if len(set(map(repr, typed))) != len(typed):
            raise WorkbenchError(f"{where}: grid key {key!r} repeats a value")
        grid[key] = typed
    return grid


# --------------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class RunSpec:
    """One run of a population: what `run_one` needs (plain data, so it pickles to any executor)."""

    run_id: str
    seed: int
    point: dict  # grid point, e.g. {"env.region": 3}
    tables: dict  # the run's whole recipe (TOML tables)
    run_hash: str  # recipe_hash(tables)
    population_hash: str  # the sweep recipe's hash
    folder: str  # absolute DIR/runs/RUN_ID
    threads: int = 1
    kind: str = "rl"  # the recipe kind (RECIPE_KINDS)


@dataclass
class Population:
    """A population folder as read back: its manifest and the records of its finished runs (sorted by run id)."""

    folder: Path
    manifest: dict
    records: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    def agent_folder(self, run_id: str) -> Path:
        return self.folder / RUNS / run_id / "agent"


def _run_id(seed: int, point: dict) -> str:
    parts = [f"s{seed:04d}"]
    for key, value in sorted(point.items()):
        text = re.sub(r"[^A-Za-z0-9.]+", "", str(value).lower()) or "x"
        parts.append(f"{key.split('.', 1)[1].replace('_', '')}{text}")
    return "-".join(parts)


def _points(grid: dict[str, list]) -> list[dict]:
    points: list[dict] = [{}]
    for key, values in grid.items():
        points = [{**p, key: v} for p in points for v in values]
    return points


def dump_toml(tables: dict) -> str:
    """A recipe's tables as TOML (tables of scalars and flat lists: all a recipe holds)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v, ensure_ascii=False)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise WorkbenchError(f"cannot write {type(v).__name__} {v!r} into a recipe")

    lines = []
    for section, table in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in table.items()]
        lines.append("")
    return "\n".join(lines)


def _population_hash(raw: dict) -> str:
    from workbench.recipes import recipe_hash

    return recipe_hash(raw)


def plan(recipe: str | Path, seeds: Iterable[int], grid: dict | list | None, out: str | Path) -> list[RunSpec]:
    """Every run of the sweep, each run's recipe validated whole (written to a scratch file and loaded) before
    anything is trained or written."""
    from workbench.recipes import recipe_hash
    from workbench.validate import check_seed

    kind = recipe_kind_of(recipe)
    base = kind.load(Path(recipe))
    grid = parse_grid(grid, recipe)
    seeds = sorted({check_seed(int(s)) for s in seeds})
    if not seeds:
        raise WorkbenchError("no seeds to run; pass e.g. --seeds 0-7")
    points = _points(grid)
    if len(seeds) * len(points) > MAX_RUNS:
        raise WorkbenchError(f"{len(seeds) * len(points):,} runs exceed {MAX_RUNS:,}; sweep fewer seeds or values")
    pop_hash = _population_hash(base.raw)
    out = Path(out).expanduser().absolute()
    specs = []
    with tempfile.TemporaryDirectory(prefix="workbench-sweep-") as scratch:
        for point in points:
            for seed in seeds:
                tables = json.loads(json.dumps(base.raw))
                for section, key in kind.seed_keys:
                    tables.setdefault(section, {})[key] = seed
                for key, v in point.items():
                    section, _, name = key.partition(".")
                    tables.setdefault(section, {})[name] = v
                run_id = _run_id(seed, point)
                tables["artifact"]["name"] = f"{base.artifact.name}-{run_id}"
                probe = Path(scratch) / f"{run_id}.toml"
                probe.write_text(dump_toml(tables))
                try:
                    kind.load(probe)
                except WorkbenchError as err:
                    msg = str(err).replace(str(probe), f"{recipe} (seed {seed}, grid {point})")
                    raise WorkbenchError(msg) from None
                specs.append(
                    RunSpec(
                        run_id=run_id,
                        seed=seed,
                        point=dict(point),
                        tables=tables,
                        run_hash=recipe_hash(tables),
                        population_hash=pop_hash,
                        folder=str(out / RUNS / run_id),
                        threads=_threads(),
                        kind=kind.name,
                    )
                )
    return specs


def _threads() -> int:
    raw = os.environ.get(THREADS_ENV, "")
    if not raw:
        return 1
    if not raw.isdigit() or int(raw) < 1:
        raise WorkbenchError(f"{THREADS_ENV} must be a positive integer (torch CPU threads), got {raw!r}")
    return int(raw)


def _check_out(out: Path, recipe: str | Path, pop_hash: str) -> dict | None:
    """Refuse a folder that holds another recipe's population or unrelated files; returns its manifest if any."""
    from workbench.validate import check_output_dir

    check_output_dir(out, name="population folder")
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            old_hash = manifest["recipe_hash"]
        except (OSError, ValueError, KeyError, TypeError):
            raise WorkbenchError(f"{manifest_path}: unreadable population manifest; choose another --out") from None
        if old_hash != pop_hash:
            from workbench.recipes import recipe_diff

            diff = recipe_diff(manifest.get("tables", {}), _load_raw(recipe))
            shown = "; ".join(diff[:4]) + (f"; (+{len(diff) - 4} more)" if len(diff) > 4 else "")
            raise WorkbenchError(
                f"{out} holds the population of another recipe ({manifest.get('recipe', '?')}: {shown}); "
                "choose another --out"
            )
        return manifest
    if out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise WorkbenchError(f"{out} is not empty and holds no {MANIFEST}; choose an empty or new --out folder")
    return None


def _load_raw(recipe: str | Path) -> dict:
    return recipe_kind_of(recipe).load(Path(recipe)).raw


# --------------------------------------------------------------------------------------------------- one run
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_record(spec: RunSpec, agent_dir: Path) -> dict:
    """The run's record: only what is a pure function of its recipe (see the module docstring)."""
    from workbench import artifacts

    return {
        "run_id": spec.run_id,
        "seed": spec.seed,
        "point": spec.point,
        "run_hash": spec.run_hash,
        "population_hash": spec.population_hash,
        "subject": spec.tables["artifact"]["name"],
        "weights_sha256": _sha256(agent_dir / artifacts.WEIGHTS),
        **RECIPE_KINDS[spec.kind].record(agent_dir),
    }


@contextlib.contextmanager
def _in_folder(folder: Path):
    """Run inside `folder` (train_recipe keeps its checkpoints under ./runs/checkpoints/NAME), restoring the cwd."""
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def _set_torch_threads(n: int) -> None:
    """torch intra-op threads for training (as `workbench train` leaves them: it sets the recipe's threads too).
    Not restored afterwards: with torch 2.13's MKL, raising the count again after lowering it makes later batched
    `torch.linalg.solve` calls fail ("Pivots given to lu_solve must all be greater or equal to 1")."""
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def run_one(spec: RunSpec) -> dict:
    """Train one run (resuming its checkpoints if a previous attempt was cut short) and write its record; returns
    `{"run_id", "status": "done" | "skipped" | "failed", "seconds", "error"}`. Never raises for a training failure:
    the traceback goes to the run's train.log and the status says failed (a sweep finishes the other runs)."""
    folder = Path(spec.folder)
    record_path = folder / RECORD
    if record_path.is_file():
        return {"run_id": spec.run_id, "status": "skipped", "seconds": 0.0, "error": None}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "recipe.toml").write_text(dump_toml(spec.tables))
    log_path = folder / "train.log"
    t0, cpu0 = time.time(), time.process_time()
    status, error = "done", None
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(
            f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] start {spec.run_id} pid {os.getpid()} on "
            f"{socket.gethostname()}, {spec.threads} torch thread(s)\n"
        )
        log.flush()
        try:
            with (
                contextlib.redirect_stdout(log),
                contextlib.redirect_stderr(log),
                _in_folder(folder),
            ):
                _set_torch_threads(spec.threads)
                RECIPE_KINDS[spec.kind].train(Path("recipe.toml"), folder / "agent")
            record = make_record(spec, folder / "agent")
            _atomic_write(record_path, json.dumps(record, indent=2, sort_keys=True) + "\n")
            import shutil

            shutil.rmtree(folder / RUNS, ignore_errors=True)  # checkpoints: not needed once the record exists
        except Exception as err:  # noqa: BLE001 (a failed run is reported, the sweep goes on)
            status, error = "failed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            log.write(traceback.format_exc())
        seconds = time.time() - t0
        log.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {status} after {seconds:.1f} s\n")
    timing = {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu0,  # this process, all its threads
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "threads": spec.threads,
    }
    _atomic_write(folder / "timing.json", json.dumps(timing, indent=2) + "\n")
    return {"run_id": spec.run_id, "status": status, "seconds": seconds, "error": error}


# --------------------------------------------------------------------------------------------------- executors
def _serial(specs: list[RunSpec], workers: int, on_done: Callable[[dict], None]) -> None:
    for spec in specs:
        on_done(run_one(spec))


def _crashed(spec: RunSpec, err: BaseException) -> dict:
    """The result of a run whose worker died (killed, out of memory) instead of returning."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return {
        "run_id": spec.run_id,
        "status": "failed",
        "seconds": 0.0,
        "error": f"worker died: {type(err).__name__}" + (f": {first}" if first else ""),
    }


def _process(specs: list[RunSpec], workers: int, on_done: Callable[[dict], None]) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a forked child of a process that already ran torch threads can deadlock; each worker imports afresh
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(run_one, s): s for s in specs}
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except Exception as err:  # noqa: BLE001 (a dead worker fails its runs; the sweep reports them)
                result = _crashed(futures[fut], err)
            on_done(result)


def _probe_address(address: str, timeout: float) -> None:
    """A TCP connect to host:port within `timeout`, so a dead address fails in seconds with one line."""
    if address == "auto":  # the cluster recorded on this machine; ray.init itself fails fast when there is none
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise WorkbenchError(f"Ray address {address!r} must look like HOST:PORT (e.g. 127.0.0.1:6379) or 'auto'")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise WorkbenchError(
            f"Ray address {address} did not answer ({err.strerror or type(err).__name__}; waited at most "
            f"{timeout:g} s); "
            "start the cluster (`ray start --head`) or drop --address for a local one"
        ) from None


@contextlib.contextmanager
def _quiet_fd2():
    """Send file descriptor 2 (where native libraries log) to /dev/null for the duration; Python's sys.stderr too."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. captured by a notebook): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def ray_init(address: str | None, workers: int, timeout: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Start a private local Ray cluster (address None) or join `address` within `timeout`; returns whether this
    call connected Ray (and so must shut it down).

    The local cluster starts in the calling thread: Ray ties its GCS and raylet to the thread that spawned them
    (parent-death signal), so a cluster started from a helper thread dies with that thread. Joining spawns no
    processes, so it runs in a daemon thread the caller stops waiting for after `timeout` (after a TCP probe that
    fails fast on a refused or silent port)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage reports to any host
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")  # connection retries would print a line each
    try:
        import ray
    except ImportError:
        raise WorkbenchError(
            "executor 'ray' needs the ray package: pip install -c constraints.txt 'ray>=2.40,<3' "
            "(or the 'sweep' extra); use --executor process meanwhile"
        ) from None
    if ray.is_initialized():
        return False
    import logging

    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:  # a private cluster on loopback only: nothing binds to or talks over another interface
        try:
            # address="local": always a new cluster, never one that happens to run on this machine already
            ray.init(address="local", num_cpus=workers, _node_ip_address="127.0.0.1", **kwargs)
        except Exception as err:  # noqa: BLE001 (one line for the caller)
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WorkbenchError(f"could not start a local Ray cluster ({first}); use --executor process") from None
        return True
    _probe_address(address, timeout)
    box: dict[str, Any] = {}

    def join() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as err:  # noqa: BLE001 (reported to the caller)
            box["error"] = err

    thread = threading.Thread(target=join, daemon=True, name="workbench-ray-join")
    with _quiet_fd2():  # Ray's C++ client logs every retry to fd 2; the caller gets one line instead
        thread.start()
        thread.join(timeout)
    if thread.is_alive():
        raise WorkbenchError(
            f"Ray address {address} did not answer as a Ray cluster within {timeout:g} s; check the address "
            "(the head's GCS port, 6379 by default) or drop --address for a local cluster"
        )
    if "error" in box:
        err = box["error"]
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WorkbenchError(
            f"Ray address {address}: could not join ({first}); if the cluster uses token authentication, set "
            "RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN, or the cluster's token in ~/.ray/auth_token)"
        )
    return True


def _ray(specs: list[RunSpec], workers: int, on_done: Callable[[dict], None]) -> None:
    """Runs as Ray tasks (one CPU each) on the cluster `run_sweep` connected (`ray_init`)."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=0)(run_one)
    refs = {remote.remote(s): s for s in specs}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            try:
                result = ray.get(ref)
            except Exception as err:  # noqa: BLE001 (a dead worker fails its run; the sweep reports it)
                result = _crashed(refs[ref], err)
            on_done(result)


_EXECUTE = {"serial": _serial, "process": _process, "ray": _ray}


# --------------------------------------------------------------------------------------------------- the sweep
@dataclass
class SweepResult:
    """What a sweep did: the folder, every run's status, the rows it added to the store."""

    out: Path
    runs: list[dict]
    executor: str
    seconds: float
    stored: int = 0

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.runs if r["status"] == "failed"]

    def to_json(self) -> dict:
        return {
            "out": str(self.out),
            "executor": self.executor,
            "seconds": self.seconds,
            "stored": self.stored,
            "done": sum(r["status"] == "done" for r in self.runs),
            "skipped": sum(r["status"] == "skipped" for r in self.runs),
            "failed": len(self.failed),
            "runs": self.runs,
        }


def _store_rows(records: list[dict], population: str) -> list[dict]:
    rows = []
    for rec in records:
        short, metric = record_proxy(rec)
        info = rec["eval"].get("ood", {}).get("informative", {})
        value = info.get("rates", {}).get(short, float("nan"))
        ci = info.get("ci95", {}).get(short, [float("nan"), float("nan")])
        rows.append(
            {
                "run_id": f"{population}/{rec['run_id']}",
                "subject": rec["subject"],
                "split": "ood",
                "seed": rec["seed"],
                "intervention": "none",
                "metric": metric,
                "value": value,
                "ci_low": ci[0],
                "ci_high": ci[1],
                "n": info.get("n"),
                "extra": {
                    "population": population,
                    "point": rec["point"],
                    "run_hash": rec["run_hash"],
                    "weights_sha256": rec["weights_sha256"],
                    "rates": {s: rec["eval"].get(s, {}).get("rates") for s in ("train", "ood")},
                },
            }
        )
    return rows


def _store_missing(store: str | Path, records: list[dict], population: str) -> int:
    """Add the rows of `records` the store does not hold yet (a rerun never duplicates a run's row)."""
    from workbench.store import ResultStore

    if not records:
        return 0
    with ResultStore(store) as db:
        have = set(db.query("run_id LIKE ?", [f"{population}/%"])["run_id"]) if len(db) else set()
        rows = [r for r in _store_rows(records, population) if r["run_id"] not in have]
        return db.add(rows) if rows else 0


def run_sweep(
    recipe: str | Path,
    seeds: Iterable[int] | str,
    grid: dict | list[str] | None = None,
    *,
    executor: str = "serial",
    address: str | None = None,
    out: str | Path,
    workers: int | None = None,
    store: str | Path | None = None,
    progress: bool = True,
) -> SweepResult:
    """Train `recipe` once per (seed, grid point) into the population folder `out` (see the module docstring).

    `seeds`: integers or a range text ("0-7"); `grid`: `["env.region=3,5"]` or `{"env.region": [3, 5]}`;
    `executor`: serial | process | ray (`address` joins an existing Ray cluster); `workers`: parallel runs
    (default 2, serial: 1); `store`: results store (default `workbench.store.default_store_path()`; False: none).
    Everything is validated (seeds, grid, every run's recipe, the folder) before anything is written."""
    from tqdm.auto import tqdm

    from workbench.errors import unknown
    from workbench.store import default_store_path
    from workbench.validate import check_int

    if executor not in EXECUTORS:
        raise unknown("executor", str(executor), EXECUTORS)
    if address is not None and executor != "ray":
        raise WorkbenchError(f"--address joins a Ray cluster; it needs --executor ray, not {executor!r}")
    workers = 1 if executor == "serial" else check_int("workers", 2 if workers is None else workers, 1, 1024)
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    out = Path(out).expanduser()
    specs = plan(recipe, seeds, grid, out)
    base_raw = _load_raw(recipe)
    pop_hash = specs[0].population_hash
    manifest = _check_out(out, recipe, pop_hash)
    store_path = None if store is False else (default_store_path() if store is None else store)
    if store_path is not None:
        from workbench.store import check_store_path

        store_path = check_store_path(store_path)
    population = base_raw["artifact"]["name"]

    t0 = time.time()
    results: list[dict] = []
    todo = []
    finished_before = []
    for spec in specs:
        rec = _read_record(Path(spec.folder))
        if rec is not None and rec.get("run_hash") == spec.run_hash:
            results.append({"run_id": spec.run_id, "status": "skipped", "seconds": 0.0, "error": None})
            finished_before.append(rec)
        elif rec is not None:
            raise WorkbenchError(
                f"{spec.folder}/{RECORD} was made by another recipe for run {spec.run_id}; remove that run folder"
            )
        else:
            todo.append(spec)
    # Ray is reached before anything is written: an address that does not answer leaves no trace
    ray_started = ray_init(address, min(workers, max(1, len(todo)))) if executor == "ray" and todo else False
    try:
        out.mkdir(parents=True, exist_ok=True)
        if manifest is None:
            manifest = {
                "name": population,
                "recipe": Path(recipe).as_posix(),
                "recipe_hash": pop_hash,
                "tables": base_raw,
            }
            _atomic_write(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        stored = _store_missing(store_path, finished_before, population) if store_path else 0
        bar = tqdm(
            total=len(specs),
            initial=len(specs) - len(todo),
            desc=f"sweep {population}",
            unit="run",
            disable=not progress,
            file=sys.stderr,
        )

        def on_done(result: dict) -> None:
            nonlocal stored
            results.append(result)
            bar.set_postfix_str(f"{result['run_id']} {result['status']} {result['seconds']:.0f}s")
            bar.update(1)
            if result["status"] == "done" and store_path:
                rec = _read_record(out / RUNS / result["run_id"])
                stored += _store_missing(store_path, [rec] if rec else [], population)
            if result["status"] == "failed":
                log = out / RUNS / result["run_id"] / "train.log"
                bar.write(f"run {result['run_id']} failed: {result['error']} (see {log})")

        try:
            if todo:
                _EXECUTE[executor](todo, min(workers, len(todo)), on_done)
        finally:
            bar.close()
    finally:
        if ray_started:
            import ray

            ray.shutdown()
    order = {s.run_id: i for i, s in enumerate(specs)}
    results.sort(key=lambda r: order[r["run_id"]])
    return SweepResult(out=out, runs=results, executor=executor, seconds=time.time() - t0, stored=stored)


def _read_record(folder: Path) -> dict | None:
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def load_population(folder: str | Path) -> Population:
    """A population folder's manifest and finished records; one line if `folder` is not a population."""
    folder = Path(folder).expanduser()
    path = folder / MANIFEST
    if not folder.is_dir():
        raise WorkbenchError(f"population folder {str(folder)!r} does not exist; make one with `workbench sweep`")
    if not path.is_file():
        raise WorkbenchError(f"{folder} holds no {MANIFEST}: not a population folder (made by `workbench sweep`)")
    try:
        manifest = json.loads(path.read_text())
        manifest["name"], manifest["recipe_hash"]
    except (OSError, ValueError, KeyError, TypeError):
        raise WorkbenchError(f"{path}: unreadable population manifest") from None
    records = []
    runs = folder / RUNS
    for sub in sorted(runs.iterdir()) if runs.is_dir() else []:
        rec = _read_record(sub)
        if rec is not None and rec.get("population_hash") == manifest["recipe_hash"]:
            records.append(rec)
    return Population(folder=folder, manifest=manifest, records=records)
