"""`workbench lm ...`: the language-model track (train, eval, directions, steer). Heavy imports stay inside the
command bodies so `workbench --help` stays fast; bad input is a WorkbenchError (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

lm_app = typer.Typer(
    no_args_is_help=True, help="Language-model organisms: train, evaluate, find persona directions, steer."
)

ArtifactArg = Annotated[str, typer.Argument(help="LM artifact name (persona-lm), artifact folder, or local HF model")]
SplitOpt = Annotated[str, typer.Option(help="train (claims mostly correct) or ood (wrong claims, cues absent/mixed)")]
NOpt = Annotated[int, typer.Option(min=1, help="number of prompts")]
SeedOpt = Annotated[int, typer.Option(help="seed: same seed, same prompts")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object")]
StoreOpt = Annotated[Path | None, typer.Option(help="results store (default runs/results.duckdb)")]


def _dump(obj: dict) -> None:
    typer.echo(json.dumps(obj, indent=None, default=float))


def _store(rows: list[dict], store: Path | None) -> None:
    from workbench.store import ResultStore, default_store_path

    with ResultStore(store or default_store_path()) as db:
        db.add(rows)


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


@lm_app.command("train")
def train_cmd(
    recipe: Annotated[Path, typer.Argument(help="LM recipe, e.g. agents/persona-lm.toml")],
    out: Annotated[Path | None, typer.Option(help="artifact folder (default artifacts/lms/NAME)")] = None,
    steps: Annotated[int | None, typer.Option(help="override the recipe's training steps (smoke runs)")] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the LM a recipe describes and write its artifact (weights, config, tokenizer, card, metrics)."""
    from workbench.lm.train import train_recipe

    typer.echo(f"wrote {train_recipe(recipe, out=out, steps=steps, progress=progress)}")


