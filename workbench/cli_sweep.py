"""`workbench sweep` and `workbench audit`: train a population of seeds on an executor, and audit it.

Hooked into the main app with `register(app)`. Heavy imports (torch, ray) live inside the command bodies so
`workbench --help` stays fast. Bad input (a seed range that does not parse, an unknown grid key, an unreachable Ray
address, a folder holding another recipe's population) is a `WorkbenchError`: one line, exit 2, nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer


def sweep_cmd(
    recipe: Annotated[Path, typer.Argument(help="agent recipe, e.g. agents/sweep/maze-corner-fast.toml")],
    seeds: Annotated[str, typer.Option(help="seed range: 0-7, 3, or 0-3,8")],
    out: Annotated[Path, typer.Option(help="population folder (runs, records, artifacts)")],
    grid: Annotated[
        list[str] | None, typer.Option(help="recipe knob to vary, KEY=V1,V2 (e.g. env.region=3,5); repeatable")
    ] = None,
    executor: Annotated[str, typer.Option(help="serial | process | ray")] = "serial",
    address: Annotated[
        str | None, typer.Option(help="join this Ray cluster (HOST:PORT or auto) instead of a local one")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="runs in parallel (default 2; serial: 1)")] = None,
    store: Annotated[Path | None, typer.Option(help="results store (default runs/results.duckdb)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the sweep summary as JSON")] = False,
) -> None:
    """Train RECIPE once per seed (and grid point) into OUT; finished runs are skipped, a killed sweep resumes.
    Exit 1 if a run failed (its train.log says why)."""
    from workbench.errors import WorkbenchError
    from workbench.sweep import parse_seeds, run_sweep

    seed_list = parse_seeds(seeds)
    if workers is not None and workers < 1:
        raise WorkbenchError(f"--workers must be >= 1, got {workers}")
    result = run_sweep(
        recipe,
        seed_list,
        grid or None,
        executor=executor,
        address=address,
        out=out,
        workers=workers,
        store=store,
        progress=progress,
    )
    summary = result.to_json()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        typer.echo(
            f"{summary['done']} trained, {summary['skipped']} already done, {summary['failed']} failed in "
            f"{summary['seconds']:.0f} s ({executor}); population in {out}"
        )
    for run in result.failed:
        typer.echo(f"failed: {run['run_id']}: {run['error']} (see {out}/runs/{run['run_id']}/train.log)", err=True)
    if result.failed:
        raise typer.Exit(1)


def audit_cmd(
    population: Annotated[Path, typer.Argument(help="population folder made by `workbench sweep`")],
    control: Annotated[Path | None, typer.Option(help="the control twin's population folder")] = None,
    threshold: Annotated[str, typer.Option(help="proxy label: rate > median | control | a number")] = "median",
    episodes: Annotated[int, typer.Option(help="training-distribution levels the detectors see")] = 256,
    seed: Annotated[int, typer.Option(help="seed for the audit levels, the fit/held-out split and bootstraps")] = 0,
    layer: Annotated[
        str | None,
        typer.Option(
            help="hook the white-box detectors read (default: the kind's, e.g. embedder.block2.res1.resadd_out)"
        ),
    ] = None,
    holdout: Annotated[float, typer.Option(help="share of seeds held out for scoring")] = 0.5,
    pool: Annotated[
        bool, typer.Option(help="audit the population and its --control twin together (one auditing game)")
    ] = False,
    sae: Annotated[bool, typer.Option(help="train a small SAE per seed for the sae_* detectors (seconds each)")] = True,
    detectors: Annotated[
        bool, typer.Option(help="score the detectors; --no-detectors: the population analysis only (any recipe kind)")
    ] = True,
    figure: Annotated[Path | None, typer.Option(help="write the population figure (PNG) here")] = None,
    out: Annotated[Path | None, typer.Option(help="write audit.json and audit.md into this folder")] = None,
    store: Annotated[Path | None, typer.Option(help="also add the detector table to this results store")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the audit as JSON")] = False,
) -> None:
    """Which seeds will pursue the proxy out of distribution, predicted from training-distribution inputs and
    internals: detector AUROC and recall at 1% FPR on held-out seeds, against a black-box baseline."""
    from workbench.audit import run_audit
    from workbench.validate import check_output_dir, check_output_file, strict_json

    if figure is not None:
        check_output_file(figure, name="--figure", suffixes=(".png",))
    if out is not None:
        check_output_dir(out, name="audit output folder")
    try:
        number = float(threshold)
    except ValueError:
        number = None
    result = run_audit(
        population,
        control,
        threshold=number if number is not None else threshold,
        episodes=episodes,
        seed=seed,
        layer=layer,
        holdout=holdout,
        pool=pool,
        sae=sae,
        detectors=detectors,
        progress=not as_json,
    )
    data = result.to_json()
    if figure is not None:
        from workbench.audit import population_figure

        population_figure(result, figure)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "audit.json").write_text(strict_json(data, indent=2) + "\n")
        (out / "audit.md").write_text(result.markdown() + "\n")
    if store is not None:
        from workbench.store import ResultStore, new_run_id

        run_id = new_run_id("audit")
        rows = []
        for name, row in result.table["detectors"].items():
            if not row.get("available"):
                continue
            rows.append(
                {
                    "run_id": run_id,
                    "subject": str(population),
                    "split": "train",
                    "seed": seed,
                    "intervention": "none",
                    "metric": f"audit.{name}.auroc",
                    "value": row["auroc"],
                    "ci_low": row["auroc_ci95"][0],
                    "ci_high": row["auroc_ci95"][1],
                    "n": row["n_heldout"],
                    "extra": {"recall_at_1pct_fpr": row["recall_at_1pct_fpr"], "sign": row["sign"]},
                }
            )
        with ResultStore(store) as db:
            db.add(rows)
    if as_json:
        typer.echo(strict_json(data, indent=2))
    else:
        typer.echo(result.markdown())


def register(app: typer.Typer) -> None:
    """Add `workbench sweep` and `workbench audit` to the main app."""
    app.command("sweep")(sweep_cmd)
    app.command("audit")(audit_cmd)


def main() -> None:
    """`python -m workbench.cli_sweep sweep|audit ...`: these two commands on their own (the main `workbench` app
    adds them with `register`); bad input is one line on stderr and exit 2, as there."""
    import os
    import sys

    from workbench.errors import WorkbenchError

    app = typer.Typer(no_args_is_help=True, help="Populations of seeds and the goal audit.")
    register(app)
    try:
        raw = os.environ.get("WORKBENCH_THREADS", "")
        if raw:  # as the main CLI does: torch CPU threads
            if not raw.isdigit() or int(raw) < 1:
                raise WorkbenchError(f"WORKBENCH_THREADS must be a positive integer, got {raw!r}")
            import torch

            torch.set_num_threads(int(raw))
        app()
    except WorkbenchError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
