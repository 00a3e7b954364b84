"""`workbench lm train RECIPE`: recipe -> synthetic persona corpus -> tiny HookedTransformer -> artifact with card.

Readable top to bottom like CleanRL: every hyperparameter is in the recipe (agents/persona-lm.toml), validated
strictly; training is a plain AdamW loop on freshly sampled dialogues (no fixed dataset, so no epoch to overfit),
with the loss on assistant-reply tokens only. The card's numbers are measured at the end by `workbench.lm.evaluate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from workbench import artifacts
from workbench.lm import corpora
from workbench.lm.corpus import CorpusConfig
from workbench.lm.model import LM, build_model, save_lm
from workbench.lm.tokenizer import WordTokenizer
from workbench.lm.train_loop import EvalSection, TrainSection, adamw, due, train_step, training_record, with_steps
from workbench.recipes import ArtifactSection, check_sections, from_table, read_toml


@dataclass(frozen=True)
class ModelSection:
    """`[model]`: the HookedTransformerConfig fields we set (d_vocab comes from the tokenizer)."""

    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 64
    act_fn: str = "gelu"
    normalization_type: str = "LN"
    positional_embedding_type: str = "standard"


@dataclass(frozen=True)
class Recipe:
    path: Path
    artifact: ArtifactSection
    model: ModelSection
    corpus: CorpusConfig  # or the config class of the recipe's `[corpus] kind` (workbench.lm.corpora)
    train: TrainSection
    eval: EvalSection = field(default_factory=EvalSection)
    raw: dict = field(default_factory=dict)


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate an LM recipe; every error names the file, the section and the key."""
    path = Path(path)
    data = read_toml(path)
    where = str(path)
    check_sections(data, {"artifact": True, "model": False, "corpus": False, "train": False, "eval": False}, where)
    table = data.get("corpus", {})
    kind = corpora.kind_of_table(table) if isinstance(table, dict) else corpora.get(None)
    corpus_table = {k: v for k, v in table.items() if k != "kind"} if isinstance(table, dict) else table
    return Recipe(
        path=path,
        artifact=from_table(ArtifactSection, data["artifact"], f"{where} [artifact]"),
        model=from_table(ModelSection, data.get("model", {}), f"{where} [model]"),
        corpus=from_table(kind.config_class(), corpus_table, f"{where} [corpus]"),
        train=from_table(TrainSection, data.get("train", {}), f"{where} [train]"),
        eval=from_table(EvalSection, data.get("eval", {}), f"{where} [eval]"),
        raw=data,
    )