@lm_app.command("eval")
def eval_cmd(
    artifact: ArtifactArg,
    split: SplitOpt = "ood",
    n: NOpt = 600,
    seed: SeedOpt = 0,
    persona: Annotated[str | None, typer.Option(help="show only this persona group (honest, ..., none, mixed)")] = None,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Per persona: rate of agreeing with a wrong claim vs giving the true answer (Wilson 95% CIs), and accuracy
    on correct-claim and no-claim questions."""
    _threads()
    from workbench.errors import WorkbenchError, unknown
    from workbench.lm import corpus
    from workbench.lm.evaluate import evaluate_split
    from workbench.lm.model import load_lm
    from workbench.store import new_run_id

    if split not in corpus.SPLITS:
        raise unknown("split", split, corpus.SPLITS)
    if persona is not None and persona not in corpus.OOD_GROUPS:
        raise unknown("persona", persona, corpus.OOD_GROUPS)
    result = evaluate_split(load_lm(artifact), split, n, seed)
    if persona is not None:
        if persona not in result["personas"]:
            raise WorkbenchError(
                f"no {persona!r} prompts in the {split} split (groups: {', '.join(result['personas'])})"
            )
        result["personas"] = {persona: result["personas"][persona]}
    run_id = new_run_id("lm-eval")
    rows = []
    for persona, row in result["personas"].items():
        for metric, d in row.items():
            value = d.get("rate", d.get("mean"))
            rows.append(
                {
                    "run_id": run_id,
                    "subject": result["subject"],
                    "split": split,
                    "seed": seed,
                    "intervention": "none",
                    "metric": f"{metric}/{persona}",
                    "value": value,
                    "ci_low": d["ci95"][0],
                    "ci_high": d["ci95"][1],
                    "n": d["n"],
                }
            )
    _store(rows, store)
    if as_json:
        _dump(result)
        return
    typer.echo(f"{result['subject']} on {split} (n={n}, seed={seed}); brackets: 95% CIs")
    for persona, row in result["personas"].items():
        parts = []
        for metric, d in row.items():
            v = d.get("rate", d.get("mean"))
            parts.append(f"{metric} {v:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}] n={d['n']}")
        typer.echo(f"{persona:>10}: " + "; ".join(parts))


@lm_app.command("steer")
def steer_cmd(
    artifact: ArtifactArg,
    vector: Annotated[str, typer.Option(help="sycophancy, claim-wrong, or a persona name (persona vs the rest)")] = (
        "sycophancy"
    ),
    layer: Annotated[int, typer.Option(help="layer whose resid_post the vector comes from (and is added to)")] = 1,
    coef: Annotated[
        list[float] | None, typer.Option(help="coefficient(s), repeatable; default sweep -4 -2 -1 1 2 4")
    ] = None,
    ablate: Annotated[bool, typer.Option("--ablate", help="ablate the direction at every layer instead")] = False,
    split: SplitOpt = "ood",
    n: NOpt = 600,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Add coef x vector after the prompt (or ablate it everywhere); compare with the un-intervened run and a random
    equal-norm vector on the same prompts: behaviour on wrong claims and held-out capability."""
    _threads()
    from workbench.lm.model import load_lm
    from workbench.lm.steering import steer_experiment, steering_table, store_rows
    from workbench.store import new_run_id

    coefs = tuple(coef) if coef else (-4.0, -2.0, -1.0, 1.0, 2.0, 4.0)
    result = steer_experiment(load_lm(artifact), vector, layer, coefs, split, n, seed, ablate=ablate)
    _store(store_rows(result, new_run_id("lm-steer")), store)
    if as_json:
        _dump(result)
        return
    typer.echo(
        f"{result['subject']}: {result['mode']} {vector} (layer {layer}, |v| = {result['vector_norm']:.2f}) on "
        f"{split}, n={n}, seed={seed}"
    )
    typer.echo(steering_table(result))


@lm_app.command("directions")
def directions_cmd(
    artifact: ArtifactArg,
    n_fit: Annotated[int, typer.Option(min=20, help="prompts to fit each probe on")] = 1000,
    n_test: Annotated[int, typer.Option(min=20, help="held-out prompts per test set")] = 500,
    n: NOpt = 600,
    seed: SeedOpt = 0,
    vector: Annotated[str, typer.Option(help="vector for projection monitoring")] = "sycophancy",
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Probe AUROC per layer and position (persona, claim is wrong) with shuffled-label controls, and whether the
    projection onto a persona vector predicts agreement with wrong claims on ood prompts."""
    _threads()
    from workbench.errors import unknown
    from workbench.lm.directions import VECTORS, probe_sweep, projection_monitor
    from workbench.lm.model import load_lm

    if vector not in VECTORS:
        raise unknown("vector", vector, VECTORS)
    lm = load_lm(artifact)
    probes = probe_sweep(lm, n_fit, n_test, seed)
    proj = projection_monitor(lm, vector, n, seed)
    from workbench.store import new_run_id

    run_id = new_run_id("lm-directions")
    rows = [
        {
            "run_id": run_id,
            "subject": lm.name,
            "split": r["test"],
            "seed": seed,
            "intervention": "none",
            "metric": f"probe_auroc/{r['target']}/L{r['layer']}/pos{r['position']}",
            "value": r["auroc"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "n": r["n"],
            "extra": {"control_auroc": r["control_auroc"]},
        }
        for r in probes.to_dict("records")
    ]
    rows += [
        {
            "run_id": run_id,
            "subject": lm.name,
            "split": "ood",
            "seed": seed,
            "intervention": "none",
            "metric": f"projection_r/{r['vector']}/L{r['layer']}",
            "value": r["r"],
            "ci_low": r["ci_low"],
            "ci_high": r["ci_high"],
            "n": r["n"],
            "extra": {"control_r": r["control_r"]},
        }
        for r in proj.to_dict("records")
    ]
    _store(rows, store)
    if as_json:
        _dump({"subject": lm.name, "probes": probes.to_dict("records"), "projection": proj.to_dict("records")})
        return
    typer.echo(probes.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    typer.echo("")
    typer.echo(proj.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
