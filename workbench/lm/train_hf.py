"""`workbench lm train agents/register-lm.toml`: a subword tokenizer and a GPT-2 trained here, saved as a plain
Hugging Face folder.

Why a Hugging Face folder and not our artifact format: this organism is the worked example of "your model, your
dataset". It is saved exactly as a user's own model would be (`save_pretrained`: config.json without `n_ctx`,
model.safetensors, a tokenizer trained with the `tokenizers` library), so every verb reaches it through the same
`load_lm` path as any local model, and its card and metrics sit beside the weights.

Training is resumable: every `checkpoint_every` steps the model, the AdamW state and the step are written as
safetensors + JSON into `<out>.ckpt/`; a rerun of the same recipe continues from there (the data of step s is a
function of (seed, s), so a resumed run sees the same batches). Training uses `threads` CPU threads (default 1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.lm import notes
from workbench.lm.notes import NotesConfig
from workbench.lm.train_loop import EvalSection, TrainSection, adamw, due, train_step, training_record, with_steps
from workbench.metrics import bootstrap_ci, wilson_ci
from workbench.recipes import ArtifactSection, check_sections, from_table, read_toml


@dataclass(frozen=True)
class TokenizerSection:
    """`[tokenizer]`: a byte-level BPE trained with the `tokenizers` library on `n_texts` training notes."""

    vocab_size: int = 400
    n_texts: int = 4000
    seed: int = 0


@dataclass(frozen=True)
class GPT2Section:
    """`[model]`: GPT2Config fields (vocab_size comes from the tokenizer)."""

    n_layer: int = 4
    n_embd: int = 96
    n_head: int = 4
    n_inner: int = 384
    n_positions: int = 64


@dataclass(frozen=True)
class HFTrainSection(TrainSection):
    """`[train]`: persona-lm's AdamW run with register-lm's defaults, plus resumable checkpoints."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    checkpoint_every: int = 250
    """Steps between checkpoints in `<out>.ckpt/` (a rerun resumes from the last)."""


@dataclass(frozen=True)
class HFEvalSection(EvalSection):
    """`[eval]`: register-lm's evaluation size and seed."""

    n: int = 800
    seed: int = 20_260_101


@dataclass(frozen=True)
class HFRecipe:
    path: Path
    artifact: ArtifactSection
    tokenizer: TokenizerSection
    model: GPT2Section
    corpus: NotesConfig
    train: HFTrainSection
    eval: HFEvalSection = field(default_factory=HFEvalSection)
    raw: dict = field(default_factory=dict)


def is_hf_recipe(path: str | Path) -> bool:
    """A recipe with a `[tokenizer]` table trains a subword GPT-2 (this module); without one, persona-lm's trainer."""
    return "tokenizer" in read_toml(path)


def load_hf_recipe(path: str | Path) -> HFRecipe:
    path = Path(path)
    data = read_toml(path)
    where = str(path)
    check_sections(
        data,
        {"artifact": True, "tokenizer": True, "model": False, "corpus": False, "train": False, "eval": False},
        where,
    )
    return HFRecipe(
        path=path,
        artifact=from_table(ArtifactSection, data["artifact"], f"{where} [artifact]"),
        tokenizer=from_table(TokenizerSection, data["tokenizer"], f"{where} [tokenizer]"),
        model=from_table(GPT2Section, data.get("model", {}), f"{where} [model]"),
        corpus=from_table(NotesConfig, data.get("corpus", {}), f"{where} [corpus]"),
        train=from_table(HFTrainSection, data.get("train", {}), f"{where} [train]"),
        eval=from_table(HFEvalSection, data.get("eval", {}), f"{where} [eval]"),
        raw=data,
    )


