"""`workbench train | eval | steer | probe | hooks | vector-field | collect | kinds | demo | results | app`.

The RL side of the command line. Every verb that takes a subject goes through `workbench.subjects` (`load_subject`,
then the kind's verb), so a shipped name, an artifact folder, a published `.pth` with `--env` and a registered
subject all work the same way. Each command checks its input before any work: numbers while they are parsed
(`workbench.cli.options`), then output paths and the results store, then the subject; a mistake is one line and
exit 2, with nothing written. Measuring verbs (eval, steer, probe, collect) record one row per measurement in the
results store (`workbench.cli.rows`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench.cli.options import (
    EnvOpt,
    Episodes,
    EpisodesOpt,
    Float,
    Int,
    JsonOpt,
    Seed,
    SeedOpt,
    SplitOpt,
    StoreOpt,
    SubjectArg,
    dump,
    env_kind,
    made_parents,
    new_folder,
    output_file,
    record,
    store_path,
)
from workbench.errors import WorkbenchError

LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1", "ip6-localhost")


def _run_verb(
    name: str,
    *,
    ref: str,
    env: str | None,
    as_json: bool,
    store: Path | None = None,
    rows: Callable[[dict, str], list[dict]] | None = None,
    **options: Any,
) -> dict:
    """Load the subject, run its kind's verb `name` with `options`, record rows (when `rows` is given) and print.
    The store is checked before the subject is loaded; rows are written only after the verb succeeded."""
    from workbench.subjects import load_subject, verb

    at = store_path(store) if rows is not None else None
    subject = load_subject(ref, env=env_kind(env))
    result = verb(subject, name)(subject, **options)
    data = result.to_json()
    if rows is not None and at is not None:
        from workbench.store import new_run_id

        record(rows(data, new_run_id(name)), at)
    if as_json:
        dump(data)
    else:
        typer.echo(result.text)
    return data


def train(
    recipe: Annotated[Path, typer.Argument(help="agent recipe, e.g. agents/maze-cheese-corner.toml")],
    out: Annotated[Path | None, typer.Option(help="artifact folder (default artifacts/agents/NAME)")] = None,
    resume: Annotated[bool, typer.Option(help="resume from runs/checkpoints/NAME")] = False,
    steps: Annotated[int | None, Int(help="override total env steps (smoke runs)", lo=1)] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the organism a recipe describes and write its artifact (weights, config, card, metrics)."""
    from workbench.rl.train import train_recipe
    from workbench.validate import check_output_dir

    if out is not None:
        check_output_dir(out, name="--out")
    path = train_recipe(recipe, out=out, resume=resume, progress=progress, total_steps=steps)
    typer.echo(f"wrote {path}")


def eval_cmd(
    artifact: SubjectArg,
    split: SplitOpt = "ood",
    episodes: EpisodesOpt = 500,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    env: EnvOpt = None,
    store: StoreOpt = None,
) -> None:
    """Goal rates with Wilson 95% intervals on fresh levels, one per rate key of the subject's world (maze: cheese,
    corner_first, timeout; CoinRun: coin, exit, exit_without_coin, timeout; `workbench kinds` lists the others).
    Rows go to the results store."""
    from workbench.cli.rows import eval_rows

    _run_verb(
        "eval", ref=artifact, env=env, as_json=as_json, store=store, rows=eval_rows, split=split, episodes=episodes,
        seed=seed,
    )  # fmt: skip


def steer(
    artifact: SubjectArg,
    vector: Annotated[
        str,
        typer.Option(
            help="maze: cheese (per-maze cheese vector), top-right (procgen-tools' top-right path vector) or probe "
            "(a probe direction); CoinRun: coin; other kinds name theirs (a wrong name lists them)"
        ),
    ] = "cheese",
    coef: Annotated[float, Float(help="added as coef * vector on every forward pass (-1 subtracts)")] = -1.0,
    layer: Annotated[str, typer.Option(help="hook name")] = "embedder.block2.res1.resadd_out",
    split: SplitOpt = "ood",
    episodes: EpisodesOpt = 200,
    seed: SeedOpt = 0,
    probe_target: Annotated[
        str, typer.Option(help="with --vector probe: binary label to probe")
    ] = "outcome_corner_first",
    probe_method: Annotated[str, typer.Option(help="with --vector probe: mass_mean or logistic")] = "mass_mean",
    probe_episodes: Annotated[
        int, Episodes(help="with --vector probe (or coin): levels to fit the probe (coin vector) on", lo=10)
    ] = 600,
    convention: Annotated[
        str, typer.Option(help="maze: decision-square convention for P(cheese-ward): workbench or procgen-tools")
    ] = "workbench",
    as_json: JsonOpt = False,
    env: EnvOpt = None,
    store: StoreOpt = None,
) -> None:
    """Steer with the cheese vector, the top-right vector, a probe direction or the coin vector; compare with the
    un-intervened run and a random equal-norm control on the same levels. Rows go to the results store."""
    from workbench.cli.rows import steer_rows

    _run_verb(
        "steer",
        ref=artifact,
        env=env,
        as_json=as_json,
        store=store,
        rows=steer_rows,
        vector=vector,
        coef=coef,
        layer=layer,
        split=split,
        episodes=episodes,
        seed=seed,
        probe_target=probe_target,
        probe_method=probe_method,
        probe_episodes=probe_episodes,
        convention=convention,
    )