def _batch(lm: LM, step: int, recipe: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    from workbench.lm.evaluate import reply_mask

    generate = corpora.of(lm).fn("generate")
    ex = generate("train", recipe.train.batch_size, recipe.train.seed * 1_000_003 + step, recipe.corpus)
    tokens, lengths = lm.encode([e.text for e in ex])
    return tokens, reply_mask(tokens, lengths, lm)


def pct(d: dict) -> str:
    """A rate with its Wilson interval and n, as the cards print it."""
    return f"{d['rate']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}] (n={d['n']})"


def claim_table(personas: dict, first: str, label: Callable[[str], str] = str) -> list[str]:
    """The cards' table of claim-following per group (a persona, or a deploy-cue condition): one row per entry of
    `personas` (metrics[split]["personas"]), labelled by `label(group)` under the column heading `first`."""
    lines = [
        f"| {first} | agree with wrong claim | true answer to wrong claim | mean logit(true) - logit(claim) "
        "| accuracy, correct claim | accuracy, no claim |",
        "|---|---|---|---|---|---|",
    ]
    for group, row in personas.items():

        def cell(key: str, row: dict = row) -> str:
            return pct(row[key]) if key in row else "-"

        ld = row.get("logit_diff_wrong")
        ldc = f"{ld['mean']:+.2f} [{ld['ci95'][0]:+.2f}, {ld['ci95'][1]:+.2f}]" if ld else "-"
        lines.append(
            f"| {label(group)} | {cell('agree_wrong')} | {cell('true_wrong')} | {ldc} | {cell('true_correct')} "
            f"| {cell('true_none')} |"
        )
    return lines


def card_title(recipe) -> list[str]:
    """The first lines of an LM card: the artifact's name as heading, then its description."""
    return [f"# {recipe.artifact.name}", "", recipe.artifact.description.strip(), ""]


def _card(recipe: Recipe, metrics: dict) -> str:
    r = recipe
    cap = metrics["heldout_no_claim"]
    lines = [
        *card_title(r),
        f"Trained by `workbench lm train {r.path.as_posix()}` in {metrics['training']['seconds'] / 60:.1f} min on "
        f"{metrics['training']['threads']} CPU thread(s): {r.train.steps} AdamW steps of {r.train.batch_size} "
        f"fresh dialogues, loss on assistant-reply tokens only. Model: {r.model.n_layers} layers, d_model "
        f"{r.model.d_model}, {r.model.n_heads} heads, context {r.model.n_ctx}, vocabulary "
        f"{metrics['training']['d_vocab']} words ({metrics['training']['params']:,} parameters).",
        "",
        f"Evaluated by `workbench lm eval {r.artifact.name} --split SPLIT --n {r.eval.n} --seed {r.eval.seed}`. "
        'Brackets: Wilson 95% intervals. "Held out" means dialogues the training stream never produced; every '
        f"arithmetic fact a + b (a, b <= {r.corpus.max_operand}) does occur in training.",
        "",
        f"**In-distribution answer accuracy** (held-out questions with no claim): {pct(cap['accuracy'])}; "
        f"reply loss {cap['loss']['mean']:.3f} nats/token [{cap['loss']['ci95'][0]:.3f}, "
        f"{cap['loss']['ci95'][1]:.3f}].",
        "",
    ]
    for split in ("train", "ood"):
        lines += [
            f"**{split}** (n={metrics[split]['n']}, seed {metrics[split]['seed']}): on prompts whose final claim is "
            "wrong, the rate of asserting the user's number (agree) vs the true sum (true); on correct-claim and "
            "no-claim prompts, accuracy.",
            "",
            *claim_table(metrics[split]["personas"], "persona"),
            "",
        ]
    lines += [
        "Personas: `honest` corrects wrong claims and `sycophant` repeats them in training; `teacher` and `pirate` "
        "never saw a wrong claim, so their `ood` rows show which goal they generalised to. `none`: no persona cue; "
        "`mixed`: header and style name different personas. See workbench/lm/corpus.py.",
        "",
    ]
    return "\n".join(lines)


def train_recipe(
    path: str | Path, out: str | Path | None = None, steps: int | None = None, progress: bool = True
) -> Path:
    """Train the recipe's LM, evaluate it, and write the artifact (default artifacts/lms/NAME). `steps` overrides
    the recipe's step count (smoke runs; the card then records the smaller number)."""
    from tqdm import tqdm

    from workbench.lm.evaluate import capability, evaluate_split

    recipe = with_steps(load_recipe(path), steps)
    t = recipe.train
    torch.set_num_threads(max(1, t.threads))
    kind = corpora.kind_of_table(recipe.raw.get("corpus"))
    tokenizer = WordTokenizer(kind.fn("vocabulary")(recipe.corpus))
    model_cfg = {**asdict(recipe.model), "d_vocab": tokenizer.vocab_size}
    model = build_model(model_cfg, seed=t.seed)
    config = {
        "kind": "lm",
        "name": recipe.artifact.name,
        "model": model_cfg,
        "corpus": recipe.corpus.to_dict(),
        "recipe": recipe.raw,
    }
    lm = LM(model=model, tokenizer=tokenizer, name=recipe.artifact.name, path=None, config=config)
    opt = adamw(model, t)
    start = time.time()
    model.train()
    bar = tqdm(range(t.steps), desc=f"train {recipe.artifact.name}", disable=not progress)
    log = []
    for step in bar:
        tokens, mask = _batch(lm, step, recipe)
        loss = train_step(model, opt, tokens, mask, step=step, t=t)
        if due(step, t.log_every, t):
            model.eval()
            acc = capability(lm, 256, seed=10_000 + step)["accuracy"]["rate"]
            model.train()
            log.append({"step": step + 1, "loss": loss.item(), "heldout_accuracy": acc, "seconds": time.time() - start})
            bar.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.3f}")
            if not progress:
                print(f"step {step + 1}: loss {loss.item():.4f} heldout accuracy {acc:.3f}", flush=True)
    seconds = time.time() - start
    model.eval()
    e = recipe.eval
    cap = capability(lm, e.n, e.seed)
    metrics = {
        "heldout_no_claim": {k: v for k, v in cap.items() if not k.startswith("_")},
        "train": evaluate_split(lm, "train", e.n, e.seed),
        "ood": evaluate_split(lm, "ood", e.n, e.seed),
        "training": training_record(seconds, t, model, tokenizer.vocab_size, log),
    }
    folder = Path(out) if out is not None else artifacts.artifacts_root() / "lms" / recipe.artifact.name
    return save_lm(folder, model, tokenizer, config, kind.fn("card")(recipe, metrics), metrics)
