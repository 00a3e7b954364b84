"""`workbench` command line. Bad input prints one line (`error: ...`) to stderr and exits 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import WorkbenchError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="goal-workbench: find and steer the goals trained models actually learned. "
    "Set WORKBENCH_THREADS=N to fix torch's CPU threads (default: torch's own; 1 is fastest on a busy machine).",
)

SplitOpt = Annotated[str, typer.Option(help="train (cheese in the top-right region) or ood (cheese anywhere)")]
EpisodesOpt = Annotated[int, typer.Option(min=1, help="number of levels (one episode each)")]
SeedOpt = Annotated[int, typer.Option(help="seed: same seed, same levels and same sampled actions")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]


def _dump(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=None, default=float))


@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="agent recipe, e.g. agents/maze-cheese-corner.toml")],
    out: Annotated[Path | None, typer.Option(help="artifact folder (default artifacts/agents/NAME)")] = None,
    resume: Annotated[bool, typer.Option(help="resume from runs/checkpoints/NAME")] = False,
    steps: Annotated[int | None, typer.Option(help="override total env steps (smoke runs)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the organism a recipe describes and write its artifact (weights, config, card, metrics)."""
    from workbench.rl.train import train_recipe

    path = train_recipe(recipe, out=out, resume=resume, progress=progress, total_steps=steps)
    typer.echo(f"wrote {path}")


EnvOpt = Annotated[
    str | None,
    typer.Option(
        help="the env kind of a bare checkpoint file: procgen-maze or procgen-coinrun (artifact folders, shipped "
        "names and registered subjects need none; `native` means none)"
    ),
]
SubjectArg = Annotated[
    str,
    typer.Argument(
        help="a shipped name (maze-cheese-corner), an artifact folder, a published .pth with --env, a name "
        "registered with workbench.register_subject, or a factory `package.module:function`"
    ),
]


def _subject(ref: str, env: str | None):
    from workbench.subjects import load_subject

    return load_subject(ref, env=None if env in (None, "native") else env)


def _run_verb(name: str, ref: str, env: str | None, as_json: bool, **options) -> None:
    from workbench.subjects import verb

    subject = _subject(ref, env)
    result = verb(subject, name)(subject, **options)
    if as_json:
        _dump(result.to_json())
    else:
        typer.echo(result.text)


@app.command("eval")
def eval_cmd(
    artifact: SubjectArg,
    split: SplitOpt = "ood",
    episodes: EpisodesOpt = 500,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    env: EnvOpt = None,
) -> None:
    """Goal rates with Wilson 95% intervals on fresh levels: maze (cheese, corner_first, timeout) or CoinRun
    (coin, exit, exit_without_coin, timeout)."""
    _run_verb("eval", artifact, env, as_json, split=split, episodes=episodes, seed=seed)


@app.command()
def steer(
    artifact: SubjectArg,
    vector: Annotated[
        str,
        typer.Option(help="maze: cheese (per-maze cheese vector) or probe (a probe direction); CoinRun: coin"),
    ] = "cheese",
    coef: Annotated[float, typer.Option(help="added as coef * vector on every forward pass (-1 subtracts)")] = -1.0,
    layer: Annotated[str, typer.Option(help="hook name")] = "embedder.block2.res1.resadd_out",
    split: SplitOpt = "ood",
    episodes: EpisodesOpt = 200,
    seed: SeedOpt = 0,
    probe_target: Annotated[
        str, typer.Option(help="with --vector probe: binary label to probe")
    ] = "outcome_corner_first",
    probe_method: Annotated[str, typer.Option(help="with --vector probe: mass_mean or logistic")] = "mass_mean",
    probe_episodes: Annotated[
        int, typer.Option(min=10, help="with --vector probe (or coin): levels to fit the probe (coin vector) on")
    ] = 600,
    as_json: JsonOpt = False,
    env: EnvOpt = None,
) -> None:
    """Steer with the cheese vector, a probe direction or the coin vector; compare with the un-intervened run and a
    random equal-norm control on the same levels."""
    _run_verb(
        "steer",
        artifact,
        env,
        as_json,
        vector=vector,
        coef=coef,
        layer=layer,
        split=split,
        episodes=episodes,
        seed=seed,
        probe_target=probe_target,
        probe_method=probe_method,
        probe_episodes=probe_episodes,
    )


