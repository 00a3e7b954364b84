"""`workbench lm ...`: the language-model track (train, eval, directions, steer, ablate, monitor).

Every analysis verb takes MODEL (a shipped name, an artifact folder, a Hugging Face-format folder or a cached hub
name: `workbench.lm.model.load_lm`) and, with `--dataset FILE.jsonl`, runs on that dataset
(`workbench.lm.datasets` formats, `workbench.lm.study` verbs). Without `--dataset` the commands keep their persona-lm
studies on the persona corpus. Heavy imports stay inside the command bodies so `workbench --help` stays fast; bad
input is a WorkbenchError (one line, exit 2), raised before anything is written: numbers while they are parsed
(`workbench.cli.options`), the results store and output files before the model is loaded, datasets before the model.
Every measuring command records its measurements in the results store (`--store`, else `$WORKBENCH_STORE`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench.cli.options import (
    Episodes,
    Float,
    Int,
    JsonOpt,
    Seed,
    StoreOpt,
    dump,
    made_parents,
    output_file,
    record,
    store_path,
)

lm_app = typer.Typer(
    no_args_is_help=True, help="Language-model organisms: train, evaluate, find persona directions, steer."
)

ArtifactArg = Annotated[str, typer.Argument(help="LM artifact name (persona-lm), artifact folder, or local HF model")]
SplitOpt = Annotated[str, typer.Option(help="train (claims mostly correct) or ood (wrong claims, cues absent/mixed)")]
NOpt = Annotated[int, Episodes(help="number of prompts")]
SeedOpt = Annotated[int, Seed(help="seed: same seed, same prompts")]
LayerOpt = Annotated[int, Int(help="layer whose resid_post the vector comes from (and is added to)", lo=0)]


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


DatasetOpt = Annotated[
    Path | None,
    typer.Option(
        "--dataset",
        help="JSONL dataset: contrast pairs {positive, negative[, question, system]}, A/B questions {question, "
        "answer_matching_behavior, answer_not_matching_behavior}, or labelled prompts {text, label}",
    ),
]
MethodOpt = Annotated[str, typer.Option(help="direction: mean-diff | pca | logistic")]
PositionOpt = Annotated[str, typer.Option(help="where to read activations: -1 (last token), -2, ... or mean")]
FitFracOpt = Annotated[
    float,
    Float(
        help="share of records the direction is fitted on (the rest is held out)",
        lo=0,
        hi=1,
        lo_open=True,
        hi_open=True,
    ),
]
NeutralOpt = Annotated[
    Path | None,
    typer.Option(
        help="neutral text for capability cost (.jsonl {text} or .txt lines; default neutral.jsonl beside "
        "the model, else the held-out records)"
    ),
]
ScorerOpt = Annotated[
    str | None,
    typer.Option(help="score greedy generations instead: module:function, keywords:w1,w2 or regex:PATTERN"),
]
MaxNewOpt = Annotated[int, Int(help="tokens to generate per prompt when a --scorer is given", lo=1, hi=4096)]
PositiveLabelOpt = Annotated[str | None, typer.Option(help="labelled prompts: the positive label (when not 0/1)")]
VectorFileOpt = Annotated[
    Path | None,
    typer.Option(help="use these (n_layers, d_model) vectors (`lm directions --save`) instead of fitting on --dataset"),
]


def _vectors(lm, path: Path | None):
    if path is None:
        return None
    from workbench.lm.study import load_vectors

    return load_vectors(lm, path)


def _load_dataset(path: Path, positive_label: str | None = None):
    """Validate the dataset before the model is loaded: a bad line costs nothing."""
    from workbench.lm.datasets import load_dataset

    return load_dataset(path, positive_label=positive_label)


def _scorer(spec: str | None):
    if spec is None:
        return None
    from workbench.lm.datasets import load_scorer

    return load_scorer(spec)


def _position(p: str) -> int | str:
    from workbench.lm.study import check_position

    return check_position(p)


def _study_inputs(
    dataset: Path,
    *,
    positive_label: str | None,
    scorer: str | None,
    position: str,
    condition_dataset: Path | None = None,
) -> tuple:
    """(dataset, condition dataset or None, scorer, position) of a `--dataset` study, checked in that order before the
    model is loaded."""
    ds = _load_dataset(dataset, positive_label)
    cds = _load_dataset(condition_dataset, positive_label) if condition_dataset is not None else None
    return ds, cds, _scorer(scorer), _position(position)


def _study_common(lm, *, method: str, position, seed: int, fit_frac: float, scorer, max_new: int, vector_file):
    """The keyword arguments every `--dataset` study (steer, ablate, monitor) takes the same way."""
    return dict(
        method=method,
        position=position,
        seed=seed,
        fit_frac=fit_frac,
        scorer=scorer,
        max_new=max_new,
        vectors=_vectors(lm, vector_file),
    )


def _finish_intervention(result: dict, run_id: str, at: Path, as_json: bool) -> None:
    """Record a steer / ablate study's rows, then print it (as JSON with --json)."""
    record(_intervention_rows(result, run_id), at)
    if as_json:
        dump(result)
    else:
        _print_intervention(result)


