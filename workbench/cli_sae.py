"""`workbench sae ...`: train, evaluate and inspect sparse autoencoders (SAELens) on the workbench's subjects.

Heavy imports (torch, sae_lens) live inside the command bodies so `workbench --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

sae_app = typer.Typer(no_args_is_help=True, help="Sparse autoencoders (SAELens) on policies and language models.")


@sae_app.command("train")
def train_cmd(
    subject: Annotated[str, typer.Argument(help="agent or LM artifact (maze-cheese-corner, persona-lm) or folder")],
    hook: Annotated[str, typer.Option(help="hook name, e.g. embedder.block2.res1.resadd_out")],
    arch: Annotated[str, typer.Option(help="topk | batchtopk | jumprelu | standard (L1)")] = "topk",
    width: Annotated[int, typer.Option(help="number of latents (d_sae)")] = 64,
    k: Annotated[int | None, typer.Option(help="active latents per token (topk, batchtopk); default 4")] = None,
    l1: Annotated[float, typer.Option(help="L1 coefficient (standard)")] = 1.0,
    l0: Annotated[float, typer.Option(help="L0 coefficient (jumprelu)")] = 1.0,
    lr: Annotated[float, typer.Option(help="Adam learning rate")] = 1e-3,
    tokens: Annotated[int, typer.Option(help="training tokens")] = 2_000_000,
    batch_size: Annotated[int, typer.Option(help="tokens per step")] = 2048,
    layout: Annotated[str, typer.Option(help="position (one token per spatial/sequence position) | flat")] = "position",
    normalize: Annotated[str, typer.Option(help="none | expected_average_only_in")] = "none",
    episodes: Annotated[int, typer.Option(min=1, help="levels / prompts to collect training activations from")] = 1500,
    eval_episodes: Annotated[
        int, typer.Option(min=1, help="held-out levels / prompts for reconstruction metrics")
    ] = 300,
    fidelity_episodes: Annotated[
        int, typer.Option(min=1, help="levels / prompts per split for spliced fidelity")
    ] = 300,
    steer_episodes: Annotated[
        int, typer.Option(min=1, help="OOD levels (maze) / prompts (LM) for the steering comparison")
    ] = 300,
    align_episodes: Annotated[
        int, typer.Option(min=2, help="levels (maze, CoinRun) / prompts (LM) for goal alignment (held out: half)")
    ] = 1000,
    data: Annotated[Path | None, typer.Option(help="reuse an activation dataset folder instead of collecting")] = None,
    name: Annotated[str | None, typer.Option(help="artifact name (default SUBJECT-HOOK)")] = None,
    out: Annotated[Path | None, typer.Option(help="SAE folder (default artifacts/saes/NAME)")] = None,
    seed: Annotated[int, typer.Option(help="seed for data, initialisation and evaluation")] = 0,
    resume: Annotated[bool, typer.Option(help="resume from runs/sae/NAME-checkpoint")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    env: Annotated[str | None, typer.Option(help="env kind of a bare checkpoint file (procgen-maze)")] = None,
) -> None:
    """Collect activations, train an SAE with SAELens's trainer, evaluate it and write a SAELens SAE folder
    (cfg.json + sae_weights.safetensors) with card.md and metrics.json beside it."""
    import torch

    from workbench.sae.artifact import build_sae_artifact
    from workbench.sae.train import SAESpec

    torch.set_num_threads(1)
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
    folder = build_sae_artifact(
        subject,
        hook,
        spec,
        name=name,
        env=env,
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
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
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
        typer.echo(json.dumps(out, default=str))
        return
    for key, value in out.items():
        typer.echo(f"{key:>14}: {value}")


@sae_app.command("eval")
def eval_cmd(
    sae: Annotated[str, typer.Argument(help="SAE name (artifacts/saes/NAME) or folder")],
    subject: Annotated[str | None, typer.Option(help="subject (default: the one in the SAE's metadata)")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="levels / prompts per split")] = 200,
    seed: Annotated[int, typer.Option(help="seed")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    env: Annotated[str | None, typer.Option(help="env kind of a bare checkpoint subject (procgen-maze)")] = None,
) -> None:
    """Reconstruction metrics on fresh held-out activations and downstream fidelity with the SAE spliced in."""
    import torch

    from workbench.errors import WorkbenchError
    from workbench.sae.artifact import _eval_batches, _jsonable
    from workbench.sae.metrics import reconstruction_metrics
    from workbench.sae.subjects import load_subject
    from workbench.sae.train import load_sae, sae_info

    torch.set_num_threads(1)
    model = load_sae(sae)
    info = sae_info(model)
    subj_name = subject or info["subject"]
    if not subj_name or not info["hook"]:
        raise WorkbenchError(f"SAE {sae!r} has no subject/hook in its metadata; pass --subject")
    subj = load_subject(subj_name, env=env)
    subj.check_hook(info["hook"])
    ev = subj.collect([info["hook"]], n=episodes, seed=seed + 200, progress=False)
    rec = reconstruction_metrics(model, _eval_batches(ev, info["hook"], info["layout"]))
    rec.pop("density")
    out = {"sae": sae, "subject": subj_name, "hook": info["hook"], "reconstruction": rec}
    out["fidelity"] = subj.fidelity(model, info["hook"], episodes=episodes, seed=seed)
    typer.echo(json.dumps(_jsonable(out), default=float) if as_json else json.dumps(_jsonable(out), indent=1))
