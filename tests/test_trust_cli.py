"""The command line's bad-input corpus (issue 13): every case exits 2 with exactly one stderr line that names the
problem (and the nearest valid choice where there is one), and leaves the disk as it was.

Each case runs the real entry point (`workbench.cli.main`, through the `cli` fixture) in a fresh temporary working
folder, next to a temporary artifacts registry holding the random-weight `tiny-maze` agent (`registry` fixture) and
a results-store path that does not exist yet. The whole temporary tree is listed before and after: a case passes
only if nothing was created, removed or changed -- no store, no dataset folder, no half-written report.

Placeholders in the arguments: {work} the working folder, {file} an existing text file, {dir} an existing folder,
{hidden} a hidden `.tiny-maze.xxxx` folder (what an interrupted artifact write leaves), {spec} a valid battery file,
{nan_spec} a battery whose threshold is NaN, {store} an existing results store, {recipe} a recipe file name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

MAZE = "tiny-maze"
HOOK = "embedder.block2.res1.resadd_out"

SPEC = """
[[check]]
name = "tiny-behaviour"
kind = "behaviour"
subject = "tiny-maze"
data = { split = "ood", episodes = 4, seed = 0 }
expect = { timeout = "THRESHOLD" }
"""

# (id, args, substrings stderr must hold[, environment variables to set])
CASES: list[tuple] = [
    # ---------------------------------------------------------------- eval: numbers, names, paths, the store
    (
        "eval-episodes-huge",
        ("eval", MAZE, "--episodes", "1000000000000"),
        ["--episodes must be in 1..1000000", "nearest valid: 1000000"],
    ),
    ("eval-episodes-zero", ("eval", MAZE, "--episodes", "0"), ["--episodes must be in 1..1000000", "nearest valid: 1"]),
    ("eval-episodes-negative", ("eval", MAZE, "--episodes", "-5"), ["--episodes", "got -5", "nearest valid: 1"]),
    ("eval-episodes-text", ("eval", MAZE, "--episodes", "ten"), ["--episodes must be an integer", "'ten'"]),
    ("eval-episodes-float", ("eval", MAZE, "--episodes", "2.5"), ["--episodes must be an integer", "'2.5'"]),
    ("eval-episodes-sci", ("eval", MAZE, "--episodes", "1e3"), ["--episodes must be an integer", "'1e3'"]),
    ("eval-episodes-missing-value", ("eval", MAZE, "--episodes"), ["--episodes", "requires an argument"]),
    ("eval-seed-negative", ("eval", MAZE, "--seed", "-1"), ["--seed must be in 0..4294967295", "nearest valid: 0"]),
    (
        "eval-seed-expression",
        ("eval", MAZE, "--seed", "2**64"),
        ["--seed must be an integer (0..4294967295)", "'2**64'"],
    ),
    (
        "eval-seed-2-64",
        ("eval", MAZE, "--seed", str(2**64)),
        ["--seed must be in 0..4294967295", "nearest valid: 4294967295"],
    ),
    ("eval-seed-2-32", ("eval", MAZE, "--seed", str(2**32)), ["--seed", "nearest valid: 4294967295"]),
    ("eval-split", ("eval", MAZE, "--split", "oood"), ["unknown split 'oood'", "did you mean: ood"]),
    ("eval-artifact", ("eval", "tiny-maz"), ["unknown artifact 'tiny-maz'", "did you mean: tiny-maze"]),
    ("eval-env", ("eval", MAZE, "--env", "procgen-mase"), ["unknown env 'procgen-mase'", "did you mean: procgen-maze"]),
    ("eval-env-mismatch", ("eval", MAZE, "--env", "procgen-coinrun"), ["is a maze subject", "drop --env"]),
    ("eval-file-without-env", ("eval", "{file}"), ["is a file", "--env"]),
    ("eval-missing-checkpoint", ("eval", "{work}/model.pth", "--env", "procgen-maze"), ["model.pth", "does not exist"]),
    ("eval-hidden-temp-folder", ("eval", "{hidden}"), ["hidden temporary folder", ".tiny-maze.ab12cd"]),
    ("eval-option-typo", ("eval", MAZE, "--epsiodes", "3"), ["no such option --epsiodes", "did you mean --episodes"]),
    ("eval-missing-subject", ("eval",), ["missing argument", "artifact"]),
    ("eval-extra-argument", ("eval", MAZE, "extra"), ["unexpected extra argument", "extra"]),
    ("eval-store-folder", ("eval", MAZE, "--store", "{dir}"), ["result store", "is a folder", "results.duckdb"]),
    (
        "eval-store-under-file",
        ("eval", MAZE, "--store", "{file}/r.duckdb"),
        ["result store", "is a file, not a folder"],
    ),
    (
        "eval-env-store-under-file",
        ("eval", MAZE),
        ["result store", "is a file, not a folder"],
        {"WORKBENCH_STORE": "{file}/r.duckdb"},
    ),
    ("command-typo", ("evl", MAZE), ["no such command 'evl'", "did you mean eval"]),
    (
        "threads-env",
        ("hooks", MAZE),
        ["WORKBENCH_THREADS must be a positive integer", "'many'"],
        {"WORKBENCH_THREADS": "many"},
    ),
    # ---------------------------------------------------------------- steer
    ("steer-coef-text", ("steer", MAZE, "--coef", "abc"), ["--coef must be a finite number", "'abc'"]),
    ("steer-coef-nan", ("steer", MAZE, "--coef", "nan"), ["--coef must be a finite number", "nan"]),
    ("steer-coef-inf", ("steer", MAZE, "--coef", "inf"), ["--coef must be a finite number", "inf"]),
    ("steer-coef-minus-inf", ("steer", MAZE, "--coef", "-inf"), ["--coef must be a finite number", "-inf"]),
    ("steer-vector", ("steer", MAZE, "--vector", "chese"), ["unknown vector 'chese'", "did you mean: cheese"]),
    (
        "steer-layer",
        ("steer", MAZE, "--layer", "embedder.block2.res1.resad_out"),
        ["unknown hook", f"did you mean: {HOOK}"],
    ),
    (
        "steer-probe-episodes",
        ("steer", MAZE, "--probe-episodes", "5"),
        ["--probe-episodes must be in 10..1000000", "nearest valid: 10"],
    ),
    ("steer-episodes-zero", ("steer", MAZE, "--episodes", "0"), ["--episodes", "nearest valid: 1"]),
    ("steer-seed-negative", ("steer", MAZE, "--seed", "-7"), ["--seed", "nearest valid: 0"]),
    (
        "steer-probe-method",
        ("steer", MAZE, "--vector", "probe", "--probe-method", "lda"),
        ["unknown probe method 'lda'"],
    ),
    ("steer-split", ("steer", MAZE, "--split", "test"), ["unknown split 'test'"]),
    # ---------------------------------------------------------------- probe
    ("probe-n-fit", ("probe", MAZE, "--n-fit", "1"), ["--n-fit must be in 2..1000000", "nearest valid: 2"]),
    ("probe-n-test", ("probe", MAZE, "--n-test", "0"), ["--n-test must be in 1..1000000", "nearest valid: 1"]),
    ("probe-n-test-huge", ("probe", MAZE, "--n-test", "99999999999"), ["--n-test", "nearest valid: 1000000"]),
    ("probe-layer", ("probe", MAZE, "--layer", "embedder.blok1"), ["unknown hook 'embedder.blok1'", "did you mean"]),
    ("probe-fit-split", ("probe", MAZE, "--fit-split", "sideways"), ["unknown split 'sideways'"]),
    ("probe-seed", ("probe", MAZE, "--seed", "x"), ["--seed must be an integer", "'x'"]),
    # ---------------------------------------------------------------- hooks
    ("hooks-unknown", ("hooks", "no-such-agent"), ["unknown artifact 'no-such-agent'"]),
    ("hooks-env-kind", ("hooks", MAZE, "--env", "lm"), ["is a maze subject", "not lm"]),
    # ---------------------------------------------------------------- vector-field: the output file before any work
    ("vf-out-folder", ("vector-field", MAZE, "--out", "{dir}"), ["--out", "is an existing folder", ".png"]),
    ("vf-out-txt", ("vector-field", MAZE, "--out", "{work}/field.txt"), ["unsupported extension '.txt'", "field.png"]),
    (
        "vf-out-no-extension",
        ("vector-field", MAZE, "--out", "{work}/field_noext"),
        ["has no extension", "field_noext.png"],
    ),
    ("vf-out-under-file", ("vector-field", MAZE, "--out", "{file}/f.png"), ["--out", "is a file, not a folder"]),
    ("vf-out-missing", ("vector-field", MAZE), ["missing option '--out'"]),
    (
        "vf-coef-nan",
        ("vector-field", MAZE, "--out", "{work}/f.png", "--coef", "nan"),
        ["--coef must be a finite number"],
    ),
    ("vf-seed", ("vector-field", MAZE, "--out", "{work}/f.png", "--seed", "-3"), ["--seed", "nearest valid: 0"]),
    (
        "vf-layer-in-new-folder",
        ("vector-field", MAZE, "--out", "{work}/new/sub/f.png", "--coef", "1", "--layer", "embedder.nope"),
        ["unknown hook 'embedder.nope'"],
    ),
    (
        "vf-split",
        ("vector-field", MAZE, "--out", "{work}/f.png", "--split", "odd"),
        ["unknown split 'odd'", "did you mean: ood"],
    ),
    # ---------------------------------------------------------------- collect
    (
        "collect-out-exists",
        ("collect", MAZE, "--hook", HOOK, "--out", "{dir}"),
        ["--out", "already exists", "new folder"],
    ),
    (
        "collect-out-under-file",
        ("collect", MAZE, "--hook", HOOK, "--out", "{file}/ds"),
        ["--out", "is a file, not a folder"],
    ),
    ("collect-episodes", ("collect", MAZE, "--hook", HOOK, "--episodes", "0"), ["--episodes", "nearest valid: 1"]),
    (
        "collect-hook",
        ("collect", MAZE, "--hook", "embedder.block2.res1.resad_out", "--out", "{work}/ds"),
        ["unknown hook", HOOK],
    ),
    (
        "collect-states",
        ("collect", MAZE, "--hook", HOOK, "--states", "middle", "--out", "{work}/ds"),
        ["'middle'", "start"],
    ),
    ("collect-hook-missing", ("collect", MAZE), ["missing option '--hook'"]),
    ("collect-store-folder", ("collect", MAZE, "--hook", HOOK, "--store", "{dir}"), ["result store", "is a folder"]),
    # ---------------------------------------------------------------- train
    ("train-missing-recipe", ("train", "agents/nope.toml"), ["nope.toml", "does not exist"]),
    ("train-recipe-folder", ("train", "{dir}"), ["recipe file", "is a folder"]),
    ("train-recipe-not-toml", ("train", "{file}"), ["notes.txt", "invalid TOML"]),
    ("lm-train-recipe-folder", ("lm", "train", "{dir}"), ["recipe file", "is a folder"]),
    ("train-steps", ("train", "{recipe}", "--steps", "0"), ["--steps must be >= 1", "nearest valid: 1"]),
    ("train-out-under-file", ("train", "{spec}", "--out", "{file}/agent"), ["--out", "is a file, not a folder"]),
    # ---------------------------------------------------------------- demo
    ("demo-episodes", ("demo", "--episodes", "0"), ["--episodes must be in 1..1000000", "nearest valid: 1"]),
    ("demo-out-file", ("demo", "--out", "{file}"), ["--out", "is an existing file, not a folder"]),
    ("demo-store-folder", ("demo", "--store", "{dir}"), ["result store", "is a folder"]),
    # ---------------------------------------------------------------- battery
    ("battery-junit-folder", ("battery", "run", "{spec}", "--junit", "{dir}"), ["--junit", "is an existing folder"]),
    (
        "battery-junit-extension",
        ("battery", "run", "{spec}", "--junit", "{work}/out.txt"),
        ["--junit", "unsupported extension '.txt'", "out.xml"],
    ),
    (
        "battery-report-file",
        ("battery", "run", "{spec}", "--report", "{file}"),
        ["--report", "is an existing file, not a folder"],
    ),
    ("battery-store-folder", ("battery", "run", "{spec}", "--store", "{dir}"), ["result store", "is a folder"]),
    ("battery-missing-file", ("battery", "run", "{work}/nope.toml"), ["nope.toml"]),
    ("battery-nan-threshold", ("battery", "run", "{nan_spec}"), ["threshold 'nan'", "finite"]),
    ("battery-no-paths", ("battery", "run"), ["missing argument"]),
    # ---------------------------------------------------------------- results
    ("results-no-store", ("results",), ["no results store at", "--store"]),
    ("results-store-missing", ("results", "--store", "{work}/none.duckdb"), ["result store", "does not exist"]),
    (
        "results-export-folder",
        ("results", "--store", "{store}", "--export", "{dir}"),
        ["--export", "is an existing folder"],
    ),
    (
        "results-export-extension",
        ("results", "--store", "{store}", "--export", "{work}/all.csv"),
        ["unsupported extension '.csv'", "all.parquet"],
    ),
    (
        "results-export-under-file",
        ("results", "--store", "{store}", "--export", "{file}/all.parquet"),
        ["--export", "is a file, not a folder"],
    ),
    # ---------------------------------------------------------------- sae
    (
        "sae-width-zero",
        ("sae", "train", MAZE, "--hook", HOOK, "--width", "0"),
        ["--width must be in 2..", "nearest valid: 2"],
    ),
    (
        "sae-batch-size",
        ("sae", "train", MAZE, "--hook", HOOK, "--batch-size", "0"),
        ["--batch-size", "nearest valid: 1"],
    ),
    ("sae-tokens", ("sae", "train", MAZE, "--hook", HOOK, "--tokens", "-1"), ["--tokens", "nearest valid: 1"]),
    ("sae-lr-nan", ("sae", "train", MAZE, "--hook", HOOK, "--lr", "nan"), ["--lr must be a finite number"]),
    ("sae-lr-zero", ("sae", "train", MAZE, "--hook", HOOK, "--lr", "0"), ["--lr must be in (0, 1]"]),
    (
        "sae-l1-negative",
        ("sae", "train", MAZE, "--hook", HOOK, "--arch", "standard", "--l1", "-1"),
        ["--l1 must be > 0"],
    ),
    ("sae-k-zero", ("sae", "train", MAZE, "--hook", HOOK, "--k", "0"), ["--k must be >= 1", "nearest valid: 1"]),
    ("sae-k-width", ("sae", "train", MAZE, "--hook", HOOK, "--k", "64"), ["k must be in [1, width)"]),
    (
        "sae-arch",
        ("sae", "train", MAZE, "--hook", HOOK, "--arch", "topkk"),
        ["unknown SAE architecture 'topkk'", "topk"],
    ),
    ("sae-hook", ("sae", "train", MAZE, "--hook", "embedder.block2.res1.resad_out"), ["unknown hook", HOOK]),
    ("sae-subject", ("sae", "train", "tiny-mazee", "--hook", HOOK), ["unknown artifact 'tiny-mazee'", "tiny-maze"]),
    ("sae-out-file", ("sae", "train", MAZE, "--hook", HOOK, "--out", "{file}"), ["--out", "is an existing file"]),
    ("sae-info-unknown", ("sae", "info", "foo"), ["unknown SAE 'foo'"]),
    ("sae-eval-episodes", ("sae", "eval", "foo", "--episodes", "0"), ["--episodes", "nearest valid: 1"]),
    ("sae-eval-store", ("sae", "eval", "foo", "--store", "{dir}"), ["result store", "is a folder"]),
    # ---------------------------------------------------------------- lm
    ("lm-eval-n", ("lm", "eval", "some-lm", "--n", "0"), ["--n must be in 1..1000000", "nearest valid: 1"]),
    ("lm-eval-seed", ("lm", "eval", "some-lm", "--seed", "-1"), ["--seed", "nearest valid: 0"]),
    ("lm-eval-store", ("lm", "eval", "some-lm", "--store", "{dir}"), ["result store", "is a folder"]),
    ("lm-eval-unknown", ("lm", "eval", "no-such-lm"), ["no-such-lm"]),
    ("lm-steer-coef-nan", ("lm", "steer", "some-lm", "--coef", "nan"), ["--coef must be a finite number"]),
    (
        "lm-steer-coef-list",
        ("lm", "steer", "some-lm", "--coef", "1", "--coef", "abc"),
        ["--coef must be a finite number", "'abc'"],
    ),
    ("lm-steer-layer", ("lm", "steer", "some-lm", "--layer", "-1"), ["--layer must be >= 0", "nearest valid: 0"]),
    ("lm-steer-fit-frac", ("lm", "steer", "some-lm", "--fit-frac", "1.5"), ["--fit-frac must be in (0, 1)"]),
    ("lm-steer-cap", ("lm", "steer", "some-lm", "--cap-low", "2"), ["--cap-low must be in 0..1"]),
    ("lm-steer-max-new", ("lm", "steer", "some-lm", "--max-new", "0"), ["--max-new must be in 1..4096"]),
    (
        "lm-steer-dataset-missing",
        ("lm", "steer", "some-lm", "--dataset", "{work}/none.jsonl"),
        ["none.jsonl", "does not exist"],
    ),
    ("lm-ablate-layer", ("lm", "ablate", "some-lm", "--layer", "1", "--layer", "-2"), ["--layer must be >= 0"]),
    (
        "lm-directions-n-fit",
        ("lm", "directions", "some-lm", "--n-fit", "5"),
        ["--n-fit must be in 20..1000000", "nearest valid: 20"],
    ),
    (
        "lm-directions-save-ext",
        ("lm", "directions", "some-lm", "--dataset", "{file}", "--save", "{work}/v.npy"),
        ["--save", "unsupported extension '.npy'", "v.safetensors"],
    ),
    (
        "lm-directions-save-alone",
        ("lm", "directions", "some-lm", "--save", "{work}/v.safetensors"),
        ["--save", "--dataset"],
    ),
    ("lm-monitor-n", ("lm", "monitor", "some-lm", "--n", "2000000"), ["--n", "nearest valid: 1000000"]),
    ("lm-train-missing", ("lm", "train", "{work}/lm.toml"), ["lm.toml", "does not exist"]),
    ("lm-train-steps", ("lm", "train", "{recipe}", "--steps", "0"), ["--steps must be >= 1"]),
    # ---------------------------------------------------------------- patch
    ("patch-n", ("patch", "some-lm", "--n", "0"), ["--n must be in 1..1000000", "nearest valid: 1"]),
    ("patch-n-boot", ("patch", "some-lm", "--n-boot", "-1"), ["--n-boot must be in 0..100000", "nearest valid: 0"]),
    ("patch-top", ("patch", "some-lm", "--top", "0"), ["--top", "nearest valid: 1"]),
    ("patch-max-batch", ("patch", "some-lm", "--max-batch", "0"), ["--max-batch must be >= 1"]),
    ("patch-mode", ("patch", "some-lm", "--mode", "nosing"), ["unknown mode 'nosing'", "did you mean: noising"]),
    (
        "patch-activation",
        ("patch", "some-lm", "--activation", "resid_prex"),
        ["unknown activation 'resid_prex'", "resid_pre"],
    ),
    ("patch-per", ("patch", "some-lm", "--per", "position"), ["unknown per 'position'", "pos"]),
    (
        "patch-persona",
        ("patch", "some-lm", "--clean-persona", "honset"),
        ["unknown persona 'honset'", "did you mean: honest"],
    ),
    ("patch-same-persona", ("patch", "some-lm", "--corrupt-persona", "honest"), ["both 'honest'", "two personas"]),
    ("patch-cue", ("patch", "some-lm", "--cue", "shout"), ["unknown cue 'shout'"]),
    ("patch-pairs-missing", ("patch", "some-lm", "--pairs", "{work}/pairs.jsonl"), ["pairs.jsonl", "does not exist"]),
    ("patch-store", ("patch", "some-lm", "--store", "{file}/r.duckdb"), ["result store", "is a file, not a folder"]),
    # ---------------------------------------------------------------- app
    ("app-remote", ("app", "--address", "0.0.0.0"), ["--address 0.0.0.0", "--allow-remote"]),
    ("app-remote-ip", ("app", "--address", "192.168.1.5", "--port", "8600"), ["--allow-remote"]),
    ("app-port-zero", ("app", "--port", "0"), ["--port must be in 1..65535", "nearest valid: 1"]),
    ("app-port-huge", ("app", "--port", "70000"), ["--port", "nearest valid: 65535"]),
    ("app-port-text", ("app", "--port", "http"), ["--port must be an integer", "'http'"]),
]


def _tree(root: Path) -> list[tuple[str, int | None]]:
    """Every path under `root` with its size (None for folders): what 'nothing written' is checked against."""
    return sorted(
        (str(p.relative_to(root)), None if p.is_dir() else p.stat().st_size)
        for p in root.rglob("*")
        if p.name != "__pycache__"
    )


@pytest.fixture()
def places(registry: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A working folder (the cwd) with an existing file and folder, battery files, a hidden temporary agent folder,
    a hidden SAE folder and (lazily) a results store; returns the placeholder values."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (work / "notes.txt").write_text("hello\n")
    (work / "existing").mkdir()
    (work / "recipe.toml").write_text('name = "x"\n')
    (work / "ok.toml").write_text(SPEC.replace("THRESHOLD", ">= 0.0"))
    (work / "nan.toml").write_text(SPEC.replace("THRESHOLD", ">= nan"))
    hidden = registry / "agents" / ".tiny-maze.ab12cd"  # what a killed artifact write leaves behind
    shutil.copytree(registry / "agents" / MAZE, hidden)
    sae = registry / "saes" / ".foo.ab12cd"
    sae.mkdir(parents=True)
    (sae / "cfg.json").write_text("{}")
    return {
        "work": str(work),
        "file": str(work / "notes.txt"),
        "dir": str(work / "existing"),
        "hidden": str(hidden),
        "spec": str(work / "ok.toml"),
        "nan_spec": str(work / "nan.toml"),
        "recipe": str(work / "recipe.toml"),
        "store": str(tmp_path / "made.duckdb"),
    }


def _make_store(path: Path) -> None:
    from workbench.store import ResultStore

    with ResultStore(path) as db:
        db.add([{"run_id": "r1", "subject": "s", "metric": "m", "value": 1.0}])


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input_is_one_line_exit_2_nothing_written(case, places, cli, tmp_path, monkeypatch) -> None:
    name, args, wants, *rest = case
    for key, value in (rest[0] if rest else {}).items():
        monkeypatch.setenv(key, value.format(**places))
    if "{store}" in " ".join(args):
        _make_store(Path(places["store"]))
    before = _tree(tmp_path)
    code, out, err = cli(*[a.format(**places) for a in args])
    assert code == 2, (name, code, out, err)
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, (name, err)
    assert "Traceback" not in err and "Usage:" not in err and "╭" not in err, (name, err)
    for want in wants:
        assert want in err, (name, want, err)
    assert ".tiny-maze.ab12cd" not in err or "hidden temporary folder" in err, (name, err)  # never offered
    assert ".foo" not in err, (name, err)  # a hidden SAE folder is not an SAE
    assert _tree(tmp_path) == before, (name, "the disk changed")


def test_corpus_size() -> None:
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)
    commands = {c[1][0] for c in CASES}
    assert {
        "eval",
        "steer",
        "probe",
        "hooks",
        "vector-field",
        "collect",
        "train",
        "battery",
        "results",
        "demo",
    } <= commands
    assert {"sae", "lm", "patch", "app"} <= commands


def test_help_shows_the_ranges(cli) -> None:
    code, out, _ = cli("eval", "--help")
    assert code == 0 and "1..1000000" in out and "0..4294967295" in out
    code, out, _ = cli("sae", "train", "--help")
    assert code == 0 and "2..16777216" in out