def _interval_row(
    run_id: str, subject: str, seed: int, r: dict, *, split: str, metric: str, value: str, n: str = "n", **extra
) -> dict:
    """A store row for a result row `r` that carries its interval as `ci_low` / `ci_high`: the value under `r[value]`,
    the sample size under `r[n]`, and its control `r["control_" + value]` (plus `extra`) as extra columns."""
    return {
        "run_id": run_id,
        "subject": subject,
        "split": split,
        "seed": seed,
        "intervention": "none",
        "metric": metric,
        "value": r[value],
        "ci_low": r["ci_low"],
        "ci_high": r["ci_high"],
        "n": r[n],
        "extra": {f"control_{value}": r[f"control_{value}"], **extra},
    }


def _row(
    run_id: str, subject: str, metric: str, est: dict, *, intervention: str = "none", seed: int = 0, extra=None
) -> dict:
    value = est.get("mean", est.get("rate", est.get("diff")))
    return {
        "run_id": run_id,
        "subject": subject,
        "split": "heldout",
        "seed": seed,
        "intervention": intervention,
        "metric": metric,
        "value": value,
        "ci_low": est["ci95"][0],
        "ci_high": est["ci95"][1],
        "n": est["n"],
        "extra": extra or {},
    }


def _intervention_rows(result: dict, run_id: str) -> list[dict]:
    """Results-store rows of a steer / ablate study: baseline, and per condition steered, control and differences."""
    subject, seed = result["subject"], result["seed"]
    extra = {"dataset": result["dataset"]["path"], "mode": result["mode"], "method": result["method"]}
    rows = [
        _row(run_id, subject, m, result["baseline"][m], seed=seed, extra=extra)
        for m in ("behaviour", "trait_rate", "ce")
    ]
    for c in result["conditions"]:
        tag = (
            f"ablate@L{c['layer']}"
            if "layer" in c
            else f"cap q={c['cap_quantiles']}@L{result['layer']}"
            if "cap" in c
            else f"{result['mode']} coef={c['coef']:+g}@L{result['layer']}"
        )
        for side in ("steered", "ablated", "control"):
            if side not in c:
                continue
            name = tag if side != "control" else f"random {tag}"
            for m in ("behaviour", "trait_rate", "ce", "kl"):
                rows.append(_row(run_id, subject, m, c[side][m], intervention=name, seed=seed, extra=extra))
            for m, d in c[side]["minus_baseline"].items():
                rows.append(_row(run_id, subject, f"{m}_diff", d, intervention=name, seed=seed, extra=extra))
    return rows


