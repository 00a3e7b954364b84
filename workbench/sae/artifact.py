"""Build a shipped SAE: collect -> train -> evaluate -> analyse -> one folder under artifacts/saes/NAME with its card.

The folder is a SAELens SAE folder (`cfg.json`, `sae_weights.safetensors`: `sae_lens.SAE.load_from_disk` reads it)
plus `card.md` (the evaluation, for people), `metrics.json` (the same numbers, for tests) and whatever files the
subject's kind adds (the maze: `top_latent.png`, the cheese latent's top-activating observations). Every number in
the card comes from this run.

Reconstruction and fidelity are the same for every subject; what else a card holds is the kind's own analyses,
reached through its feature views (`FeatureViews.card` in the kind's `features.py`), so this module names no kind.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench import artifacts
from workbench.data.dataset import ActivationDataset
from workbench.errors import WorkbenchError
from workbench.sae.data import ShardTokens
from workbench.sae.metrics import reconstruction_metrics
from workbench.sae.subjects import load_subject
from workbench.sae.train import SAESpec, sae_info, save_sae, train_sae
from workbench.sae.views import find_views


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if not isinstance(v, torch.Tensor)}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def _eval_batches(ds, hook: str, layout: str, max_tokens: int = 400_000) -> list[torch.Tensor]:
    per_row = ShardTokens(ds, hook, batch_size=1, layout=layout).n_tokens // max(len(ds), 1)
    batch = max(1, min(4096, len(ds) * per_row))  # a small evaluation set is one smaller batch, not an error
    provider = ShardTokens(ds, hook, batch_size=batch, layout=layout, seed=12345)
    n = max(1, min(max_tokens, provider.n_tokens) // batch)
    return [next(provider) for _ in range(n)]


def _ci(r: dict) -> str:
    return f"{r['rate']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def _mci(r: dict) -> str:
    return f"{r['mean']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def _dci(d: dict) -> str:
    return f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def card_text(name: str, info: dict, m: dict, command: str, *, sections: Sequence[str] = ()) -> str:
    """The card: what the SAE is, how it was trained, and its evaluation with intervals; `sections` are the kind's
    own markdown blocks (`CardAnalyses.sections`), placed after the goal-alignment table."""
    rec, spec = m["reconstruction"], info["spec"]
    lines = [
        f"# SAE `{name}`",
        "",
        f"A {info['architecture']} SAE (SAELens {m['sae_lens_version']}) on `{info['hook']}` of `{info['subject']}`, "
        f"{info['d_sae']} latents over d_in = {info['d_in']} tokens ({info['layout']} layout: "
        + (
            (
                "each spatial position of the conv activation is one token)."
                if len(info["act_shape"]) == 3
                else "each sequence position of the residual stream is one token)."
            )
            if info["layout"] == "position"
            else "one token per example)."
        )
        + f" Load it with `sae_lens.SAE.load_from_disk(folder)` or `workbench.sae.load_sae('{name}')`.",
        "",
        f"Made by `{command}` on {m['created']} ({m['train_seconds']:.0f} s of training on CPU). "
        f"Training data: {m['train_data']['description']} ({m['train_data']['rows']} rows, "
        f"{m['train_data']['tokens']} tokens). Spec: " + ", ".join(f"{k}={v}" for k, v in spec.items()) + ".",
        "",
        "## Reconstruction (held-out "
        + ("prompts, every position)" if "prompts" in (m.get("fidelity") or {}) else "rollout states)"),
        "",
        "| tokens | L0 | explained variance | MSE | dead latents | dense latents (> 10% of tokens) |",
        "|---|---|---|---|---|---|",
        f"| {rec['tokens']} | {rec['l0']:.2f} | {rec['explained_variance']:.3f} | {rec['mse']:.4g} | "
        f"{rec['dead']} ({rec['dead_frac']:.0%}) | {rec['dense']} ({rec['dense_frac']:.0%}) |",
    ]
    fid = m.get("fidelity")
    first = next((fid[sp] for sp in ("train", "ood") if fid and sp in fid), None) if fid else None
    if first and "goal_keys" in first:
        keys = [k for k in first["goal_keys"] if k != "timeout"]
        is_return = first["score"] == "return"  # maze: discounted return; CoinRun: the first goal rate (no column)
        score = "return (γ = {:.2f})".format(fid["gamma"]) if is_return else first["score"]
        lines += [
            "",
            f"## Downstream fidelity (reconstruction spliced in at every forward pass; {fid['episodes']} levels per "
            f"split, seed {fid['seed']}, same levels and action seed in every row)",
            "",
            "| split | policy | "
            + " | ".join(keys)
            + (f" | {score}" if is_return else "")
            + f" | Δ {keys[0]} vs original |",
            "|---|---|" + "---|" * (len(keys) + 1 + int(is_return)),
        ]
        for split in ("train", "ood"):
            row = fid.get(split)
            if not row:
                continue
            for cond in ("original", "spliced", "mean_ablated"):
                c = row[cond]
                d = c.get("diff_vs_original", {}).get(keys[0])
                cells = " | ".join(_ci(c[k]) for k in keys)
                ret = f" {_mci(c['return'])} |" if is_return else ""
                lines.append(f"| {split} | {cond} | {cells} |{ret} {_dci(d) if d else '-'} |")
            pad = "| " * len(keys)
            lines.append(
                f"| {split} | {score} recovered | {pad}{row['return_recovered']:.3f} |" + (" |" if is_return else "")
            )
    if first and "ce_recovered" in first:
        lines += [
            "",
            f"## Downstream fidelity: next-token cross-entropy ({fid['prompts']} prompts per split, "
            f"seed {fid['seed']}; target tokens: {fid.get('tokens', 'all')}; mean per prompt, bootstrap 95% CIs)",
            "",
            "| split | original | SAE spliced | zero-ablated | CE recovered |",
            "|---|---|---|---|---|",
        ]
        for split in ("train", "ood"):
            row = fid.get(split)
            if row:
                lines.append(
                    f"| {split} | {_mci(row['original'])} | {_mci(row['spliced'])} | {_mci(row['zero_ablated'])} | "
                    f"{row['ce_recovered']:.3f} |"
                )
    ga = m.get("goal_alignment")
    if ga:
        lines += [
            "",
            f'## Goal alignment: "{ga["label"]}" ({ga["tokens_test"]} held-out tokens, {ga["positives_test"]} '
            "positive; AUROC with token-bootstrap 95% CIs)",
            "",
            "| scorer | AUROC (held out) | AUROC (fit) |",
            "|---|---|---|",
        ]
        for lat in ga["latents"]:
            lines.append(f"| SAE latent {lat['latent']} | {_aci(lat)} | {lat['fit_auroc']:.3f} |")
        lines += [
            f"| spatial probe (1x1 logistic) | {_aci(ga['probe'])} | |",
            f"| difference of means (goal cell - other cells) | {_aci(ga['diff_of_means'])} | |",
            f"| control: best latent for shuffled labels (latent {ga['control_latent']['latent']}) | "
            f"{_aci(ga['control_latent'])} | |",
        ]
        best, ctrl = ga["latents"][0], ga["control_latent"]
        if ctrl["latent"] == best["latent"] or ctrl["ci95"][1] >= best["ci95"][0]:
            lines += [
                "",
                f"No goal latent beyond the position prior: latent {best['latent']}'s AUROC is matched by the latent "
                "chosen on labels shuffled across observations (which keeps only where the goal tends to be), so it "
                "reads the likely position, not the goal itself.",
            ]
    for section in sections:
        lines += ["", section]
    reading = (
        "CE recovered = (CE zero-ablated - CE spliced) / (CE zero-ablated - CE original)."
        if first and "ce_recovered" in first
        else "return (maze) or first-goal rate (CoinRun) recovered = (spliced - mean-ablated) / "
        "(original - mean-ablated); mean-ablated = the hook's activation replaced by its mean over start states."
    )
    lines += [
        "",
        "Reading: explained variance is against the mean of the evaluation tokens; dead = never fires on them; "
        + reading,
        "",
    ]
    return "\n".join(lines)


def _aci(r: dict) -> str:
    return f"{r['auroc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"


def build_sae_artifact(
    subject_name: str,
    hook: str,
    spec: SAESpec,
    name: str | None = None,
    env: str | None = None,
    out: str | Path | None = None,
    data: str | Path | None = None,
    episodes: int = 1500,
    eval_episodes: int = 300,
    fidelity_episodes: int = 300,
    steer_episodes: int = 300,
    align_episodes: int = 1000,
    seed: int = 0,
    resume: bool = False,
    command: str = "",
    progress: bool = True,
    work: str | Path | None = None,
) -> Path:
    """Collect (or reuse `data`), train, evaluate and write `artifacts/saes/NAME` (or `out`). Returns the folder.
    The collected training activations and the checkpoint go to `work` (default `runs/sae/` under the current
    directory: never under the install folder)."""
    import time

    import sae_lens

    spec.validate(d_in=1)  # width / k / arch rules do not depend on d_in: fail before any collection
    subject = load_subject(subject_name, env=env)
    subject.check_hook(hook)
    name = name or f"{subject.name}-{hook.replace('.', '-')}"
    folder = Path(out) if out is not None else artifacts.artifacts_root() / "saes" / name
    runs = Path(work) if work is not None else Path.cwd() / "runs" / "sae"
    if data is not None:
        ds = ActivationDataset.load(data)
        if hook not in ds.shapes:
            raise WorkbenchError(f"{data}: dataset has no activations for hook {hook!r} (it has {ds.hooks})")
    else:
        ds = subject.collect([hook], n=episodes, seed=seed + 100, out=runs / f"{name}-data", progress=progress)
    start = time.perf_counter()
    sae = train_sae(
        ds,
        hook,
        spec,
        metadata={"model_name": subject.name},
        checkpoint_dir=runs / f"{name}-checkpoint",
        resume=resume,
        progress=progress,
    )
    train_seconds = time.perf_counter() - start
    ev = subject.collect([hook], n=eval_episodes, seed=seed + 200, progress=progress)
    rec = reconstruction_metrics(sae, _eval_batches(ev, hook, spec.layout))
    density = rec.pop("density")
    per_row = ShardTokens(ds, hook, spec.batch_size, spec.layout).n_tokens
    metrics: dict = {
        "name": name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sae_lens_version": sae_lens.__version__,
        "train_seconds": train_seconds,
        "train_data": {
            "description": (ds.meta.get("source") or {}).get("description"),
            "rows": len(ds),
            "tokens": per_row,
        },
        "eval_data": (ev.meta.get("source") or {}).get("description"),
        "reconstruction": rec,
        "density": density.tolist(),
    }
    metrics["subject_kind"] = subject.kind
    metrics["fidelity"] = subject.fidelity(sae, hook, episodes=fidelity_episodes, seed=seed)
    files: dict[str, str | bytes] = {}
    sections: tuple[str, ...] = ()
    views = find_views(subject)
    if views is not None and views.card is not None:  # the kind's own analyses (goal alignment, steering, ...)
        extra = views.card(
            sae,
            subject,
            hook,
            align_episodes=align_episodes,
            steer_episodes=steer_episodes,
            seed=seed,
            progress=progress,
        )
        metrics.update(extra.metrics)
        files.update(extra.files)
        sections = tuple(extra.sections)
    info = sae_info(sae)
    command = command or f"workbench sae train {subject_name} --hook {hook}"
    files["card.md"] = card_text(name, info, metrics, command, sections=sections)
    files["metrics.json"] = json.dumps(_jsonable(metrics), indent=2) + "\n"
    save_sae(sae, folder, files)
    return folder