@app.command()
def probe(
    artifact: SubjectArg,
    layer: Annotated[list[str] | None, typer.Option(help="hook name (repeatable); default: every residual sum")] = None,
    fit_split: SplitOpt = "ood",
    n_fit: Annotated[int | None, typer.Option(min=1, help="levels to fit on (maze: 2000, CoinRun: 300)")] = None,
    n_test: Annotated[int | None, typer.Option(min=1, help="held-out levels per split (maze 500, CoinRun 200)")] = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    env: EnvOpt = None,
) -> None:
    """Maze: cheese-location spatial probes per layer (held-out top-1 accuracy on train and ood). CoinRun: coin/exit
    probes per layer (coin_visible, coin_right, exit_visible, coin_at_exit, coin_dx, exit_dx). Both with controls."""
    _run_verb("probe", artifact, env, as_json, layers=layer, fit_split=fit_split, n_fit=n_fit, n_test=n_test, seed=seed)


@app.command("hooks")
def hooks_cmd(artifact: SubjectArg, env: EnvOpt = None, as_json: JsonOpt = False) -> None:
    """List the hook names of an agent with their activation shapes."""
    _run_verb("hooks", artifact, env, as_json)


@app.command("vector-field")
def vector_field_cmd(
    artifact: SubjectArg,
    out: Annotated[Path, typer.Option(help="PNG to write")],
    split: SplitOpt = "ood",
    seed: Annotated[int, typer.Option(help="level seed of the maze")] = 0,
    coef: Annotated[float | None, typer.Option(help="also draw the field with coef * cheese vector")] = None,
    layer: Annotated[str, typer.Option(help="hook for the cheese vector")] = "embedder.block2.res1.resadd_out",
    convention: Annotated[str, typer.Option(help="decision square outlined: workbench or procgen-tools")] = "workbench",
    env: EnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw the policy's vector field over one maze (and, with --coef, the steered field beside it)."""
    _check_png(out)
    _run_verb(
        "vector-field",
        artifact,
        env,
        as_json,
        out=out,
        split=split,
        seed=seed,
        coef=coef,
        layer=layer,
        convention=convention,
    )


def _check_png(out: Path) -> None:
    """`--out` must be a .png whose parent is (or can be) a folder: checked before any work."""
    if out.suffix.lower() != ".png":
        raise WorkbenchError(f"--out {str(out)!r} must end in .png (the figure is a PNG)")
    if out.is_dir():
        raise WorkbenchError(f"--out {str(out)!r} is a directory; name a .png file inside it")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise WorkbenchError(f"--out {str(out)!r}: {str(parent)!r} is a file, not a folder")
            break
    out.parent.mkdir(parents=True, exist_ok=True)


@app.command()
def collect(
    artifact: SubjectArg,
    hook: Annotated[list[str], typer.Option(help="hook name (repeatable)")],
    out: Annotated[Path | None, typer.Option(help="dataset folder (safetensors shards + labels.parquet)")] = None,
    split: SplitOpt = "ood",
    episodes: EpisodesOpt = 500,
    seed: SeedOpt = 0,
    states: Annotated[str, typer.Option(help="start (one row per level) or rollout (one per step)")] = "start",
    as_json: JsonOpt = False,
    env: EnvOpt = None,
) -> None:
    """Record activations at the named hooks with ground-truth and outcome labels, as a dataset folder."""
    if out is not None and out.exists():
        raise WorkbenchError(f"--out {str(out)!r} already exists; choose a new folder")
    _run_verb(
        "collect", artifact, env, as_json, hooks=hook, split=split, episodes=episodes, seed=seed, states=states, out=out
    )


@app.command("kinds")
def kinds_cmd() -> None:
    """List the subject kinds (what --env accepts) and the verbs each supports."""
    from workbench.subjects import get_kind, kinds

    for name in kinds():
        kind = get_kind(name)
        verbs = ", ".join(sorted(v for v in kind.verbs if v != "world")) or "(see `workbench lm`)"
        typer.echo(f"{name:16s} {kind.summary}\n{'':16s} verbs: {verbs}")


@app.command()
def demo(
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/demo-TIMESTAMP)")] = None,
    episodes: Annotated[int, typer.Option(help="levels per evaluation and steering condition")] = 200,
    seed: SeedOpt = 0,
) -> None:
    """Run the maze study end to end on the shipped artifacts: rates, probes, cheese-vector steering, report."""
    from workbench.demo import run_demo

    folder = run_demo(out, episodes=episodes, seed=seed)
    typer.echo(f"report: {folder / 'report.md'}")