def _fmt(d: dict) -> str:
    v = d.get("mean", d.get("rate", d.get("diff")))
    return f"{v:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def _print_intervention(result: dict) -> None:
    typer.echo(
        f"{result['subject']} on {result['dataset']['path']} ({result['dataset']['format']}, "
        f"{result['n_test']} held-out records): {result['mode']}, behaviour = {result['behaviour']}; capability on "
        f"{result['neutral']['n']} "
        f"neutral texts ({result['neutral']['source']}). Brackets: 95% CIs; diffs paired against the baseline."
    )
    b = result["baseline"]
    typer.echo(f"baseline: behaviour {_fmt(b['behaviour'])}, trait rate {_fmt(b['trait_rate'])}, CE {_fmt(b['ce'])}")
    for c in result["conditions"]:
        label = (
            f"ablate L{c['layer']} direction"
            if "layer" in c
            else f"cap to quantiles {c['cap_quantiles']}"
            if "cap" in c
            else f"coef {c['coef']:+g}" + (f" (gate fired {c['gate_rate']:.2f})" if "gate_rate" in c else "")
        )
        for side in ("steered", "ablated", "control"):
            if side in c:
                d = c[side]
                who = label if side != "control" else "  random, equal norm"
                typer.echo(
                    f"{who}: Δbehaviour {_fmt(d['minus_baseline']['behaviour'])}, Δtrait rate "
                    f"{_fmt(d['minus_baseline']['trait_rate'])}, ΔCE {_fmt(d['minus_baseline']['ce'])}, "
                    f"KL {_fmt(d['kl'])}"
                )