def probe(
    artifact: SubjectArg,
    layer: Annotated[list[str] | None, typer.Option(help="hook name (repeatable); default: every residual sum")] = None,
    fit_split: SplitOpt = "ood",
    n_fit: Annotated[int | None, Episodes(help="levels to fit on (maze: 2000, CoinRun: 300)", lo=2)] = None,
    n_test: Annotated[int | None, Episodes(help="held-out levels per split (maze 500, CoinRun 200)")] = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    env: EnvOpt = None,
    store: StoreOpt = None,
) -> None:
    """Maze: cheese-location spatial probes per layer (held-out top-1 accuracy on train and ood). CoinRun: coin/exit
    probes per layer (coin_visible, coin_right, exit_visible, coin_at_exit, coin_dx, exit_dx). Both with controls.
    Rows go to the results store."""
    from workbench.cli.rows import probe_rows

    _run_verb(
        "probe",
        ref=artifact,
        env=env,
        as_json=as_json,
        store=store,
        rows=lambda data, run_id: probe_rows(data, run_id, seed=seed),
        layers=layer,
        fit_split=fit_split,
        n_fit=n_fit,
        n_test=n_test,
        seed=seed,
    )


def hooks_cmd(artifact: SubjectArg, env: EnvOpt = None, as_json: JsonOpt = False) -> None:
    """List the hook names of an agent with their activation shapes."""
    _run_verb("hooks", ref=artifact, env=env, as_json=as_json)


