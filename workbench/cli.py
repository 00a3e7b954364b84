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


def _check_split(split: str) -> None:
    from workbench.errors import unknown
    from workbench.rl.envs.maze import SPLITS

    if split not in SPLITS:
        raise unknown("split", split, SPLITS)


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


@app.command("eval")
def eval_cmd(
    artifact: Annotated[str, typer.Argument(help="artifact name (maze-cheese-corner) or folder")],
    split: SplitOpt = "ood",
    episodes: EpisodesOpt = 500,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    env: Annotated[
        str, typer.Option(help="native (the artifact's own env), or procgen-maze / procgen-coinrun for a .pth file")
    ] = "native",
) -> None:
    """Goal rates with Wilson 95% intervals on fresh levels: maze (cheese, corner_first, timeout) or CoinRun
    (coin, exit, exit_without_coin, timeout)."""
    if env != "native":
        from workbench.rl.procgen_cli import eval_procgen

        out = eval_procgen(artifact, env, split, episodes, seed)
        if as_json:
            _dump(out)
            return
        for key, value in out["rates"].items():
            lo, hi = out["ci95"][key]
            typer.echo(f"{key:>17}: {value:.3f}  [{lo:.3f}, {hi:.3f}]")
        return
    from workbench.rl.agent import load_agent
    from workbench.rl.rollout import evaluate

    _check_split(split)
    agent = load_agent(artifact)
    summary = evaluate(agent.policy, split, episodes, seed, agent.env_config).rates()
    out = {
        "artifact": agent.name,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "rates": summary["rates"],
        "ci95": summary["ci95"],
        "informative": summary["informative"],
    }
    if agent.env_kind == "coinrun":
        out["died"] = summary["died"]
    if as_json:
        _dump(out)
        return
    for key, value in out["rates"].items():
        lo, hi = out["ci95"][key]
        typer.echo(f"{key:>{17 if agent.env_kind == 'coinrun' else 13}}: {value:.3f}  [{lo:.3f}, {hi:.3f}]")
    inf = out["informative"]
    if agent.env_kind == "coinrun":
        lo, hi = out["died"]["ci95"]
        typer.echo(f"{'died':>17}: {out['died']['rate']:.3f}  [{lo:.3f}, {hi:.3f}]")
        for key in ("coin", "exit_without_coin"):
            lo, hi = inf["ci95"][key]
            typer.echo(
                f"{key} where the coin is away from the exit (n={inf['n']}): "
                f"{inf['rates'][key]:.3f}  [{lo:.3f}, {hi:.3f}]"
            )
        return
    lo, hi = inf["ci95"]["corner_first"]
    typer.echo(
        f"corner_first where start and cheese are outside the region (n={inf['n']}): "
        f"{inf['rates']['corner_first']:.3f}  [{lo:.3f}, {hi:.3f}]"
    )


@app.command()
def steer(
    artifact: Annotated[str, typer.Argument(help="artifact name or folder")],
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
) -> None:
    """Steer with the cheese vector or a probe direction; compare with the un-intervened run and a random
    equal-norm control on the same levels."""
    from workbench.rl.agent import load_agent
    from workbench.rl.steering import steer_experiment

    _check_split(split)
    agent = load_agent(artifact)
    if agent.env_kind == "coinrun" and vector == "cheese":
        vector = "coin"  # the option's default is the maze's vector; CoinRun's counterpart is the coin vector
    result = steer_experiment(
        agent, vector, coef, layer, split, episodes, seed, probe_target, probe_method, probe_episodes
    )
    if as_json:
        _dump(result)
        return
    if agent.env_kind == "coinrun":
        from workbench.rl.coinrun.steering import steering_text

        typer.echo(steering_text(result))
        return
    from workbench.report import steering_table

    typer.echo(steering_table(result))