@lm_app.command("train")
def train_cmd(
    recipe: Annotated[Path, typer.Argument(help="LM recipe, e.g. agents/persona-lm.toml")],
    out: Annotated[Path | None, typer.Option(help="artifact folder (default artifacts/lms/NAME)")] = None,
    steps: Annotated[int | None, Int(help="override the recipe's training steps (smoke runs)", lo=1)] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Train the LM a recipe describes and write its artifact (weights, config, tokenizer, card, metrics).

    A recipe with a [tokenizer] table (agents/register-lm.toml) trains a BPE tokenizer and a GPT-2 saved as a Hugging
    Face folder, resuming from FOLDER.ckpt/ when interrupted."""
    from workbench.lm.train_hf import is_hf_recipe, train_hf_recipe
    from workbench.validate import check_output_dir

    if out is not None:
        check_output_dir(out, name="--out")
    if is_hf_recipe(recipe):
        typer.echo(f"wrote {train_hf_recipe(recipe, out=out, steps=steps, progress=progress)}")
        return
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
    at = store_path(store)
    _threads()
    from workbench.errors import WorkbenchError, unknown
    from workbench.lm import corpus
    from workbench.lm.evaluate import evaluate_split
    from workbench.lm.model import load_lm
    from workbench.store import new_run_id

    if split not in corpus.SPLITS:
        raise unknown("split", split, corpus.SPLITS)
    from workbench.lm.corpora import ALL_GROUPS

    if persona is not None and persona not in ALL_GROUPS:
        raise unknown("persona", persona, ALL_GROUPS)
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
    record(rows, at)
    if as_json:
        dump(result)
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
    layer: LayerOpt = 1,
    coef: Annotated[
        list[float] | None,
        Float(help="coefficient(s), repeatable; default sweep -4 -2 -1 1 2 4 (with --dataset: -2 -1 1 2)"),
    ] = None,
    ablate: Annotated[bool, typer.Option("--ablate", help="ablate the direction at every layer instead")] = False,
    split: SplitOpt = "ood",
    n: NOpt = 600,
    seed: SeedOpt = 0,
    dataset: DatasetOpt = None,
    mode: Annotated[
        str, typer.Option(help="with --dataset: add | conditional (CAST: only where a condition fires) | cap")
    ] = "add",
    method: MethodOpt = "mean-diff",
    position: PositionOpt = "-1",
    fit_frac: FitFracOpt = 0.5,
    neutral: NeutralOpt = None,
    scorer: ScorerOpt = None,
    max_new: MaxNewOpt = 16,
    positive_label: PositiveLabelOpt = None,
    condition_dataset: Annotated[
        Path | None, typer.Option(help="conditional: dataset whose direction is the condition (default --dataset)")
    ] = None,
    condition_layer: Annotated[int | None, Int(help="conditional: layer the condition is read at", lo=0)] = None,
    threshold: Annotated[
        float | None, Float(help="conditional: projection threshold (default: midpoint of the class means)")
    ] = None,
    below: Annotated[bool, typer.Option("--below", help="conditional: fire below the threshold instead")] = False,
    cap_low: Annotated[float | None, Float(help="cap: lower bound, a quantile of fit projections", lo=0, hi=1)] = None,
    cap_high: Annotated[float | None, Float(help="cap: upper bound, a quantile of fit projections", lo=0, hi=1)] = None,
    vector_file: VectorFileOpt = None,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Add coef x vector after the prompt (or ablate it everywhere); compare with the un-intervened run and a random
    equal-norm vector on the same prompts. With --dataset: the dataset's direction, behaviour on its held-out half,
    capability cost as cross-entropy on neutral text and KL to the unsteered model; --mode conditional / cap."""
    at = store_path(store)
    _threads()
    from workbench.lm.model import load_lm
    from workbench.store import new_run_id

    if dataset is not None:
        from workbench.lm.study import MODES, steer_study

        if mode not in MODES:
            from workbench.errors import unknown

            raise unknown("mode", mode, MODES)
        if ablate:
            from workbench.errors import WorkbenchError

            raise WorkbenchError("with --dataset use `workbench lm ablate MODEL --dataset FILE` to ablate")
        ds, cds, sc, pos = _study_inputs(
            dataset,
            positive_label=positive_label,
            scorer=scorer,
            position=position,
            condition_dataset=condition_dataset,
        )
        if mode == "cap" and cap_low is None and cap_high is None:
            from workbench.errors import WorkbenchError

            raise WorkbenchError("--mode cap needs --cap-low and/or --cap-high (quantiles of the fit projections)")
        lm = load_lm(artifact)
        result = steer_study(
            lm,
            ds,
            layer,
            tuple(coef) if coef else (-2.0, -1.0, 1.0, 2.0),
            mode=mode,
            neutral=neutral,
            condition=cds,
            condition_layer=condition_layer,
            threshold=threshold,
            below=below,
            cap=(cap_low, cap_high),
            **_study_common(
                lm, method=method, position=pos, seed=seed, fit_frac=fit_frac, scorer=sc, max_new=max_new,
                vector_file=vector_file,
            ),
        )  # fmt: skip
        _finish_intervention(result, new_run_id("lm-steer"), at, as_json)
        return

    from workbench.lm.steering import steer_experiment, steering_table, store_rows

    coefs = tuple(coef) if coef else (-4.0, -2.0, -1.0, 1.0, 2.0, 4.0)
    result = steer_experiment(load_lm(artifact), vector, layer, coefs, split, n, seed, ablate=ablate)
    record(store_rows(result, new_run_id("lm-steer")), at)
    if as_json:
        dump(result)
        return
    typer.echo(
        f"{result['subject']}: {result['mode']} {vector} (layer {layer}, |v| = {result['vector_norm']:.2f}) on "
        f"{split}, n={n}, seed={seed}"
    )
    typer.echo(steering_table(result))


@lm_app.command("ablate")
def ablate_cmd(
    artifact: ArtifactArg,
    dataset: DatasetOpt = None,
    layer: Annotated[
        list[int] | None, Int(help="layer(s) whose direction is ablated, repeatable (default: every layer)", lo=0)
    ] = None,
    method: MethodOpt = "mean-diff",
    position: PositionOpt = "-1",
    fit_frac: FitFracOpt = 0.5,
    neutral: NeutralOpt = None,
    scorer: ScorerOpt = None,
    max_new: MaxNewOpt = 16,
    positive_label: PositiveLabelOpt = None,
    vector_file: VectorFileOpt = None,
    vector: Annotated[str, typer.Option(help="without --dataset: persona vector to ablate")] = "sycophancy",
    split: SplitOpt = "ood",
    n: NOpt = 600,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Directional ablation x - (x.r) r of each layer's direction at every layer (Arditi et al.): behaviour on the
    held-out half and capability cost (CE on neutral text, KL), against ablating an equal-norm random direction."""
    at = store_path(store)
    _threads()
    from workbench.lm.model import load_lm
    from workbench.store import new_run_id

    if dataset is None:
        from workbench.lm.steering import steer_experiment, steering_table, store_rows

        result = steer_experiment(load_lm(artifact), vector, (layer or [1])[0], (), split, n, seed, ablate=True)
        record(store_rows(result, new_run_id("lm-ablate")), at)
        if as_json:
            dump(result)
        else:
            typer.echo(steering_table(result))
        return
    from workbench.lm.study import ablate_study

    ds, _, sc, pos = _study_inputs(dataset, positive_label=positive_label, scorer=scorer, position=position)
    lm = load_lm(artifact)
    result = ablate_study(
        lm,
        ds,
        layer,
        neutral=neutral,
        **_study_common(
            lm, method=method, position=pos, seed=seed, fit_frac=fit_frac, scorer=sc, max_new=max_new,
            vector_file=vector_file,
        ),
    )  # fmt: skip
    _finish_intervention(result, new_run_id("lm-ablate"), at, as_json)


@lm_app.command("monitor")
def monitor_cmd(
    artifact: ArtifactArg,
    dataset: DatasetOpt = None,
    method: MethodOpt = "mean-diff",
    position: PositionOpt = "-1",
    fit_frac: FitFracOpt = 0.5,
    scorer: ScorerOpt = None,
    max_new: MaxNewOpt = 16,
    positive_label: PositiveLabelOpt = None,
    vector_file: VectorFileOpt = None,
    vector: Annotated[str, typer.Option(help="without --dataset: persona vector to monitor")] = "sycophancy",
    n: NOpt = 600,
    seed: SeedOpt = 0,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Projection onto the direction vs the behaviour score, per layer, on held-out records: Pearson r with a
    bootstrap CI, AUROC for the trait side, and r for a random direction."""
    at = store_path(store)
    _threads()
    from workbench.lm.model import load_lm
    from workbench.store import new_run_id

    run_id = new_run_id("lm-monitor")
    if dataset is None:
        from workbench.errors import unknown
        from workbench.lm.directions import projection_monitor, vectors_of

        lm = load_lm(artifact)
        if vector not in vectors_of(lm):
            raise unknown("vector", vector, vectors_of(lm))
        proj = projection_monitor(lm, vector, n, seed)
        result = {"subject": lm.name, "vector": vector, "rows": proj.to_dict("records")}
    else:
        from workbench.lm.study import monitor_study

        ds, _, sc, pos = _study_inputs(dataset, positive_label=positive_label, scorer=scorer, position=position)
        lm = load_lm(artifact)
        result = monitor_study(
            lm,
            ds,
            **_study_common(
                lm, method=method, position=pos, seed=seed, fit_frac=fit_frac, scorer=sc, max_new=max_new,
                vector_file=vector_file,
            ),
        )  # fmt: skip
    split = "heldout" if dataset is not None else "ood"
    rows = [
        _interval_row(run_id, result["subject"], seed, r, split=split, metric=f"projection_r/L{r['layer']}", value="r")
        for r in result["rows"]
    ]
    record(rows, at)
    if as_json:
        dump(result)
        return
    typer.echo(f"{result['subject']}: projection vs behaviour ({result.get('behaviour', vector)}); brackets: 95% CIs")
    for r in result["rows"]:
        typer.echo(
            f"L{r['layer']}: r {r['r']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}], AUROC "
            f"{r.get('auroc', r.get('auroc_agree', float('nan'))):.3f}, random direction r {r['control_r']:+.3f}, "
            f"n={r['n']}"
        )


@lm_app.command("directions")
def directions_cmd(
    artifact: ArtifactArg,
    n_fit: Annotated[int, Episodes(help="prompts to fit each probe on", lo=20)] = 1000,
    n_test: Annotated[int, Episodes(help="held-out prompts per test set", lo=20)] = 500,
    n: NOpt = 600,
    seed: SeedOpt = 0,
    vector: Annotated[str, typer.Option(help="vector for projection monitoring")] = "sycophancy",
    dataset: DatasetOpt = None,
    method: MethodOpt = "mean-diff",
    position: Annotated[
        list[str] | None, typer.Option(help="with --dataset: positions, repeatable: -1, -2, ..., mean (default -1)")
    ] = None,
    fit_frac: FitFracOpt = 0.5,
    positive_label: PositiveLabelOpt = None,
    save: Annotated[
        Path | None, typer.Option(help="with --dataset: write the (n_layers, d_model) vectors here (safetensors)")
    ] = None,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Probe AUROC per layer and position (persona, claim is wrong) with shuffled-label controls, and whether the
    projection onto a persona vector predicts agreement with wrong claims on ood prompts. With --dataset: the
    dataset's direction per layer and position (--method), held-out AUROC with a permuted-label control."""
    at = store_path(store)
    if save is not None:
        if dataset is None:
            from workbench.errors import WorkbenchError

            raise WorkbenchError("--save writes the directions of a --dataset; add --dataset FILE.jsonl")
        save = output_file(save, name="--save", suffixes=(".safetensors",))
    _threads()
    if dataset is not None:
        _directions_dataset(
            artifact=artifact, dataset=dataset, method=method, position=position, fit_frac=fit_frac,
            positive_label=positive_label, save=save, seed=seed, as_json=as_json, store=at,
        )  # fmt: skip
        return
    from workbench.errors import unknown
    from workbench.lm.directions import probe_sweep, projection_monitor, vectors_of
    from workbench.lm.model import load_lm

    lm = load_lm(artifact)
    if vector not in vectors_of(lm):
        raise unknown("vector", vector, vectors_of(lm))
    probes = probe_sweep(lm, n_fit, n_test, seed)
    proj = projection_monitor(lm, vector, n, seed)
    from workbench.store import new_run_id

    run_id = new_run_id("lm-directions")
    rows = [
        _interval_row(
            run_id,
            lm.name,
            seed,
            r,
            split=r["test"],
            metric=f"probe_auroc/{r['target']}/L{r['layer']}/pos{r['position']}",
            value="auroc",
        )
        for r in probes.to_dict("records")
    ]
    rows += [
        _interval_row(
            run_id, lm.name, seed, r, split="ood", metric=f"projection_r/{r['vector']}/L{r['layer']}", value="r"
        )
        for r in proj.to_dict("records")
    ]
    record(rows, at)
    if as_json:
        dump({"subject": lm.name, "probes": probes.to_dict("records"), "projection": proj.to_dict("records")})
        return
    typer.echo(probes.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    typer.echo("")
    typer.echo(proj.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


def _directions_dataset(
    *,
    artifact: str,
    dataset: Path,
    method: str,
    position: list[str] | None,
    fit_frac: float,
    positive_label: str | None,
    save: Path | None,
    seed: int,
    as_json: bool,
    store: Path,
) -> None:
    from workbench.errors import unknown
    from workbench.lm.model import load_lm
    from workbench.lm.study import METHODS, direction_vectors, directions_study
    from workbench.store import new_run_id

    if method not in METHODS:
        raise unknown("method", method, METHODS)
    ds = _load_dataset(dataset, positive_label)
    positions = [_position(p) for p in (position or ["-1"])]
    lm = load_lm(artifact)
    result = directions_study(lm, ds, method, positions, seed, fit_frac)
    if save is not None:
        from safetensors.torch import save_file

        best = result["best"]
        vec = direction_vectors(lm, ds, method, best["position"], seed, fit_frac)
        meta = {"method": method, "position": str(best["position"]), "dataset": str(dataset), "subject": lm.name}
        with made_parents(save):
            save_file({"vectors": vec.contiguous()}, str(save), metadata=meta)
        result["saved"] = {"path": str(save), "position": best["position"], "shape": list(vec.shape)}
    run_id = new_run_id("lm-directions")
    rows = [
        _interval_row(
            run_id,
            lm.name,
            seed,
            r,
            split="heldout",
            metric=f"direction_auroc/{method}/L{r['layer']}/pos{r['position']}",
            value="auroc",
            n="n_test",
            dataset=str(dataset),
        )
        for r in result["rows"]
    ]
    record(rows, store)
    if as_json:
        dump(result)
        return
    typer.echo(
        f"{lm.name} on {dataset} ({result['dataset']['format']}, n={result['dataset']['n']}): {method} directions, "
        "held-out AUROC [95% CI] vs permuted-label control"
    )
    for r in result["rows"]:
        typer.echo(
            f"L{r['layer']} pos {r['position']}: {r['auroc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] control "
            f"{r['control_auroc']:.3f} |v| {r['vector_norm']:.2f}"
        )


def register(app: typer.Typer) -> None:
    """Add `workbench lm ...` to the main app."""
    app.add_typer(lm_app, name="lm")