def vector_field_cmd(
    artifact: SubjectArg,
    out: Annotated[Path, typer.Option(help="PNG file to write (its folder is created)")],
    split: SplitOpt = "ood",
    seed: Annotated[int, Seed(help="level seed of the maze")] = 0,
    coef: Annotated[float | None, Float(help="also draw the field with coef * cheese vector")] = None,
    layer: Annotated[str, typer.Option(help="hook for the cheese vector")] = "embedder.block2.res1.resadd_out",
    convention: Annotated[str, typer.Option(help="decision square outlined: workbench or procgen-tools")] = "workbench",
    env: EnvOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Draw the policy's vector field over one maze (and, with --coef, the steered field beside it)."""
    out = output_file(out, name="--out", suffixes=(".png",))
    with made_parents(out):
        _run_verb(
            "vector-field",
            ref=artifact,
            env=env,
            as_json=as_json,
            out=out,
            split=split,
            seed=seed,
            coef=coef,
            layer=layer,
            convention=convention,
        )


def collect(
    artifact: SubjectArg,
    hook: Annotated[list[str], typer.Option(help="hook name (repeatable)")],
    out: Annotated[
        Path | None, typer.Option(help="new dataset folder (safetensors shards + labels.parquet); must not exist")
    ] = None,
    split: SplitOpt = "ood",
    episodes: EpisodesOpt = 500,
    seed: SeedOpt = 0,
    states: Annotated[str, typer.Option(help="start (one row per level) or rollout (one per step)")] = "start",
    as_json: JsonOpt = False,
    env: EnvOpt = None,
    store: StoreOpt = None,
) -> None:
    """Record activations at the named hooks with ground-truth and outcome labels, as a dataset folder. A row
    (how many rows were collected) goes to the results store."""
    from workbench.cli.rows import collect_rows

    if out is not None:
        out = new_folder(out, name="--out")
    _run_verb(
        "collect",
        ref=artifact,
        env=env,
        as_json=as_json,
        store=store,
        rows=lambda data, run_id: collect_rows(data, run_id, split=split, seed=seed, episodes=episodes, states=states),
        hooks=hook,
        split=split,
        episodes=episodes,
        seed=seed,
        states=states,
        out=out,
    )


def kinds_cmd() -> None:
    """List the subject kinds (what --env accepts) and the verbs each supports."""
    from workbench.subjects import get_kind, kinds

    for name in kinds():
        kind = get_kind(name)
        verbs = ", ".join(sorted(v for v in kind.verbs if v != "world")) or "(see `workbench lm`)"
        typer.echo(f"{name:16s} {kind.summary}\n{'':16s} verbs: {verbs}")


def demo(
    out: Annotated[Path | None, typer.Option(help="run folder (default runs/demo-TIMESTAMP)")] = None,
    episodes: Annotated[
        int | None, Episodes(help="levels per RL evaluation and steering condition (default: the demo's own)")
    ] = None,
    full: Annotated[
        bool, typer.Option("--full", help="the README's full sizes instead of the few-minute audit")
    ] = False,
    seed: SeedOpt = 0,
    store: StoreOpt = None,
) -> None:
    """A goal audit of every shipped organism (misgeneralization vs its twin, where the goal lives, steering vs an
    equal-norm control, SAE latents, patching): a self-contained HTML report plus markdown, rows in the store."""
    from workbench.demo import run_demo
    from workbench.validate import check_output_dir

    at = store_path(store)
    if out is not None:
        out = check_output_dir(out, name="--out")
    folder = run_demo(out, episodes=episodes, seed=seed, store_path=at, full=full)
    typer.echo(f"report: {folder / 'report.html'}")


def results(
    store: Annotated[
        Path | None, typer.Option(help="results store (default $WORKBENCH_STORE, else runs/results.duckdb)")
    ] = None,
    export: Annotated[Path | None, typer.Option(help="write all rows to this .parquet file")] = None,
    run_id: Annotated[str | None, typer.Option(help="show the rows of one run")] = None,
) -> None:
    """List the runs in the results store, show one run's rows, or export everything to parquet."""
    from workbench.store import ResultStore, check_store_path, default_store_path, segments_dir

    path = store if store is not None else default_store_path()
    if store is None and not path.exists() and not segments_dir(path).is_dir():
        raise WorkbenchError(f"no results store at {path}; run `workbench demo` first or pass --store")
    path = check_store_path(path, read_only=True)
    if export is not None:
        export = output_file(export, name="--export", suffixes=(".parquet",))
    with ResultStore(path, read_only=True) as db:
        if export is not None:
            typer.echo(f"wrote {db.export_parquet(export)}")
        elif run_id is not None:
            typer.echo(db.query("run_id = ?", [run_id]).to_string(index=False))
        else:
            typer.echo(db.runs().to_string(index=False))


def app_cmd(
    port: Annotated[int, Int(help="port", lo=1, hi=65535)] = 8501,
    address: Annotated[
        str, typer.Option(help="bind address (default: localhost only; anything else needs --allow-remote)")
    ] = "localhost",
    allow_remote: Annotated[
        bool, typer.Option("--allow-remote", help="allow a non-local --address (the app has no authentication)")
    ] = False,
) -> None:
    """Start the Streamlit app (offline: no usage stats, no browser launch). Ctrl-C or SIGTERM stops it."""
    import os

    from workbench.artifacts import repo_root

    local = address in LOCAL_ADDRESSES or address.startswith("127.")
    if not local and not allow_remote:
        raise WorkbenchError(
            f"--address {address} would expose the app (no authentication) beyond this machine; "
            "pass --allow-remote to mean it, or use --address localhost"
        )
    home = repo_root() / "app" / "Home.py"
    if not home.is_file():
        raise WorkbenchError(f"app not found at {home}")
    if not local:
        typer.echo(
            f"warning: serving the app on {address}:{port}: anyone who can reach this address can use it "
            "(no authentication)",
            err=True,
        )
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
    # Small convolutions run several times faster on one thread than on two when the cores are shared.
    env = {**os.environ, "WORKBENCH_THREADS": os.environ.get("WORKBENCH_THREADS", "1")}
    raise typer.Exit(run_child(cmd, env=env))


def run_child(cmd: list[str], *, env: dict[str, str] | None = None, grace_s: float = 10.0) -> int:
    """Run `cmd` as a child process until it exits; SIGINT and SIGTERM sent to this process are forwarded to it and
    waited for (killed after `grace_s` seconds), so stopping `workbench app` stops the Streamlit server too.
    Returns the child's exit code (128 + signal number when a signal ended it)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, env=env)
    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    watched = [signal.SIGINT, signal.SIGTERM]
    previous = {s: signal.signal(s, forward) for s in watched}
    deadline: float | None = None
    try:
        while True:
            try:
                code = proc.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                if received and deadline is None:
                    deadline = time.monotonic() + grace_s
                if deadline is not None and time.monotonic() > deadline:  # asked to stop and did not: end it
                    proc.kill()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code if code >= 0 else 128 - code


def register(app: typer.Typer) -> None:
    """Add the RL commands (and `kinds`, `demo`, `results`, `app`) to the main app."""
    app.command()(train)
    app.command("eval")(eval_cmd)
    app.command()(steer)
    app.command()(probe)
    app.command("hooks")(hooks_cmd)
    app.command("vector-field")(vector_field_cmd)
    app.command()(collect)
    app.command("kinds")(kinds_cmd)
    app.command()(demo)
    app.command()(results)
    app.command("app")(app_cmd)
