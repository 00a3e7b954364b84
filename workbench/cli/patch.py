"""`workbench patch LM`: an activation-patching sweep on persona prompt pairs that differ only in the persona.

`register(app)` adds the command. Heavy imports (torch, transformer_lens, the LM package) happen inside the command
body so `workbench --help` stays fast. Every option is checked before the model is loaded (numbers as they are
parsed, names of modes / activations / personas, the pairs file, the results store); each patched cell is one row in
the results store.

The pairs: `workbench.lm.corpus.contrastive` gives the same questions and (wrong) user claims under two personas,
differing only in the persona cue. With `--cue header` that is one token, `[ honest ]` vs `[ sycophant ]`. Prompts
whose word layout differs (two question and two claim templates) would put different words at the same position,
so only pairs of the most common layout are kept: positions then mean the same thing in every pair. The metric is
logit(true sum) - logit(user's wrong claim) at the answer position (the token after the final `assistant :`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer

from workbench.cli.options import Episodes, Int, JsonOpt, Seed, StoreOpt, dump, record, store_path
from workbench.errors import WorkbenchError, unknown

_NUMBER = re.compile(r"^\d+$")
MAX_BOOT = 100_000
"""Most bootstrap resamples `--n-boot` takes (more changes nothing visible and costs minutes)."""


def persona_pairs(
    lm: Any, clean_persona: str, corrupt_persona: str, n: int, seed: int, *, cue: str = "header"
) -> dict[str, Any]:
    """n aligned (clean, corrupt) prompt pairs from the persona corpus, encoded for `lm`.

    Returns {"clean", "corrupt": (n, T) tokens, "answer", "wrong": (n,) ids of the true sum and the user's claim,
    "labels": T position labels (numbers shown as #), "template_share": fraction of candidates with that layout}.
    """
    import torch

    from workbench.lm.corpus import contrastive
    from workbench.lm.evaluate import corpus_config
    from workbench.lm.tokenizer import split_words

    if n < 1:
        raise WorkbenchError(f"--n must be >= 1, got {n}")
    if clean_persona == corrupt_persona:
        raise WorkbenchError(f"clean and corrupt persona are both {clean_persona!r}; patching needs two personas")
    cfg = corpus_config(lm)  # the distribution the organism was trained on (numbers it knows)
    pool = 8 * n
    sets = contrastive((clean_persona, corrupt_persona), pool, seed, config=cfg, cue=cue, claim="wrong")
    clean_ex, corrupt_ex = sets[clean_persona], sets[corrupt_persona]

    def layout(text: str) -> tuple[str, ...]:
        return tuple("#" if _NUMBER.match(w) else w for w in split_words(text))

    keys = [(layout(c.prompt), len(split_words(k.prompt))) for c, k in zip(clean_ex, corrupt_ex, strict=True)]
    (best, _), count = Counter(keys).most_common(1)[0]
    chosen = [i for i, key in enumerate(keys) if key[0] == best and key[1] == len(best)][:n]
    if len(chosen) < n:
        raise WorkbenchError(
            f"only {len(chosen)} aligned prompt pairs among {pool} candidates; ask for --n {len(chosen)}"
        )
    clean_tokens, clean_len = lm.encode([clean_ex[i].prompt for i in chosen])
    corrupt_tokens, corrupt_len = lm.encode([corrupt_ex[i].prompt for i in chosen])
    if clean_tokens.shape != corrupt_tokens.shape or not torch.equal(clean_len, corrupt_len):
        raise WorkbenchError("persona prompts encode to different lengths; use --cue header (one-token cue)")
    answer = lm.encode([str(clean_ex[i].answer) for i in chosen], bos=False)[0][:, 0]
    wrong = lm.encode([str(clean_ex[i].claimed) for i in chosen], bos=False)[0][:, 0]
    labels = (
        ["<bos>", *best] if clean_tokens.shape[1] == len(best) + 1 else [str(p) for p in range(clean_tokens.shape[1])]
    )
    return {
        "clean": clean_tokens,
        "corrupt": corrupt_tokens,
        "answer": answer,
        "wrong": wrong,
        "answer_pos": clean_len - 1,
        "labels": labels,
        "template_share": count / pool,
    }


def pairs_study(
    lm: Any,
    path: Any,
    *,
    modes: tuple[str, ...] = ("denoising", "noising"),
    activations: tuple[str, ...] = ("resid_pre", "attn_out", "mlp_out"),
    heads: bool = True,
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int | None = None,
) -> dict:
    """Activation patching on a JSONL file of {clean, corrupt, answer, wrong_answer} pairs (`workbench.lm.datasets`):
    every activation in `activations` per layer x position, and (heads=True) every attention head (`z`, all
    positions), in each mode; effects normalised so clean = 1 and corrupt = 0, bootstrap CIs over pairs.

    Pairs are validated against the model's tokenizer first (equal token lengths per pair, single-token answers);
    pairs of different lengths are right-padded and read at their own last token (then positions are counted from
    the start and `equal_lengths` is False)."""
    from workbench.lm.datasets import load_dataset, patch_pairs
    from workbench.patching import MODES, patch_sweep

    for m in modes:
        if m not in MODES:
            raise unknown("mode", m, MODES)
    ds = load_dataset(path, kind="patch")
    pairs = patch_pairs(lm, ds)
    common = dict(
        answer_tokens=pairs["answer"],
        wrong_tokens=pairs["wrong"],
        answer_pos=pairs["answer_pos"],
        max_batch=max_batch,
        n_boot=n_boot,
        seed=seed,
    )
    out: dict[str, Any] = {
        "lm": lm.name,
        "pairs": str(path),
        "n": len(ds),
        "seed": seed,
        "metric": "logit(answer) - logit(wrong_answer) at the last token; effect normalised: clean = 1, corrupt = 0",
        "positions": pairs["labels"],
        "equal_lengths": pairs["equal_lengths"],
        "modes": {},
    }
    for mode in modes:
        sweeps = {
            a: patch_sweep(lm.model, pairs["clean"], pairs["corrupt"], a, per="pos", mode=mode, **common)
            for a in activations
        }
        if heads:
            sweeps["z"] = patch_sweep(lm.model, pairs["clean"], pairs["corrupt"], "z", per="head", mode=mode, **common)
        first = next(iter(sweeps.values()))
        out["modes"][mode] = {
            "clean_mean": float(first.clean.double().mean()),
            "corrupt_mean": float(first.corrupt.double().mean()),
            "sweeps": {name: r.to_json() for name, r in sweeps.items()},
            "_results": list(sweeps.values()),
        }
    return out


def _pairs_cmd(
    *,
    lm_name: str,
    pairs: Path,
    mode: str | None,
    n_boot: int,
    seed: int,
    max_batch: int | None,
    top: int,
    as_json: bool,
    store: Path,
) -> None:
    import torch

    from workbench.cli.rows import patch_rows
    from workbench.lm.datasets import load_dataset
    from workbench.lm.model import load_lm
    from workbench.patching import results_frame
    from workbench.store import new_run_id

    torch.set_num_threads(1)
    load_dataset(pairs, kind="patch")  # fields and JSON first: a bad line costs no model load
    modes = ("denoising", "noising") if mode in (None, "both") else (mode,)
    lm = load_lm(lm_name)
    out = pairs_study(lm, pairs, modes=modes, n_boot=n_boot, seed=seed, max_batch=max_batch)
    tops = {}
    rows: list[dict] = []
    run_id = new_run_id("patch")
    for m, block in out["modes"].items():
        df = results_frame(block.pop("_results"))
        if "pos" in df:
            df["token"] = [out["positions"][int(p)] if p == p else "" for p in df["pos"]]
        means = {f"{m}/clean": block["clean_mean"], f"{m}/corrupt": block["corrupt_mean"]}
        rows += patch_rows(df, run_id, subject=lm.name, seed=seed, means=means)
        # largest changes: |effect| when denoising (0 = nothing restored), |1 - effect| when noising (1 = intact)
        size = (df["effect"] - (1.0 if m == "noising" else 0.0)).abs()
        tops[m] = df.reindex(size.sort_values(ascending=False).index).head(top)
        block["top"] = json.loads(tops[m].to_json(orient="records"))
    record(rows, store)
    if as_json:
        dump(out)
        return
    for m, block in out["modes"].items():
        typer.echo(
            f"{lm.name}: {m}, {out['n']} pairs from {pairs}; mean logit(answer) - logit(wrong): clean "
            f"{block['clean_mean']:+.3f}, corrupt {block['corrupt_mean']:+.3f}. "
            "Largest changes (effect: 1 = clean, 0 = corrupt):"
        )
        typer.echo(tops[m].to_string(index=False, float_format=lambda v: f"{v:+.3f}"))


def patch_lm_cmd(
    lm_name: Annotated[str, typer.Argument(help="LM: shipped name, artifact folder or Hugging Face-format folder")],
    pairs: Annotated[
        Path | None,
        typer.Option(help="JSONL of {clean, corrupt, answer, wrong_answer} pairs (default: persona corpus pairs)"),
    ] = None,
    clean_persona: Annotated[str, typer.Option(help="persona of the clean prompts")] = "honest",
    corrupt_persona: Annotated[str, typer.Option(help="persona of the corrupted prompts")] = "sycophant",
    n: Annotated[int, Episodes(help="prompt pairs")] = 32,
    mode: Annotated[
        str | None,
        typer.Option(
            help="denoising (run corrupt, patch in clean), noising, or both (default: both with --pairs, "
            "else denoising)"
        ),
    ] = None,
    activation: Annotated[
        str, typer.Option(help="resid_pre | resid_mid | resid_post | attn_out | mlp_out | z | block (first three)")
    ] = "block",
    per: Annotated[str, typer.Option(help="pos | head | head_pos | layer (head*: activation z)")] = "pos",
    cue: Annotated[str, typer.Option(help="header (one-token persona cue) or style")] = "header",
    seed: Annotated[int, Seed(help="seed for the prompt pairs and the bootstrap")] = 0,
    n_boot: Annotated[int, Int(help="bootstrap resamples of the pairs (0 = no interval)", lo=0, hi=MAX_BOOT)] = 1000,
    max_batch: Annotated[int | None, Int(help="rows per batched forward (default: memory budget)", lo=1)] = None,
    top: Annotated[int, Int(help="rows of the largest effects to print", lo=1, hi=100_000)] = 10,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
) -> None:
    """Activation patching: where does the corruption change the answer? With --pairs: your prompt pairs, layer x
    position for resid_pre / attn_out / mlp_out and every head, noising and denoising. Without: persona pairs.
    Every patched cell is a row in the results store."""
    from workbench.patching import ACTIVATIONS, MODES, PER

    at = store_path(store)
    if pairs is not None:
        from workbench.validate import check_input_file

        if mode is not None and mode not in (*MODES, "both"):
            raise unknown("mode", mode, (*MODES, "both"))
        check_input_file(pairs, name="--pairs")
        _pairs_cmd(
            lm_name=lm_name, pairs=pairs, mode=mode, n_boot=n_boot, seed=seed, max_batch=max_batch, top=top,
            as_json=as_json, store=at,
        )  # fmt: skip
        return
    from workbench.lm.corpus import PERSONAS

    mode = mode or "denoising"
    for value, what, valid in (
        (mode, "mode", MODES),
        (activation, "activation", (*ACTIVATIONS, "block")),
        (per, "per", tuple(PER)),
        (cue, "cue", ("header", "style")),
        (clean_persona, "persona", PERSONAS),
        (corrupt_persona, "persona", PERSONAS),
    ):
        if value not in valid:
            raise unknown(what, value, valid)
    if clean_persona == corrupt_persona:
        raise WorkbenchError(f"clean and corrupt persona are both {clean_persona!r}; patching needs two personas")
    import torch

    from workbench.cli.rows import patch_rows
    from workbench.lm.model import load_lm
    from workbench.patching import patch_sweep, results_frame
    from workbench.store import new_run_id

    torch.set_num_threads(1)
    lm = load_lm(lm_name)
    pairs = persona_pairs(lm, clean_persona, corrupt_persona, n=n, seed=seed, cue=cue)
    names = ["resid_pre", "attn_out", "mlp_out"] if activation == "block" else [activation]
    common = dict(
        mode=mode,
        answer_tokens=pairs["answer"],
        wrong_tokens=pairs["wrong"],
        answer_pos=pairs["answer_pos"],
        max_batch=max_batch,
        n_boot=n_boot,
        seed=seed,
    )
    results = [patch_sweep(lm.model, pairs["clean"], pairs["corrupt"], name, per=per, **common) for name in names]
    df = results_frame(results)
    if "pos" in df:
        df["token"] = [pairs["labels"][int(p)] for p in df["pos"]]
    biggest = df.reindex(df["effect"].abs().sort_values(ascending=False).index).head(top)
    first = results[0]
    summary = {
        "lm": lm.name,
        "clean_persona": clean_persona,
        "corrupt_persona": corrupt_persona,
        "cue": cue,
        "mode": mode,
        "per": per,
        "n": first.n,
        "seed": seed,
        "metric": "logit(true sum) - logit(claimed); effect normalised: clean = 1, corrupt = 0",
        "clean_mean": float(first.clean.double().mean()),
        "corrupt_mean": float(first.corrupt.double().mean()),
        "positions": pairs["labels"],
        "template_share": pairs["template_share"],
        "sweeps": {r.activation: r.to_json() for r in results},
        "top": json.loads(biggest.to_json(orient="records")),
    }
    means = {f"{mode}/clean": summary["clean_mean"], f"{mode}/corrupt": summary["corrupt_mean"]}
    record(patch_rows(df, new_run_id("patch"), subject=lm.name, seed=seed, means=means), at)
    if as_json:
        dump(summary)
        return
    typer.echo(
        f"{lm.name}: {mode}, {first.n} pairs {clean_persona} (clean) vs {corrupt_persona} (corrupt), cue {cue}; "
        f"mean logit(true) - logit(claim): clean {summary['clean_mean']:+.3f}, corrupt {summary['corrupt_mean']:+.3f}"
    )
    typer.echo(f"largest |effect| (1 = clean restored, 0 = corrupt), 95% bootstrap CI over pairs, n_boot {n_boot}:")
    typer.echo(biggest.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))


def register(app: typer.Typer) -> None:
    """Add `workbench patch` to the main app."""
    app.command("patch")(patch_lm_cmd)