@app.command()
def probe(
    artifact: Annotated[str, typer.Argument(help="artifact name or folder")],
    layer: Annotated[list[str] | None, typer.Option(help="hook name (repeatable); default: every residual sum")] = None,
    fit_split: SplitOpt = "ood",
    n_fit: Annotated[int | None, typer.Option(min=1, help="levels to fit on (maze: 2000, CoinRun: 300)")] = None,
    n_test: Annotated[int | None, typer.Option(min=1, help="held-out levels per split (maze 500, CoinRun 200)")] = None,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
) -> None:
    """Maze: cheese-location spatial probes per layer (held-out top-1 accuracy on train and ood). CoinRun: coin/exit
    probes per layer (coin_visible, coin_right, exit_visible, coin_at_exit, coin_dx, exit_dx). Both with controls."""
    from workbench.rl.agent import load_agent

    _check_split(fit_split)
    agent = load_agent(artifact)
    if agent.env_kind == "coinrun":
        from workbench.rl.coinrun.probes import coin_exit_probes, probes_text
        from workbench.rl.steering import DEFAULT_LAYER, check_layer

        if fit_split != "ood":
            raise WorkbenchError(
                "CoinRun coin/exit probes fit on ood levels (train pooled in for coin_at_exit); --fit-split is for "
                "maze agents"
            )
        layers = layer or [DEFAULT_LAYER]
        for name in layers:
            check_layer(agent, name)
        found = {
            name: coin_exit_probes(agent, name, fit_episodes=n_fit or 300, test_episodes=n_test or 200, seed=seed)
            for name in layers
        }
        if as_json:
            _dump({"artifact": agent.name, "rows": [{"layer": k, **r} for k, rows in found.items() for r in rows]})
            return
        typer.echo("\n\n".join(probes_text(rows, name) for name, rows in found.items()))
        return
    from workbench.rl.cheese_probe import DEFAULT_LAYERS, cheese_location_probes

    rows = cheese_location_probes(agent, layer or DEFAULT_LAYERS, fit_split, n_fit or 2000, n_test or 500, seed)
    if as_json:
        _dump({"artifact": artifact, "rows": rows})
        return
    from workbench.report import probe_table

    typer.echo(probe_table(rows))


@app.command("hooks")
def hooks_cmd(artifact: Annotated[str, typer.Argument(help="artifact name or folder")]) -> None:
    """List the hook names of an agent with their activation shapes."""
    import torch

    from workbench.hooks import hook_names, run_with_cache
    from workbench.rl.agent import load_agent
    from workbench.rl.rollout import levels_for

    agent = load_agent(artifact)
    names = hook_names(agent.policy)
    levels = levels_for("ood", 1, 0, agent.env_config)  # a CoinRunConfig gives a CoinRun level
    if agent.env_kind == "coinrun":
        from workbench.rl.envs.coinrun import observe as coinrun_observe

        obs = torch.as_tensor(coinrun_observe(levels, agent.env_config.view))
    else:
        from workbench.rl.envs.maze import observe

        obs = torch.as_tensor(observe(levels))
    with torch.no_grad():
        _, cache = run_with_cache(agent.policy, obs, names_filter=names)
    for name in names:
        shape = tuple(cache[name].shape[1:]) if name in cache else "-"
        typer.echo(f"{name:45s} {shape}")


@app.command("vector-field")
def vector_field_cmd(
    artifact: Annotated[str, typer.Argument(help="artifact name or folder")],
    out: Annotated[Path, typer.Option(help="PNG to write")],
    split: SplitOpt = "ood",
    seed: Annotated[int, typer.Option(help="level seed of the maze")] = 0,
    coef: Annotated[float | None, typer.Option(help="also draw the field with coef * cheese vector")] = None,
    layer: Annotated[str, typer.Option(help="hook for the cheese vector")] = "embedder.block2.res1.resadd_out",
) -> None:
    """Draw the policy's vector field over one maze (and, with --coef, the steered field beside it)."""
    import numpy as np

    from workbench.interventions import add_vector
    from workbench.rl.agent import load_agent
    from workbench.rl.envs.maze import decision_squares, generate_levels
    from workbench.rl.steering import check_layer, cheese_vectors
    from workbench.rl.vector_field import draw, vector_field

    _check_split(split)
    agent = load_agent(artifact)
    if agent.env_kind != "maze":
        raise WorkbenchError(
            f"vector-field is for maze agents (arrows over a maze's free cells); {agent.name!r} is a "
            f"{agent.env_kind} agent: use `workbench app` (CoinRun lab) or `workbench steer {agent.name}`"
        )
    level = generate_levels(np.array([seed]), split, agent.env_config)
    fields, titles = [vector_field(agent.policy, level)], [f"{agent.name} (level {seed})"]
    if coef is not None:
        check_layer(agent, layer)
        vec = cheese_vectors(agent, level, layer)[0]
        fields.append(vector_field(agent.policy, level, [(layer, add_vector(vec, coef))]))
        titles.append(f"cheese vector x {coef:+g} at {layer.split('embedder.')[-1]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    ds = tuple(decision_squares(level)[0])
    draw(fields, titles, out, marks=[ds] * len(fields))
    typer.echo(f"wrote {out}")


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
