"""The bad-input corpus, library side: every case is a WorkbenchError whose message is one line naming the problem,
and the directory it ran in is unchanged afterwards (nothing written, nothing left behind).

Cases cover the shared validators (numbers, output paths, encodings), recipes, batteries, artifacts, the results
store and resume. The CLI's own corpus (exit code 2, one stderr line) builds on the same functions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TINY_POLICY, make_tiny_agent
from workbench import artifacts, validate
from workbench.battery import check_output_paths, load_checks
from workbench.errors import WorkbenchError
from workbench.rl import agent_checks
from workbench.rl.policies import ImpalaPolicy, PolicyConfig
from workbench.rl.train import load_recipe, train_recipe
from workbench.store import ResultStore

RECIPE = """\
[artifact]
name = "tiny"
description = "corpus"
[env]
split = "train"
max_steps = 20
[policy]
channels = [4, 8, 8]
pool = [false, true, true]
hidden = 16
[bc]
states = 0
num_envs = 8
[ppo]
total_steps = 256
num_envs = 8
num_steps = 16
num_minibatches = 2
update_epochs = 1
learning_rate = 5e-4
eval_every = 0
threads = 1
[eval]
episodes = 4
seed = 1
"""

BATTERY = """\
[[check]]
name = "plays"
kind = "behaviour"
subject = "tiny-maze"
data = { split = "ood", episodes = 16, seed = 0 }
expect = { cheese = ">= 0.0" }
"""

Case = Callable[[Path], Callable[[], object]]
CASES: list[tuple[str, Case, str]] = []


def case(name: str, pattern: str):
    def register(fn: Case) -> Case:
        CASES.append((name, fn, pattern))
        return fn

    return register


def write(tmp: Path, name: str, data: str | bytes) -> Path:
    path = tmp / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def recipe_case(name: str, old: str, new: str, pattern: str) -> None:
    assert old in RECIPE, old

    def make(tmp: Path):
        path = write(tmp, "r.toml", RECIPE.replace(old, new, 1))
        return lambda: load_recipe(path)

    CASES.append((f"recipe: {name}", make, pattern))


def battery_case(name: str, old: str, new: str, pattern: str) -> None:
    assert old in BATTERY, old

    def make(tmp: Path):
        path = write(tmp, "b.toml", BATTERY.replace(old, new, 1))
        return lambda: load_checks([path])

    CASES.append((f"battery: {name}", make, pattern))


# ----------------------------------------------------------------------------------------------- validators: numbers
for _name, _call, _pattern in [
    ("episodes 0", lambda: validate.check_episodes(0), r"episodes must be in 1..1000000, got 0; nearest valid: 1"),
    ("episodes 1e12", lambda: validate.check_episodes(10**12), r"episodes must be in 1..1000000, got 10+; nearest"),
    ("episodes 2.5", lambda: validate.check_episodes(2.5), r"episodes must be an integer in 1..1000000, got 2.5"),
    ("episodes '10'", lambda: validate.check_episodes("10"), r"episodes must be an integer"),
    ("episodes True", lambda: validate.check_episodes(True), r"episodes must be an integer"),
    ("seed -1", lambda: validate.check_seed(-1), r"seed must be in 0..4294967295, got -1; nearest valid: 0"),
    ("seed 2**64", lambda: validate.check_seed(2**64), r"seed must be in 0..4294967295, got 18446744073709551616"),
    ("seed 1.5", lambda: validate.check_seed(1.5), r"seed must be an integer"),
    ("coef nan", lambda: validate.check_float("coef", float("nan")), r"coef must be a finite number, got nan"),
    ("coef inf", lambda: validate.check_float("coef", float("inf")), r"coef must be a finite number, got inf"),
    ("coef 'abc'", lambda: validate.check_float("coef", "abc"), r"coef must be a number, got 'abc'"),
    ("lr 0 open", lambda: validate.check_float("lr", 0.0, 0.0, 1.0, lo_open=True), r"lr must be in \(0, 1\], got 0"),
    ("n_boot 0", lambda: validate.check_int("n_boot", 0, 1, 100_000), r"n_boot must be in 1..100000, got 0"),
    ("threshold >1", lambda: validate.check_float("p", 1.5, 0.0, 1.0), r"p must be in 0..1, got 1.5"),
]:
    CASES.append((f"number: {_name}", (lambda c: lambda tmp: c)(_call), _pattern))


# ----------------------------------------------------------------------------------------------- validators: paths
@case("path: output file is an existing folder", r"--out .*/figs is an existing folder, not a file; .*figs/figs.png")
def _(tmp):
    (tmp / "figs").mkdir()
    return lambda: validate.check_output_file(tmp / "figs", name="--out", suffixes=(".png", ".svg"))


@case("path: output parent is a file", r"--out .*: .*/note is a file, not a folder")
def _(tmp):
    write(tmp, "note", "x")
    return lambda: validate.check_output_file(tmp / "note" / "f.png", name="--out", suffixes=(".png",))


@case("path: output grandparent is a file", r"--out .*: .*/note is a file, not a folder")
def _(tmp):
    write(tmp, "note", "x")
    return lambda: validate.check_output_file(tmp / "note" / "a" / "b" / "f.png", name="--out")


@case("path: unsupported extension", r"--out .*field.txt: unsupported extension '.txt'; use one of .png, .svg, e.g.")
def _(tmp):
    return lambda: validate.check_output_file(tmp / "field.txt", name="--out", suffixes=(".png", ".svg"))


@case("path: no extension", r"--out .*field_noext has no extension; use one of .png, e.g. .*field_noext.png")
def _(tmp):
    return lambda: validate.check_output_file(tmp / "field_noext", name="--out", suffixes=(".png",))


@case("path: empty", r"--out: empty path")
def _(tmp):
    return lambda: validate.check_output_file("", name="--out")


@case("path: exists and overwrite refused", r"--out .*a.png already exists")
def _(tmp):
    write(tmp, "a.png", "x")
    return lambda: validate.check_output_file(tmp / "a.png", name="--out", overwrite=False)


@case("path: output folder is a file", r"--report .*/rep is an existing file, not a folder")
def _(tmp):
    write(tmp, "rep", "x")
    return lambda: validate.check_output_dir(tmp / "rep", name="--report")


@case("path: output folder under a file", r"--report .*: .*/rep is a file, not a folder")
def _(tmp):
    write(tmp, "rep", "x")
    return lambda: validate.check_output_dir(tmp / "rep" / "sub", name="--report")


@case("path: input missing", r"--dataset .*/nope.jsonl does not exist")
def _(tmp):
    return lambda: validate.check_input_file(tmp / "nope.jsonl", name="--dataset")


@case("path: input is a folder", r"--dataset .*/d is a folder, not a file")
def _(tmp):
    (tmp / "d").mkdir()
    return lambda: validate.check_input_file(tmp / "d", name="--dataset")


@case("path: input wrong extension", r"--dataset .*/d.csv: unsupported extension '.csv'; expected .jsonl")
def _(tmp):
    write(tmp, "d.csv", "x")
    return lambda: validate.check_input_file(tmp / "d.csv", name="--dataset", suffixes=(".jsonl",))


# ----------------------------------------------------------------------------------------------- validators: encodings
for _name, _data, _pattern in [
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"binary file \(NUL bytes\), not a text file"),
    ("UTF-16 with BOM", "a = 1\n".encode("utf-16"), r"file is UTF-16-encoded; save it as UTF-8"),
    ("UTF-16 without BOM", "a = 1\nb = 2\n".encode("utf-16-le"), r"file looks UTF-16-encoded"),
    ("UTF-32", "a = 1\n".encode("utf-32"), r"file is UTF-32-encoded"),
    ("latin-1", "name = 'caf\u00e9'\n".encode("latin-1"), r"not valid UTF-8 \(byte 0xe9 on line 1\)"),
]:
    CASES.append(
        (
            f"encoding: {_name}",
            (lambda d: lambda tmp: (lambda p=write(tmp, "f.toml", d): lambda: validate.read_text(p))())(_data),
            rf"f.toml: {_pattern}",
        )
    )


@case("encoding: missing file", r"file '.*/gone.toml' does not exist")
def _(tmp):
    return lambda: validate.read_text(tmp / "gone.toml")


@case("encoding: folder", r"file '.*/d' is a folder, not a file")
def _(tmp):
    (tmp / "d").mkdir()
    return lambda: validate.read_text(tmp / "d")


# ----------------------------------------------------------------------------------------------- recipes
@case("recipe: binary file", r"r.toml: binary file \(NUL bytes\)")
def _(tmp):
    path = write(tmp, "r.toml", b"\x00\x01\x02 binary")
    return lambda: load_recipe(path)


@case("recipe: UTF-16 file", r"r.toml: file is UTF-16-encoded; save it as UTF-8")
def _(tmp):
    path = write(tmp, "r.toml", RECIPE.encode("utf-16"))
    return lambda: load_recipe(path)


@case("recipe: a folder", r"recipe file '.*/r.toml' is a folder")
def _(tmp):
    (tmp / "r.toml").mkdir()
    return lambda: load_recipe(tmp / "r.toml")


@case("recipe: missing", r"recipe file '.*/none.toml' does not exist")
def _(tmp):
    return lambda: load_recipe(tmp / "none.toml")


RECIPE_CASES = [
    (
        "invalid TOML",
        "hidden = 16",
        "hidden = = 16",
        r"r.toml: invalid TOML: ",
    ),
    (
        "unknown section",
        "[eval]",
        "[evaluation]",
        r"r.toml: unknown section \[evaluation\]; did you mean: eval",
    ),
    (
        "num_minibatches 0",
        "num_minibatches = 2",
        "num_minibatches = 0",
        r"r.toml \[ppo\]: num_minibatches must be in 1..128, got 0",
    ),
    (
        "num_minibatches 3",
        "num_minibatches = 2",
        "num_minibatches = 3",
        r"r.toml \[ppo\]: num_minibatches = 3 must divide .* = 128; nearest valid: 2",
    ),
    (
        "ppo num_envs -4",
        "num_envs = 8\nnum_steps",
        "num_envs = -4\nnum_steps",
        r"r.toml \[ppo\]: num_envs must be in 1..4096, got -4",
    ),
    (
        "bc num_envs -4",
        "num_envs = 8\n[ppo]",
        "num_envs = -4\n[ppo]",
        r"r.toml \[bc\]: num_envs must be in 1..4096, got -4",
    ),
    (
        "bc noise 2",
        "states = 0",
        "states = 0\nnoise = 2.0",
        r"r.toml \[bc\]: noise must be in 0..1, got 2",
    ),
    (
        "bc states 1e9",
        "states = 0",
        "states = 1_000_000_000",
        r"r.toml \[bc\]: states must be in 0..5000000",
    ),
    (
        "bc epochs 0",
        "states = 0",
        "states = 0\nepochs = 0",
        r"r.toml \[bc\]: epochs must be in 1..1000, got 0",
    ),
    (
        "learning_rate nan",
        "learning_rate = 5e-4",
        "learning_rate = nan",
        r"r.toml \[ppo\]: key 'learning_rate' must be a finite number, got nan",
    ),
    (
        "learning_rate inf",
        "learning_rate = 5e-4",
        "learning_rate = inf",
        r"\[ppo\]: key 'learning_rate' must be a finite number, got inf",
    ),
    (
        "learning_rate 0",
        "learning_rate = 5e-4",
        "learning_rate = 0.0",
        r"\[ppo\]: learning_rate must be in \(0, 1\], got 0",
    ),
    (
        "gamma 1.5",
        "update_epochs = 1",
        "update_epochs = 1\ngamma = 1.5",
        r"\[ppo\]: gamma must be in 0..1, got 1.5",
    ),
    (
        "update_epochs 0",
        "update_epochs = 1",
        "update_epochs = 0",
        r"\[ppo\]: update_epochs must be in 1..1000, got 0",
    ),
    (
        "total_steps -1",
        "total_steps = 256",
        "total_steps = -1",
        r"\[ppo\]: total_steps must be in 0..10000000000, got -1",
    ),
    (
        "huge batch",
        "num_envs = 8\nnum_steps = 16",
        "num_envs = 64\nnum_steps = 100000",
        r"\[ppo\]: num_envs \* num_steps = 6,400,000 exceeds 2,097,152 .*; lower num_envs or num_steps",
    ),
    (
        "ppo seed 2**40",
        "threads = 1",
        "threads = 1\nseed = 1099511627776",
        r"\[ppo\]: seed must be in 0..4294967295",
    ),
    (
        "threads -1",
        "threads = 1",
        "threads = -1",
        r"\[ppo\]: threads must be in 0..1024, got -1",
    ),
    (
        "eval episodes 0",
        "episodes = 4",
        "episodes = 0",
        r"\[eval\]: episodes must be in 1..1000000, got 0",
    ),
    (
        "eval seed -1",
        "seed = 1\n",
        "seed = -1\n",
        r"\[eval\]: seed must be in 0..4294967295, got -1",
    ),
    (
        "policy hidden 0",
        "hidden = 16",
        "hidden = 0",
        r"\[policy\]: hidden must be in 1..16384, got 0",
    ),
    (
        "policy channel 0",
        "channels = [4, 8, 8]",
        "channels = [0, 8, 8]",
        r"\[policy\]: channels\[0\] must be in 1..1024, got 0",
    ),
    (
        "policy pool length",
        "pool = [false, true, true]",
        "pool = [false, true]",
        r"\[policy\]: policy channels .* must have the same length",
    ),
    (
        "policy n_actions",
        "hidden = 16",
        "hidden = 16\nn_actions = 6",
        r"\[policy\]: n_actions = 6 does not fit the maze env, which needs 4",
    ),
    (
        "policy typo",
        "hidden = 16",
        "hiden = 16",
        r"\[policy\]: unknown key 'hiden'; did you mean: hidden",
    ),
    (
        "env world_size 16",
        "max_steps = 20",
        "max_steps = 20\nworld_size = 16",
        r"\[env\]: maze world_size must be 15 or 25, got 16",
    ),
    (
        "env split typo",
        'split = "train"',
        'split = "tran"',
        r"\[env\]: unknown split 'tran'; did you mean: train",
    ),
    (
        "artifact name path",
        'name = "tiny"',
        'name = "../tiny"',
        r"\[artifact\]: name '../tiny' must be a plain folder name",
    ),
    (
        "artifact name hidden",
        'name = "tiny"',
        'name = ".tiny"',
        r"\[artifact\]: name '.tiny' must be a plain folder name",
    ),
]
for _args in RECIPE_CASES:
    recipe_case(*_args)


@case("recipe: --steps override breaks divisibility", r"\[ppo\] with --steps -5: total steps \(--steps\)|--steps")
def _(tmp):
    path = write(tmp, "r.toml", RECIPE)
    return lambda: train_recipe(path, out=tmp / "art" / "tiny", progress=False, total_steps=-5)


@case("recipe: --out is a file", r"artifact folder .*/art is an existing file")
def _(tmp):
    path = write(tmp, "r.toml", RECIPE)
    write(tmp, "art", "x")
    return lambda: train_recipe(path, out=tmp / "art", progress=False)


@case("resume: different recipe", r"cannot --resume .*different recipe \(\[ppo\].learning_rate: 0.001 -> 0.0005\)")
def _(tmp):
    path = write(tmp, "r.toml", RECIPE)
    recipe = load_recipe(path)
    from workbench.recipes import recipe_hash
    from workbench.rl.train import _training_tables

    tables = _training_tables(recipe, recipe.ppo)
    tables["ppo"]["learning_rate"] = 1e-3
    record = {"hash": recipe_hash(tables), "tables": tables}
    write(tmp, "runs/checkpoints/tiny/recipe.json", json.dumps(record))
    return lambda: train_recipe(path, out=tmp / "art" / "tiny", progress=False, resume=True)


@case("resume: checkpoint without record", r"runs/checkpoints/tiny: checkpoint has no recipe record")
def _(tmp):
    path = write(tmp, "r.toml", RECIPE)
    write(tmp, "runs/checkpoints/tiny/checkpoint.json", "{}")
    return lambda: train_recipe(path, out=tmp / "art" / "tiny", progress=False, resume=True)


# ----------------------------------------------------------------------------------------------- batteries
@case("battery: binary file", r"b.toml: binary file")
def _(tmp):
    path = write(tmp, "b.toml", b"\x00\x00\x01")
    return lambda: load_checks([path])


@case("battery: UTF-16 file", r"b.toml: file is UTF-16-encoded")
def _(tmp):
    path = write(tmp, "b.toml", BATTERY.encode("utf-16"))
    return lambda: load_checks([path])


@case("battery: missing path", r"battery path '.*/none.toml' does not exist")
def _(tmp):
    return lambda: load_checks([tmp / "none.toml"])


@case("battery: empty folder", r"no battery files \(\*.toml\) in")
def _(tmp):
    (tmp / "empty").mkdir()
    return lambda: load_checks([tmp / "empty"])


BATTERY_CASES = [
    (
        "threshold nan",
        '">= 0.0"',
        '">= nan"',
        r"b.toml check #1 \('plays'\): threshold 'nan' of cheese must be a finite number",
    ),
    (
        "threshold inf",
        '">= 0.0"',
        '"< inf"',
        r"threshold 'inf' of cheese must be a finite number",
    ),
    (
        "threshold text",
        '">= 0.0"',
        '">= high"',
        r"threshold 'high' of cheese is not a number",
    ),
    (
        "bad operator",
        '">= 0.0"',
        '"== 0.5"',
        r'expectation cheese = .* must look like ">= 0.9"',
    ),
    (
        "episodes 0",
        "episodes = 16",
        "episodes = 0",
        r"\[data\]: episodes must be in 2..1000000, got 0",
    ),
    (
        "episodes huge",
        "episodes = 16",
        "episodes = 1000000000000",
        r"\[data\]: episodes must be in 2..1000000",
    ),
    (
        "seed -1",
        "seed = 0",
        "seed = -1",
        r"\[data\]: seed must be in 0..4294967295, got -1; nearest valid: 0",
    ),
    (
        "seed 2**65",
        "seed = 0",
        "seed = 36893488147419103232",
        r"invalid TOML|seed must be in",
    ),
    (
        "unknown kind",
        'kind = "behaviour"',
        'kind = "behavior"',
        r"unknown kind 'behavior'; did you mean: behaviour",
    ),
    (
        "unknown key",
        'kind = "behaviour"',
        'kind = "behaviour"\ncoeff = 1.0',
        r"unknown key 'coeff'; did you mean: coef",
    ),
    (
        "coef nan",
        'kind = "behaviour"',
        'kind = "behaviour"\ncoef = nan',
        r"key 'coef' must be a finite number",
    ),
    (
        "top-level key",
        "[[check]]",
        "[settings]\nx = 1\n[[check]]",
        r"unknown top-level key 'settings'",
    ),
    (
        "split typo",
        'split = "ood"',
        'split = "odd"',
        r"unknown split 'odd'; did you mean: ood",
    ),
]
for _args in BATTERY_CASES:
    battery_case(*_args)


@case("battery: --junit is a folder", r"--junit .*/j is an existing folder, not a file")
def _(tmp):
    (tmp / "j").mkdir()
    return lambda: check_output_paths(tmp / "j", None)


@case("battery: --report is a file", r"--report .*/rep is an existing file, not a folder")
def _(tmp):
    write(tmp, "rep", "x")
    return lambda: check_output_paths(None, tmp / "rep")


# ----------------------------------------------------------------------------------------------- artifacts
@case("artifact: unknown name", r"unknown artifact 'tiny-maz'; did you mean: tiny-maze")
def _(tmp):
    return lambda: artifacts.resolve("tiny-maz")


@case("artifact: hidden temporary folder", r"is a hidden temporary folder left by an interrupted artifact write")
def _(tmp):
    hidden = tmp / "artifacts" / "agents" / ".tiny-maze.abcd1234"
    hidden.mkdir(parents=True)
    write(hidden, artifacts.CONFIG, "{}")
    return lambda: artifacts.resolve(hidden)


@case("artifact: folder without config", r"/plain is not an artifact folder \(no config.json\)")
def _(tmp):
    (tmp / "plain").mkdir()
    return lambda: artifacts.resolve(tmp / "plain")


@case("artifact: config not JSON", r"config.json: unreadable artifact config")
def _(tmp):
    write(tmp, "a/config.json", "{not json")
    return lambda: artifacts.read_config(tmp / "a")


@case("artifact: config binary", r"config.json: unreadable artifact config")
def _(tmp):
    write(tmp, "a/config.json", b"\xff\xfe\x00\x00")
    return lambda: artifacts.read_config(tmp / "a")


@case("artifact: config a list", r"config.json: artifact config must be a JSON object, got list")
def _(tmp):
    write(tmp, "a/config.json", "[1, 2]")
    return lambda: artifacts.read_config(tmp / "a")


@case("artifact: config lacks policy", r"config.json: missing 'policy'")
def _(tmp):
    cfg = {"kind": "rl-agent", "env": {"kind": "maze", "split": "train"}}
    return lambda: agent_checks.check_agent_config(cfg, tmp / "a")


@case("artifact: unknown env key", r"config.json \[env\]: unknown key 'world_sise'; did you mean: world_size")
def _(tmp):
    cfg = {"env": {"kind": "maze", "split": "train", "world_sise": 15}, "policy": TINY_POLICY.to_dict()}
    return lambda: agent_checks.check_agent_config(cfg, tmp / "a")


@case("artifact: unknown env kind", r"\[env\].kind: unknown env kind 'maez'; did you mean: maze")
def _(tmp):
    cfg = {"env": {"kind": "maez", "split": "train"}, "policy": TINY_POLICY.to_dict()}
    return lambda: agent_checks.check_agent_config(cfg, tmp / "a")


@case("artifact: weights of another architecture", r"weights.safetensors: weights of another architecture: ")
def _(tmp):
    policy = ImpalaPolicy(TINY_POLICY)
    other = ImpalaPolicy(PolicyConfig(channels=(8, 8, 8), pool=(False, True, True), hidden=16)).state_dict()
    return lambda: agent_checks.check_state_dict(policy, other, tmp / "a")


@case("artifact: write under a file", r"artifact parent folder .*/blocker is an existing file, not a folder")
def _(tmp):
    write(tmp, "blocker", "x")
    return lambda: artifacts.writing(tmp / "blocker" / "x").__enter__()


@case("artifact: write onto a file", r"artifact folder .*/x is an existing file")
def _(tmp):
    write(tmp, "x", "x")
    return lambda: artifacts.writing(tmp / "x").__enter__()


@case("artifact: WORKBENCH_DATA not a folder", r"WORKBENCH_DATA='.*/nope' is not a folder")
def _(tmp):
    os.environ["WORKBENCH_DATA"] = str(tmp / "nope")  # restored by the test's monkeypatch
    return artifacts.data_root


# ----------------------------------------------------------------------------------------------- store
def _store_with_row(tmp: Path) -> Path:
    path = tmp / "s" / "r.duckdb"
    with ResultStore(path) as db:
        db.add([{"run_id": "r", "subject": "s", "metric": "m", "value": 1.0, "git_sha": None}])
    return path


@case("store: under a file", r"result store .*: .*/blocker is a file, not a folder")
def _(tmp):
    write(tmp, "blocker", "x")
    return lambda: ResultStore(tmp / "blocker" / "r.duckdb")


@case("store: a folder", r"result store .*/d is a folder; a store is a file such as .*/d/results.duckdb")
def _(tmp):
    (tmp / "d").mkdir()
    return lambda: ResultStore(tmp / "d")


@case("store: missing, read-only", r"result store .*/none.duckdb does not exist")
def _(tmp):
    return lambda: ResultStore(tmp / "none.duckdb", read_only=True)


@case("store: not a DuckDB file", r"result store .*/junk.duckdb is not a DuckDB results store")
def _(tmp):
    path = write(tmp, "junk.duckdb", "this is text")
    return lambda: ResultStore(path, read_only=True).query()


@case("store: unknown column", r"row 0: unknown column 'vaule'; did you mean: value")
def _(tmp):
    path = _store_with_row(tmp)
    return lambda: ResultStore(path).add([{"run_id": "r", "subject": "s", "metric": "m", "vaule": 1.0}])


@case("store: value not a number", r"row 0: column 'value' must be a number, got str")
def _(tmp):
    path = _store_with_row(tmp)
    return lambda: ResultStore(path).add([{"run_id": "r", "subject": "s", "metric": "m", "value": "high"}])


@case("store: add to read-only", r"was opened read-only")
def _(tmp):
    path = _store_with_row(tmp)
    return lambda: ResultStore(path, read_only=True).add([{"run_id": "r", "subject": "s", "metric": "m", "value": 1}])


@case("store: bad query", r"bad query condition 'no_such = 1'")
def _(tmp):
    path = _store_with_row(tmp)
    return lambda: ResultStore(path, read_only=True).query("no_such = 1")


@case("store: export to a folder", r"export .*/out is an existing folder, not a file; .*out.parquet")
def _(tmp):
    path = _store_with_row(tmp)
    (tmp / "out").mkdir()
    return lambda: ResultStore(path, read_only=True).export_parquet(tmp / "out")


@case("store: export under a file", r"export .*: .*/blocker is a file, not a folder")
def _(tmp):
    path = _store_with_row(tmp)
    write(tmp, "blocker", "x")
    return lambda: ResultStore(path, read_only=True).export_parquet(tmp / "blocker" / "x.parquet")


@case("store: export as csv", r"export .*/x.csv: unsupported extension '.csv'; use one of .parquet")
def _(tmp):
    path = _store_with_row(tmp)
    return lambda: ResultStore(path, read_only=True).export_parquet(tmp / "x.csv")


@case("store: bad export condition", r"bad export condition 'nope > 1'")
def _(tmp):
    path = _store_with_row(tmp)
    return lambda: ResultStore(path, read_only=True).export_parquet(tmp / "x.parquet", where="nope > 1")


@case("store: bad timeout variable", r"^WORKBENCH_STORE_TIMEOUT must be a number of seconds, got 'soon'")
def _(tmp):
    path = _store_with_row(tmp)
    os.environ["WORKBENCH_STORE_TIMEOUT"] = "soon"  # restored by the test's monkeypatch
    return lambda: ResultStore(path, read_only=True).query()


# ----------------------------------------------------------------------------------------------- the test


def _listing(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize(("make", "pattern"), [(m, p) for _, m, p in CASES], ids=[n for n, _, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(make, pattern, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "store.duckdb"))
    monkeypatch.setenv("WORKBENCH_DATA", "")  # empty = unset; setenv makes monkeypatch restore what a case sets
    monkeypatch.setenv("WORKBENCH_STORE_TIMEOUT", "")
    make_tiny_agent(tmp_path / "artifacts" / "agents" / "tiny-maze")
    call = make(tmp_path)
    before = _listing(tmp_path)
    with pytest.raises(WorkbenchError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and message.strip() == message and message
    assert "Traceback" not in message
    import re

    assert re.search(pattern, message), f"{message!r} does not match {pattern!r}"
    assert _listing(tmp_path) == before, "the failed call changed the directory"


def test_corpus_is_large_enough():
    assert len(CASES) >= 80, len(CASES)