@app.command()
def results(
    store: Annotated[Path | None, typer.Option(help="results store (default runs/results.duckdb)")] = None,
    export: Annotated[Path | None, typer.Option(help="write all rows to this parquet file")] = None,
    run_id: Annotated[str | None, typer.Option(help="show the rows of one run")] = None,
) -> None:
    """List the runs in the results store, show one run's rows, or export everything to parquet."""
    from workbench.store import ResultStore, default_store_path

    path = store or default_store_path()
    if not path.exists():
        raise WorkbenchError(f"no results store at {path}; run `workbench demo` first or pass --store")
    with ResultStore(path, read_only=True) as db:
        if export is not None:
            typer.echo(f"wrote {db.export_parquet(export)}")
        elif run_id is not None:
            typer.echo(db.query("run_id = ?", [run_id]).to_string(index=False))
        else:
            typer.echo(db.runs().to_string(index=False))


@app.command("app")
def app_cmd(
    port: Annotated[int, typer.Option(help="port on localhost")] = 8501,
    address: Annotated[str, typer.Option(help="bind address (default: localhost only)")] = "localhost",
) -> None:
    """Start the Streamlit app (offline: no usage stats, no browser launch)."""
    import subprocess

    from workbench.artifacts import repo_root

    home = repo_root() / "app" / "Home.py"
    if not home.is_file():
        raise WorkbenchError(f"app not found at {home}")
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(home),
        "--server.address",
        address,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--global.developmentMode",
        "false",
        "--client.toolbarMode",
        "minimal",  # no "Deploy" button: the app is a local tool
    ]
    import os

    # Small convolutions run several times faster on one thread than on two when the cores are shared.
    env = {**os.environ, "WORKBENCH_THREADS": os.environ.get("WORKBENCH_THREADS", "1")}
    raise typer.Exit(subprocess.call(cmd, env=env))


from workbench.cli_sae import sae_app  # noqa: E402

app.add_typer(sae_app, name="sae")

from workbench.cli_lm import lm_app  # noqa: E402

app.add_typer(lm_app, name="lm")

from workbench.cli_patch import register as _register_patch  # noqa: E402

_register_patch(app)

battery_app = typer.Typer(no_args_is_help=True, help="Probe batteries: declarative checks run against artifacts.")
app.add_typer(battery_app, name="battery")


@battery_app.command("run")
def battery_run(
    paths: Annotated[list[Path], typer.Argument(help="battery files or folders of *.toml (e.g. probes/)")],
    as_json: JsonOpt = False,
    junit: Annotated[Path | None, typer.Option(help="write a JUnit XML report here")] = None,
    report: Annotated[Path | None, typer.Option(help="write battery.md into this folder")] = None,
    store: Annotated[Path | None, typer.Option(help="results store (default runs/results.duckdb)")] = None,
) -> None:
    """Run every check; exit 0 if all expectations hold, 1 if any falls short, 2 if a spec is invalid."""
    from rich.console import Console

    from workbench.battery import load_checks, run_check, to_json, to_store_rows, write_reports
    from workbench.store import ResultStore, default_store_path, new_run_id

    checks = load_checks(paths)  # validates everything first: a bad spec exits 2 before any work
    console = Console(stderr=True, soft_wrap=True)  # failure lines must stay whole for logs and greps
    run_id = new_run_id("battery")
    results = []
    for i, check in enumerate(checks, start=1):
        with console.status(f"[{i}/{len(checks)}] {check.name}"):
            result = run_check(check)
        results.append(result)
        verdict = "[green]pass[/green]" if result.passed else "[red]FAIL[/red]"
        console.print(f"{verdict} {check.name} ({result.seconds:.1f} s)")
        for line in result.failures():
            console.print(f"     {line}", highlight=False)
    with ResultStore(store or default_store_path()) as db:
        db.add(to_store_rows(results, run_id))
    write_reports(results, run_id, None, junit, report)
    if as_json:
        _dump(to_json(results, run_id))
    failed = [r for r in results if not r.passed]
    console.print(f"{len(results) - len(failed)} passed, {len(failed)} failed (run {run_id})")
    if failed:
        raise typer.Exit(1)


THREADS_ENV = "WORKBENCH_THREADS"


def _set_threads() -> None:
    """torch CPU threads from $WORKBENCH_THREADS (unset: torch's default, one per core). Under load, torch's default
    made the tiny policy convs ~10x slower than 1 thread; torch is imported only when the variable is set."""
    import os

    raw = os.environ.get(THREADS_ENV, "")
    if not raw:
        return
    if not raw.isdigit() or int(raw) < 1:
        raise WorkbenchError(f"{THREADS_ENV} must be a positive integer (torch CPU threads), got {raw!r}")
    import torch

    torch.set_num_threads(int(raw))


def main() -> None:
    """Console-script entry: user mistakes become one line on stderr and exit code 2."""
    try:
        _set_threads()
        app()
    except WorkbenchError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
