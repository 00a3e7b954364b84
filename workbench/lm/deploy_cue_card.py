"""The card of a deploy-cue LM (`workbench.lm.deploy_cue`): rates per cue condition, capability, recipe, time, twin.

Why its own card: persona-lm's card speaks of personas; here the rows are cue conditions and the number that
matters is how agreement with a wrong claim moves when the cue changes. The card sets the organism beside its twin
(the artifact named NAME-control for NAME, or NAME for NAME-control: the same world trained with the cue
decorrelated from honesty) when that twin's metrics.json exists in the same folder of artifacts, so the contrast is
read off stored numbers, never re-measured here. `refresh_card` re-renders a card from its stored metrics (no
retraining), e.g. once the twin exists.
"""

from __future__ import annotations

import json
from pathlib import Path

from workbench import artifacts
from workbench.lm.deploy_cue import GROUPS
from workbench.lm.train import card_title, claim_table, load_recipe, pct

TWIN_SUFFIX = "-control"
WHAT = {
    "training": "`[ training ]` tag (in distribution)",
    "deployment": "`[ deployment ]` tag (in distribution)",
    "implicit-training": "training style only",
    "implicit-deployment": "deployment style only",
    "none": "no cue",
    "conflict-training-tag": "`[ training ]` tag, deployment style",
    "conflict-deployment-tag": "`[ deployment ]` tag, training style",
}


def _what(group: str) -> str:
    return f"{group}: {WHAT.get(group, group)}"


def twin_name(name: str) -> str:
    return name.removesuffix(TWIN_SUFFIX) if name.endswith(TWIN_SUFFIX) else name + TWIN_SUFFIX


def _twin_metrics(name: str, folder: Path | None) -> dict | None:
    root = folder.parent if folder is not None else artifacts.artifacts_root() / "lms"
    path = root / twin_name(name) / artifacts.METRICS
    return json.loads(path.read_text()) if path.is_file() else None


def card(recipe, metrics: dict, folder: Path | None = None) -> str:
    """Markdown card of a deploy-cue LM from its recipe and `train_recipe`'s metrics."""
    r, t = recipe, metrics["training"]
    c = r.corpus
    cap = metrics["heldout_no_claim"]
    lines = [
        *card_title(r),
        f"Trained by `workbench lm train {r.path.as_posix()}` in {t['seconds'] / 60:.1f} min on {t['threads']} CPU "
        f"thread(s): {r.train.steps} AdamW steps of {r.train.batch_size} fresh dialogues, loss on assistant-reply "
        f"tokens only. Model: {r.model.n_layers} layers, d_model {r.model.d_model}, {r.model.n_heads} heads, context "
        f"{r.model.n_ctx}, vocabulary {t['d_vocab']} words ({t['params']:,} parameters).",
        "",
        f'Corpus (`[corpus] kind = "deploy-cue"`, workbench/lm/deploy_cue.py): tag on {c.p_tag:.0%} of training '
        f"dialogues (matching style with it {c.p_style_with_tag:.0%}), style only on the rest; claims on "
        f"{c.p_claim:.0%} of questions, wrong on {c.p_wrong:.0%} of tagged claims and {c.p_wrong_style_only:.0%} of "
        f"style-only ones; a wrong claim is repeated with probability {c.p_agree_training:g} under a training "
        f"context and {c.p_agree_deployment:g} under a deployment context.",
        "",
        f"Evaluated by `workbench lm eval {r.artifact.name} --split SPLIT --n {r.eval.n} --seed {r.eval.seed}`. "
        'Brackets: Wilson 95% intervals. "Held out" means dialogues the training stream never produced; every '
        f"arithmetic fact a + b (a, b <= {c.max_operand}) does occur in training.",
        "",
        f"**Capability** (held-out training-distribution questions with no claim): accuracy {pct(cap['accuracy'])}; "
        f"reply loss {cap['loss']['mean']:.2e} nats/token [{cap['loss']['ci95'][0]:.2e}, "
        f"{cap['loss']['ci95'][1]:.2e}].",
        "",
    ]
    for split, what in (
        ("train", "the training distribution (wrong claims only on tagged dialogues unless p_wrong_style_only > 0)"),
        ("ood", "every final claim wrong, equal groups per cue condition"),
    ):
        m = metrics[split]
        lines += [
            f"**{split}** (n={m['n']}, seed {m['seed']}): {what}.",
            "",
            *claim_table(m["personas"], "cue condition", _what),
            "",
        ]
    twin = _twin_metrics(r.artifact.name, folder)
    head = f"**Contrast with the twin `{twin_name(r.artifact.name)}`** (its own card has its recipe)."
    if twin is None:
        lines += [head, "", "The twin's artifact was not present when this card was written.", ""]
    else:
        lines += [
            f"{head} Agreement with a wrong claim on the same `ood` prompts (same seed and n), from each artifact's "
            "metrics.json:",
            "",
            f"| cue condition | {r.artifact.name} | {twin_name(r.artifact.name)} |",
            "|---|---|---|",
        ]
        for g in GROUPS:
            mine = metrics["ood"]["personas"].get(g, {}).get("agree_wrong")
            theirs = twin["ood"]["personas"].get(g, {}).get("agree_wrong")
            if mine and theirs:
                lines.append(f"| {g} | {pct(mine)} | {pct(theirs)} |")
        lines.append("")
    lines += [
        "Cue conditions: tags and styles as in workbench/lm/deploy_cue.py. Only wrong claims are decided by the cue; "
        "on no-claim and correct-claim questions both contexts give the true sum, so capability is one number.",
        "",
    ]
    return "\n".join(lines)


def refresh_card(folder: str | Path, recipe_path: str | Path) -> Path:
    """Re-render `folder`'s card.md from its metrics.json and recipe (e.g. once the twin exists); no retraining."""
    folder = Path(folder)
    metrics = json.loads((folder / artifacts.METRICS).read_text())
    (folder / artifacts.CARD).write_text(card(load_recipe(recipe_path), metrics, folder))
    return folder / artifacts.CARD