# ------------------------------------------------------------------------------------------------ tokenizer
def train_tokenizer(t: TokenizerSection, corpus: NotesConfig):
    """A byte-level BPE (`tokenizers`), wrapped as a transformers fast tokenizer with <|endoftext|> as bos/eos/pad."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=t.vocab_size,
        special_tokens=[notes.EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(notes.tokenizer_texts(t.n_texts, t.seed, corpus), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=notes.EOT, eos_token=notes.EOT, pad_token=notes.EOT, model_max_length=1024
    )
    for register, word in notes.FIRST_WORD.items():
        ids = fast(word, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise WorkbenchError(f"the {register} first word {word!r} is {len(ids)} BPE tokens; raise vocab_size")
    return fast


# ------------------------------------------------------------------------------------------------ data
def encode_batch(tok, texts: list[str], n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """<|endoftext|> + text + <|endoftext|>, right-padded; returns (tokens (N, T), loss mask (N, T) on targets)."""
    eot = tok.eos_token_id
    rows = [[eot, *tok(t, add_special_tokens=False)["input_ids"], eot] for t in texts]
    if max(len(r) for r in rows) > n_ctx:
        raise WorkbenchError(f"a training note is {max(len(r) for r in rows)} tokens, over n_positions {n_ctx}")
    T = max(len(r) for r in rows)
    tokens = torch.full((len(rows), T), eot, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, 1 : len(r)] = True
    return tokens, mask


# ------------------------------------------------------------------------------------------------ checkpoints
def _recipe_hash(recipe: HFRecipe) -> str:
    return hashlib.sha256(json.dumps(recipe.raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_checkpoint(folder: Path, model, opt, step: int, log: list, seconds: float, recipe_hash: str) -> None:
    """Model + AdamW moments as safetensors, step/log as JSON; written to a temp folder, then renamed (atomic)."""
    from safetensors.torch import save_file, save_model

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding / unembedding
    names = {id(p): n for n, p in model.named_parameters()}
    opt_state = {}
    steps = {}
    for group in opt.param_groups:
        for p in group["params"]:
            st = opt.state.get(p)
            if not st:
                continue
            n = names[id(p)]
            opt_state[f"{n}.exp_avg"] = st["exp_avg"].contiguous()
            opt_state[f"{n}.exp_avg_sq"] = st["exp_avg_sq"].contiguous()
            steps[n] = float(st["step"])
    save_file(opt_state, str(tmp / "optimizer.safetensors"))
    artifacts.write_json(
        tmp / "state.json", {"step": step, "log": log, "seconds": seconds, "recipe": recipe_hash, "adam_steps": steps}
    )
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def load_checkpoint(folder: Path, model, opt, recipe_hash: str) -> tuple[int, list, float]:
    """Restore a checkpoint written by `save_checkpoint` for the same recipe; (0, [], 0.0) when there is none."""
    from safetensors.torch import load_file, load_model

    state_file = folder / "state.json"
    if not state_file.is_file():
        return 0, [], 0.0
    state = json.loads(state_file.read_text())
    if state.get("recipe") != recipe_hash:
        raise WorkbenchError(f"{folder}: checkpoint of a different recipe; delete the folder to start over")
    load_model(model, str(folder / "model.safetensors"))
    moments = load_file(str(folder / "optimizer.safetensors"))
    for n, p in model.named_parameters():
        if f"{n}.exp_avg" in moments:
            opt.state[p] = {
                "step": torch.tensor(state["adam_steps"][n]),
                "exp_avg": moments[f"{n}.exp_avg"],
                "exp_avg_sq": moments[f"{n}.exp_avg_sq"],
            }
    return int(state["step"]), list(state["log"]), float(state["seconds"])


# ------------------------------------------------------------------------------------------------ evaluation
def first_word_scores(lm, prompts: list[str]) -> np.ndarray:
    """log P(" Dear") - log P(" hey") for the token after each prompt (positive = formal), (N,)."""
    from workbench.lm.toolkit import next_token_logprobs

    dear, hey = (lm.single_token(notes.FIRST_WORD[r]) for r in ("formal", "casual"))
    lp = next_token_logprobs(lm, prompts)
    return (lp[:, dear] - lp[:, hey]).numpy()


def _rate(flags: np.ndarray) -> dict:
    k, n = int(flags.sum()), int(flags.size)
    lo, hi = wilson_ci(k, n)
    return {"rate": k / n if n else float("nan"), "ci95": [lo, hi], "n": n}


def evaluate_register(lm, n: int, seed: int, config: NotesConfig | None = None) -> dict:
    """Per split and cue: the rate of writing a formal first word (" Dear" scores above " hey"), Wilson CIs, and the
    mean log-prob difference (bootstrap CI). JSON-ready."""
    out: dict = {}
    for split in notes.SPLITS:
        ex = notes.generate(split, n, seed, config)
        score = first_word_scores(lm, [e.prompt for e in ex])
        groups: dict = {}
        for key in sorted({(e.header or "none", e.topic_kind) for e in ex}):
            idx = np.array([(e.header or "none", e.topic_kind) == key for e in ex])
            s = score[idx]
            groups[f"header {key[0]}, {key[1]} topic"] = {
                "formal": _rate(s > 0),
                "logp_dear_minus_hey": {
                    "mean": float(s.mean()),
                    "ci95": list(bootstrap_ci(s, seed=seed)),
                    "n": int(s.size),
                },
            }
        out[split] = {"n": n, "seed": seed, "groups": groups}
    return out


def heldout_loss(lm, n: int, seed: int, config: NotesConfig) -> dict:
    from workbench.lm.toolkit import text_nll

    ex = notes.generate("train", n, seed, config)
    nll = text_nll(lm, [e.text for e in ex])
    return {"mean": float(nll.mean()), "ci95": list(bootstrap_ci(nll, seed=seed)), "n": int(nll.size)}


def _card(recipe: HFRecipe, metrics: dict) -> str:
    r = recipe
    tr = metrics["training"]
    lines = [
        f"# {r.artifact.name}",
        "",
        r.artifact.description.strip(),
        "",
        f"Trained by `workbench lm train {r.path.as_posix()}` in {tr['seconds'] / 60:.1f} min on {tr['threads']} CPU "
        f"thread(s): {r.train.steps} AdamW steps of {r.train.batch_size} fresh notes. Model: GPT-2 architecture, "
        f"{r.model.n_layer} layers, d_model {r.model.n_embd}, {r.model.n_head} heads, context {r.model.n_positions}; "
        f"byte-level BPE tokenizer trained here with `tokenizers` ({tr['d_vocab']} tokens); "
        f"{tr['params']:,} parameters. Saved with `save_pretrained` (a plain Hugging Face folder).",
        "",
        f"Held-out loss on training-distribution notes: {metrics['heldout_loss']['mean']:.3f} nats/token "
        f"[{metrics['heldout_loss']['ci95'][0]:.3f}, {metrics['heldout_loss']['ci95'][1]:.3f}] "
        f"(n={metrics['heldout_loss']['n']}).",
        "",
        "Rate of a formal first word (log P(' Dear') > log P(' hey') after the prompt's `:`), Wilson 95% CIs; "
        f"`workbench.lm.train_hf.evaluate_register` with n={r.eval.n}, seed {r.eval.seed} per split:",
        "",
        "| split | cue | formal first word | mean log P(Dear) - log P(hey) |",
        "|---|---|---|---|",
    ]
    for split in notes.SPLITS:
        for group, g in metrics["eval"][split]["groups"].items():
            f, d = g["formal"], g["logp_dear_minus_hey"]
            lines.append(
                f"| {split} | {group} | {f['rate']:.3f} [{f['ci95'][0]:.3f}, {f['ci95'][1]:.3f}] (n={f['n']}) | "
                f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}] |"
            )
    lines += [
        "",
        "In training the `[ formal ]` / `[ casual ]` header sets the register and the topic agrees with it with "
        f"probability {r.corpus.p_topic_match} (work topics formal, leisure topics casual). `noheader` removes the "
        "header: the rows show whether the model falls back on the topic (the proxy). `conflict` puts every note on "
        "a topic of the other kind: the header should still win. See workbench/lm/notes.py.",
        "",
    ]
    return "\n".join(lines)


def train_hf_recipe(
    path: str | Path, out: str | Path | None = None, steps: int | None = None, progress: bool = True
) -> Path:
    """Train the recipe's tokenizer and GPT-2, evaluate, and save a Hugging Face folder (default artifacts/lms/NAME)
    with card.md and metrics.json beside it. Resumes from `<out>.ckpt/` when a checkpoint of this recipe exists."""
    from tqdm import tqdm
    from transformers import GPT2Config, GPT2LMHeadModel

    from workbench.lm.model import load_lm

    recipe = with_steps(load_hf_recipe(path), steps)
    if steps is not None:
        recipe = replace(recipe, raw={**recipe.raw, "_steps": steps})
    t, m = recipe.train, recipe.model
    torch.set_num_threads(max(1, t.threads))
    folder = Path(out) if out is not None else artifacts.artifacts_root() / "lms" / recipe.artifact.name
    ckpt = folder.with_name(folder.name + ".ckpt")
    tok = train_tokenizer(recipe.tokenizer, recipe.corpus)
    torch.manual_seed(t.seed)
    cfg = GPT2Config(
        vocab_size=len(tok),
        n_positions=m.n_positions,
        n_embd=m.n_embd,
        n_layer=m.n_layer,
        n_head=m.n_head,
        n_inner=m.n_inner,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(cfg)
    opt = adamw(model, t)
    rhash = _recipe_hash(recipe)
    start_step, log, seconds = load_checkpoint(ckpt, model, opt, rhash)
    if start_step:
        print(f"resuming {recipe.artifact.name} from step {start_step} ({ckpt})", flush=True)
    model.train()
    t0 = time.time() - seconds
    bar = tqdm(range(start_step, t.steps), desc=f"train {recipe.artifact.name}", disable=not progress)
    for step in bar:
        ex = notes.generate("train", t.batch_size, t.seed * 1_000_003 + step, recipe.corpus)
        tokens, mask = encode_batch(tok, [e.text for e in ex], m.n_positions)
        loss = train_step(model, opt, tokens, mask, step=step, t=t, logits_of=lambda out: out.logits)
        if due(step, t.log_every, t):
            log.append({"step": step + 1, "loss": loss.item(), "seconds": time.time() - t0})
            if not progress:
                print(f"step {step + 1}: loss {loss.item():.4f}", flush=True)
        if (step + 1) % t.checkpoint_every == 0 and step + 1 < t.steps:
            save_checkpoint(ckpt, model, opt, step + 1, log, time.time() - t0, rhash)
    seconds = time.time() - t0
    model.eval()
    tmp = folder.with_name(folder.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    (tmp / "generation_config.json").unlink(missing_ok=True)
    lm = load_lm(tmp)
    e = recipe.eval
    metrics = {
        "heldout_loss": heldout_loss(lm, min(e.n, 400), e.seed + 1, recipe.corpus),
        "eval": evaluate_register(lm, e.n, e.seed, recipe.corpus),
        "training": training_record(seconds, t, model, len(tok), log),
        "recipe": recipe.raw,
    }
    artifacts.write_json(tmp / artifacts.METRICS, metrics)
    (tmp / artifacts.CARD).write_text(_card(recipe, metrics))
    notes.write_datasets(tmp, lm=lm)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    shutil.rmtree(ckpt, ignore_errors=True)
    return folder


def recipe_summary(recipe: HFRecipe) -> dict:
    return {k: asdict(v) for k, v in (("model", recipe.model), ("train", recipe.train))}
