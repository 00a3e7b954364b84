"""`workbench retarget SUBJECT`: find the goal channels of a layer and retarget the agent to other cells, with controls.

Kept out of cli.py so that file stays a list of commands; `register(app)` adds the command. The command calls the
subject's `retarget` verb (`workbench.rl.retarget.retarget_maze` for maze-family kinds). Bad input (a target on a
wall or outside the maze, a layer without spatial channels, an empty channel set, ...) prints one line
(`error: ...`) to stderr and exits 2, whether or not the main app's entry point wraps the command.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from workbench.errors import WorkbenchError


def _ints(raw: str | None, what: str) -> list[int] | None:
    if raw is None:
        return None
    parts = [p.strip() for p in raw.split(",")]
    if raw.strip() == "" or (len(parts) == 1 and parts[0] == ""):
        return []
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise WorkbenchError(f"{what} must be comma-separated integers, got {raw!r}") from None


def _floats(raw: str, what: str) -> list[float]:
    if raw.strip() in ("", "none"):
        return []
    try:
        return [float(p) for p in raw.split(",")]
    except ValueError:
        raise WorkbenchError(f"{what} must be comma-separated numbers, got {raw!r}") from None


def retarget_cmd(
    subject: Annotated[
        str | None,
        typer.Argument(
            help="a shipped name (maze-cheese-corner), an artifact folder, a published .pth with --env, a name "
            "registered with workbench.register_subject, or a factory `package.module:function` (omit with "
            "--population)"
        ),
    ] = None,
    layer: Annotated[
        str | None,
        typer.Option(
            help="spatial hook (C, H, W) to find goal channels in and edit (default: the subject kind's own, "
            "embedder.block2.res1.resadd_out for mazes)"
        ),
    ] = None,
    episodes: Annotated[int, typer.Option(min=1, help="evaluated (maze, target) pairs, one target per maze")] = 200,
    seed: Annotated[int, typer.Option(help="seed: same seed, same mazes, targets, channels and actions")] = 0,
    split: Annotated[str, typer.Option(help="split of the evaluated mazes (ood: cheese anywhere)")] = "ood",
    n_fit: Annotated[int, typer.Option(min=10, help="fit mazes for discovery and the choice of set")] = 500,
    mode: Annotated[
        str | None,
        typer.Option(
            help="clamp (set the channels at the target) or add (raise them there); default clamp, add with --sae"
        ),
    ] = None,
    sae: Annotated[
        str | None,
        typer.Option(
            help="rank and push the latents of this SAE (a shipped name or folder, trained at --layer) instead of "
            "channels: each latent's decoder direction is added at the target cell"
        ),
    ] = None,
    channels: Annotated[
        str | None, typer.Option(help="use these channels (comma-separated) instead of the discovered set")
    ] = None,
    size: Annotated[int | None, typer.Option(help="fix the set size (default: chosen on fit mazes)")] = None,
    magnitude: Annotated[
        float | None, typer.Option(help="fix the push in std units (default: chosen on fit mazes)")
    ] = None,
    magnitudes: Annotated[
        str, typer.Option(help="pushes (std units, comma-separated) the fit mazes choose from")
    ] = "1,2,4,8,16",
    target: Annotated[
        str | None, typer.Option(help="ROW,COL: one target cell for every maze where it is free (default: sampled)")
    ] = None,
    offsets: Annotated[
        str, typer.Option(help="uniform offsets to check, std units, comma-separated ('none' to skip)")
    ] = "-1,1",
    n_boot: Annotated[
        int, typer.Option(min=0, help="bootstraps of the fit mazes for ranking stability (0: skip)")
    ] = 20,
    greedy: Annotated[bool, typer.Option(help="take the most likely action instead of sampling")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    env: Annotated[
        str | None,
        typer.Option(help="the env kind of a bare checkpoint file: procgen-maze (folders and names need none)"),
    ] = None,
    population: Annotated[
        str | None,
        typer.Option(
            help="a population folder (made by `workbench sweep`): run the experiment on every seed and report what "
            "compares across seeds (instead of SUBJECT)"
        ),
    ] = None,
    max_seeds: Annotated[
        int | None, typer.Option(min=1, help="with --population: only the first N seeds (by run id)")
    ] = None,
) -> None:
    """Discover the goal channels of a layer on fit mazes, clamp them at a target cell on >= 200 evaluated (maze,
    target) pairs, and compare with random channel sets, the single best channel by correlation and no intervention:
    retarget success, normalised path probability and causal-intervention score, each with a 95% interval, plus the
    uniform-offset check. With --population, the same on every seed of a population, with the across-seed summary."""
    try:
        from workbench.subjects import load_subject, verb
        from workbench.validate import strict_jsonable

        if (subject is None) == (population is None):
            raise WorkbenchError("give either SUBJECT or --population DIR (a folder made by `workbench sweep`)")
        if sae is not None and population is not None:
            raise WorkbenchError("--sae applies to one subject; the shipped SAEs belong to single agents")
        if population is not None:
            _population(
                population,
                layer or "embedder.block2.res1.resadd_out",
                episodes,
                seed,
                n_fit,
                n_boot,
                mode or "clamp",
                max_seeds,
                _floats(magnitudes, "--magnitudes"),
                as_json,
            )
            return
        if max_seeds is not None:
            raise WorkbenchError("--max-seeds applies to --population only")
        chans = _ints(channels, "--channels")
        cell = _ints(target, "--target")
        if cell is not None and len(cell) != 2:
            raise WorkbenchError(f"--target is ROW,COL (one cell), got {target!r}")
        subj = load_subject(subject, env=None if env in (None, "native") else env)
        result = verb(subj, "retarget")(
            subj,
            **({"layer": layer} if layer is not None else {}),
            episodes=episodes,
            seed=seed,
            split=split,
            n_fit=n_fit,
            mode=mode,
            channels=chans,
            size=size,
            magnitude=magnitude,
            magnitudes=_floats(magnitudes, "--magnitudes"),
            target=cell,
            offsets=_floats(offsets, "--offsets"),
            n_boot=n_boot,
            greedy=greedy,
            **({"sae": sae} if sae is not None else {}),
        )
    except WorkbenchError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(strict_jsonable(result.to_json()), allow_nan=False))
    else:
        typer.echo(result.text)


def _population(
    folder: str,
    layer: str,
    episodes: int,
    seed: int,
    n_fit: int,
    n_boot: int,
    mode: str,
    max_seeds: int | None,
    magnitudes: list[float],
    as_json: bool,
) -> None:
    import sys

    from workbench.rl.retarget_population import PopulationRetargetConfig, population_text, retarget_population
    from workbench.validate import strict_jsonable

    config = PopulationRetargetConfig(
        layer=layer,
        episodes=episodes,
        seed=seed,
        n_fit=n_fit,
        n_boot=max(n_boot, 2),
        max_seeds=max_seeds,
        mode=mode,
        magnitudes=tuple(magnitudes),
    )
    result = retarget_population(folder, config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    typer.echo(json.dumps(strict_jsonable(result), allow_nan=False) if as_json else population_text(result))


def register(app: typer.Typer) -> None:
    """Add `workbench retarget` to the main app."""
    app.command("retarget")(retarget_cmd)


def main() -> None:
    """`python -m workbench.cli_retarget SUBJECT ...`: the command on its own, until the main CLI registers it."""
    import os

    raw = os.environ.get("WORKBENCH_THREADS", "")
    if raw.isdigit() and int(raw) >= 1:
        import torch

        torch.set_num_threads(int(raw))
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    app.command()(retarget_cmd)
    app()


if __name__ == "__main__":
    main()
