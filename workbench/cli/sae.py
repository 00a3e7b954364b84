"""`workbench sae ...`: train, evaluate and inspect sparse autoencoders (SAELens) on the workbench's subjects.

Heavy imports (torch, sae_lens) live inside the command bodies so `workbench --help` stays fast. Numbers are checked
as they are parsed (widths, k, token and batch counts >= 1, coefficients finite and > 0), output folders and the
results store before any activation is collected; `sae eval` records its measurements in the results store.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from workbench.cli.options import (
    EnvOpt,
    Episodes,
    Float,
    Int,
    JsonOpt,
    Seed,
    StoreOpt,
    dump,
    env_kind,
    record,
    store_path,
)
from workbench.errors import WorkbenchError

MAX_WIDTH = 2**24
"""Most latents `--width` takes (16.7M: beyond the largest published SAEs)."""
MAX_TOKENS = 10**12
MAX_BATCH = 2**24

sae_app = typer.Typer(no_args_is_help=True, help="Sparse autoencoders (SAELens) on policies and language models.")


@sae_app.command("train")
def train_cmd(
    subject: Annotated[str, typer.Argument(help="agent or LM artifact (maze-cheese-corner, persona-lm) or folder")],
    hook: Annotated[str, typer.Option(help="hook name, e.g. embedder.block2.res1.resadd_out")],
    arch: Annotated[str, typer.Option(help="topk | batchtopk | jumprelu | standard (L1)")] = "topk",
    width: Annotated[int, Int(help="number of latents (d_sae)", lo=2, hi=MAX_WIDTH)] = 64,
    k: Annotated[
        int | None, Int(help="active latents per token (topk, batchtopk; below --width); default 4", lo=1)
    ] = None,
    l1: Annotated[float, Float(help="L1 coefficient (standard)", lo=0, lo_open=True)] = 1.0,
    l0: Annotated[float, Float(help="L0 coefficient (jumprelu)", lo=0, lo_open=True)] = 1.0,
    lr: Annotated[float, Float(help="Adam learning rate", lo=0, hi=1, lo_open=True)] = 1e-3,
    tokens: Annotated[int, Int(help="training tokens", lo=1, hi=MAX_TOKENS)] = 2_000_000,
    batch_size: Annotated[int, Int(help="tokens per step", lo=1, hi=MAX_BATCH)] = 2048,
    layout: Annotated[str, typer.Option(help="position (one token per spatial/sequence position) | flat")] = "position",
    normalize: Annotated[str, typer.Option(help="none | expected_average_only_in")] = "none",
    episodes: Annotated[int, Episodes(help="levels / prompts to collect training activations from")] = 1500,
    eval_episodes: Annotated[int, Episodes(help="held-out levels / prompts for reconstruction metrics")] = 300,
    fidelity_episodes: Annotated[int, Episodes(help="levels / prompts per split for spliced fidelity")] = 300,
    steer_episodes: Annotated[int, Episodes(help="OOD levels (maze) / prompts (LM) for the steering comparison")] = 300,
    align_episodes: Annotated[
        int, Episodes(help="levels (maze, CoinRun) / prompts (LM) for goal alignment (held out: half)", lo=2)
    ] = 1000,
    data: Annotated[Path | None, typer.Option(help="reuse an activation dataset folder instead of collecting")] = None,
    name: Annotated[str | None, typer.Option(help="artifact name (default SUBJECT-HOOK)")] = None,
    out: Annotated[Path | None, typer.Option(help="SAE folder (default artifacts/saes/NAME)")] = None,
    seed: Annotated[int, Seed(help="seed for data, initialisation and evaluation")] = 0,
    resume: Annotated[
        bool, typer.Option(help="resume from runs/sae/NAME-checkpoint (under the current folder)")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    env: EnvOpt = None,
) -> None:
    """Collect activations, train an SAE with SAELens's trainer, evaluate it and write a SAELens SAE folder
    (cfg.json + sae_weights.safetensors) with card.md and metrics.json beside it. Collected activations and the
    checkpoint go to runs/sae/ under the current folder."""
    import torch

    from workbench.sae.train import SAESpec
    from workbench.validate import check_output_dir

    if out is not None:
        check_output_dir(out, name="--out")
    check_output_dir(Path.cwd() / "runs" / "sae", name="work folder")
    if data is not None and not Path(data).is_dir():
        raise WorkbenchError(f"--data {data} is not a dataset folder (written by `workbench collect --out`)")
    if k is None and arch in ("topk", "batchtopk"):
        k = 4
    spec = SAESpec(
        arch=arch,
        width=width,
        k=k,
        l1_coefficient=l1,
        l0_coefficient=l0,
        lr=lr,
        tokens=tokens,
        batch_size=batch_size,
        layout=layout,
        normalize=normalize,
        seed=seed,
    )
    spec.validate(d_in=1)  # k below width, tokens >= batch size, known arch: before SAELens is even imported
    torch.set_num_threads(1)
    from workbench.sae.artifact import build_sae_artifact

    folder = build_sae_artifact(
        subject,
        hook,
        spec,
        name=name,
        env=env_kind(env),
        out=out,
        data=data,
        episodes=episodes,
        eval_episodes=eval_episodes,
        fidelity_episodes=fidelity_episodes,
        steer_episodes=steer_episodes,
        align_episodes=align_episodes,
        seed=seed,
        resume=resume,
        command="workbench sae " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "",
        progress=progress,
    )
    typer.echo(f"wrote {folder}")


@sae_app.command("info")
def info_cmd(
    sae: Annotated[str, typer.Argument(help="SAE name (artifacts/saes/NAME) or folder")],
    as_json: JsonOpt = False,
) -> None:
    """What an SAE is (architecture, width, hook, subject) and its stored reconstruction metrics."""
    from workbench.sae.train import load_sae, resolve_sae, sae_info

    folder = resolve_sae(sae)
    model = load_sae(folder)
    info = sae_info(model)
    metrics_path = folder / "metrics.json"
    rec = json.loads(metrics_path.read_text()).get("reconstruction", {}) if metrics_path.is_file() else {}
    out = {"folder": str(folder), **{k: v for k, v in info.items() if k != "spec"}, "reconstruction": rec}
    if as_json:
        dump(out)
        return
    for key, value in out.items():
        typer.echo(f"{key:>14}: {value}")


@sae_app.command("eval")
def eval_cmd(
    sae: Annotated[str, typer.Argument(help="SAE name (artifacts/saes/NAME) or folder")],
    subject: Annotated[str | None, typer.Option(help="subject (default: the one in the SAE's metadata)")] = None,
    episodes: Annotated[int, Episodes(help="levels / prompts per split")] = 200,
    seed: Annotated[int, Seed(help="seed")] = 0,
    as_json: JsonOpt = False,
    env: EnvOpt = None,
    store: StoreOpt = None,
) -> None:
    """Reconstruction metrics on fresh held-out activations and downstream fidelity with the SAE spliced in. Rows go
    to the results store."""
    import torch

    from workbench.cli.rows import flat_rows
    from workbench.sae.artifact import _eval_batches
    from workbench.sae.metrics import reconstruction_metrics
    from workbench.sae.subjects import load_subject
    from workbench.sae.train import load_sae, sae_info
    from workbench.store import new_run_id

    at = store_path(store)
    torch.set_num_threads(1)
    model = load_sae(sae)
    info = sae_info(model)
    subj_name = subject or info["subject"]
    if not subj_name or not info["hook"]:
        raise WorkbenchError(f"SAE {sae!r} has no subject/hook in its metadata; pass --subject")
    subj = load_subject(subj_name, env=env_kind(env))
    subj.check_hook(info["hook"])
    ev = subj.collect([info["hook"]], n=episodes, seed=seed + 200, progress=False)
    rec = reconstruction_metrics(model, _eval_batches(ev, info["hook"], info["layout"]))
    rec.pop("density")
    out = {"sae": sae, "subject": subj_name, "hook": info["hook"], "reconstruction": rec}
    out["fidelity"] = subj.fidelity(model, info["hook"], episodes=episodes, seed=seed)
    rows = flat_rows(
        {"reconstruction": rec, "fidelity": out["fidelity"]},
        new_run_id("sae-eval"),
        subject=str(subj_name),
        seed=seed,
        intervention=f"sae {info['hook']}",
        prefix="sae.",
        n=episodes,
        extra={"sae": str(sae), "hook": info["hook"]},
    )
    record(rows, at)
    if as_json:
        dump(out)
    else:
        from workbench.validate import strict_json

        typer.echo(strict_json(out, indent=1))


def register(app: typer.Typer) -> None:
    """Add `workbench sae ...` to the main app."""
    app.add_typer(sae_app, name="sae")
