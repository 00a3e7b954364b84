"""Load, save and encode for language-model subjects: our own artifacts and locally stored pretrained models.

Why one `LM` object: every LM experiment needs the same four things -- a `HookedTransformer`, the tokenizer that
made its vocabulary, where it came from, and a way to turn strings into a right-padded (N, T) batch with lengths.
`load_lm(name_or_path)` returns that for

- a workbench artifact (`artifacts/lms/NAME` or a folder with weights.safetensors + config.json + tokenizer.json),
- a Hugging Face model folder written by `save_pretrained` (config.json + model.safetensors/pytorch_model.bin),
- a model name (e.g. `gpt2`) that is already in the local Hugging Face cache.

Nothing is ever downloaded: HF_HUB_OFFLINE is set and every Hugging Face call uses local_files_only. A model that
is not on disk gives one WorkbenchError naming the model and how to make it available, never a hang or a traceback.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.lm.tokenizer import WordTokenizer

TOKENIZER = "tokenizer.json"
MODEL_KEYS = (
    "n_layers",
    "d_model",
    "n_heads",
    "d_head",
    "d_mlp",
    "n_ctx",
    "d_vocab",
    "act_fn",
    "normalization_type",
    "positional_embedding_type",
    "attn_only",
)


@dataclass
class LM:
    """A hooked language model with its tokenizer. `model` is a `transformer_lens.HookedTransformer` in eval mode.

    `tokenizer` is a `WordTokenizer` for workbench artifacts, a Hugging Face tokenizer (or None) for pretrained
    models. `config` is the artifact's config.json (for pretrained models: {"kind": "hf", "source": ...}).
    """

    model: Any
    tokenizer: Any
    name: str
    path: Path | None
    config: dict = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.model.cfg.n_layers)

    @property
    def n_ctx(self) -> int:
        return int(self.model.cfg.n_ctx)

    def encode(self, texts: list[str], bos: bool = True) -> tuple[Tensor, Tensor]:
        """Texts -> (tokens (N, T) int64 right-padded with the pad id, lengths (N,) int64).

        Why right padding with explicit lengths: the models are causal, so a real position never attends to the
        padding after it; callers read position `lengths - 1` for the last real token. A text longer than the
        model's context raises WorkbenchError (a silently truncated prompt would be a different prompt).
        """
        if isinstance(texts, str):
            texts = [texts]
        if not len(texts):
            raise WorkbenchError("no texts to encode")
        ids = [self._ids(t, bos) for t in texts]
        n_ctx = self.n_ctx
        for i, row in enumerate(ids):
            if len(row) > n_ctx:
                raise WorkbenchError(
                    f"text {i} is {len(row)} tokens but {self.name} has a context of {n_ctx} tokens: "
                    f"{texts[i][:60]!r}..."
                )
            if not row:
                raise WorkbenchError(f"text {i} encodes to no tokens")
        lengths = torch.tensor([len(r) for r in ids], dtype=torch.long)
        tokens = torch.full((len(ids), int(lengths.max())), self.pad_id, dtype=torch.long)
        for i, row in enumerate(ids):
            tokens[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return tokens, lengths

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        if isinstance(tok, WordTokenizer):
            return tok.pad_id
        pid = getattr(tok, "pad_token_id", None)
        return int(pid) if pid is not None else int(getattr(tok, "eos_token_id", 0) or 0)

    def _ids(self, text: str, bos: bool) -> list[int]:
        tok = self.tokenizer
        if isinstance(tok, WordTokenizer):
            return tok.encode(text, bos=bos)
        if tok is None:
            raise WorkbenchError(f"{self.name} was loaded without a tokenizer; pass token ids instead of text")
        ids = list(tok(text)["input_ids"])
        bos_id = getattr(tok, "bos_token_id", None)
        if bos and bos_id is not None and (not ids or ids[0] != bos_id):
            ids = [int(bos_id), *ids]
        return ids

    def __repr__(self) -> str:
        cfg = self.model.cfg
        return (
            f"LM({self.name!r}: {cfg.n_layers} layers, d_model {cfg.d_model}, {cfg.n_heads} heads, "
            f"n_ctx {cfg.n_ctx}, vocab {cfg.d_vocab})"
        )


# --------------------------------------------------------------------------------------------- workbench artifacts


def hooked_config(model_cfg: dict) -> Any:
    """A `HookedTransformerConfig` from the `model` table of an artifact config (keys in MODEL_KEYS)."""
    from transformer_lens import HookedTransformerConfig

    extra = set(model_cfg) - set(MODEL_KEYS)
    if extra:
        raise WorkbenchError(f"unknown model config key {sorted(extra)[0]!r}; valid: {', '.join(MODEL_KEYS)}")
    return HookedTransformerConfig(**model_cfg, device="cpu", seed=None, default_prepend_bos=False)


def build_model(model_cfg: dict, seed: int | None = None) -> Any:
    """A freshly initialised HookedTransformer (deterministic for a seed)."""
    from transformer_lens import HookedTransformer

    if seed is not None:
        torch.manual_seed(int(seed))
    return HookedTransformer(hooked_config(model_cfg), move_to_device=False)


def save_lm(folder: Path, model: Any, tokenizer: WordTokenizer, config: dict, card: str, metrics: dict) -> Path:
    """Write an LM artifact atomically: weights.safetensors, config.json (with the tokenizer's hash),
    tokenizer.json, card.md, metrics.json."""
    from safetensors.torch import save_file

    config = dict(config)
    config["tokenizer"] = {"file": TOKENIZER, "vocab_size": tokenizer.vocab_size, "sha256": tokenizer.sha256()}
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with artifacts.writing(Path(folder)) as tmp:
        save_file(state, str(tmp / artifacts.WEIGHTS))
        artifacts.write_json(tmp / artifacts.CONFIG, config)
        tokenizer.save(tmp / TOKENIZER)
        (tmp / artifacts.CARD).write_text(card)
        artifacts.write_json(tmp / artifacts.METRICS, metrics)
    return Path(folder)


def check_tokenizer(tokenizer: WordTokenizer, config: dict, d_vocab: int, where: str) -> None:
    """Refuse a tokenizer that does not belong to the model: wrong size or a different vocabulary (hash)."""
    if tokenizer.vocab_size != d_vocab:
        raise WorkbenchError(
            f"{where}: tokenizer has {tokenizer.vocab_size} tokens but the model's d_vocab is {d_vocab} "
            "(tokenizer.json does not belong to these weights)"
        )
    want = (config.get("tokenizer") or {}).get("sha256")
    if want and want != tokenizer.sha256():
        raise WorkbenchError(
            f"{where}: tokenizer.json vocabulary (sha256 {tokenizer.sha256()[:12]}) differs from the one the model "
            f"was trained with (sha256 {want[:12]})"
        )


def _load_artifact(folder: Path) -> LM:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = artifacts.read_config(folder)
    if config.get("kind") != "lm":
        raise WorkbenchError(f"{folder} is not an LM artifact (config kind {config.get('kind')!r}, expected 'lm')")
    tok_path = folder / TOKENIZER
    if not tok_path.is_file():
        raise WorkbenchError(f"{folder}: missing {TOKENIZER}")
    tokenizer = WordTokenizer.load(tok_path)
    model_cfg = config.get("model")
    if not isinstance(model_cfg, dict):
        raise WorkbenchError(f"{folder / artifacts.CONFIG}: missing the 'model' table")
    check_tokenizer(tokenizer, config, int(model_cfg.get("d_vocab", -1)), str(folder))
    model = build_model(model_cfg)
    try:
        state = load_file(str(folder / artifacts.WEIGHTS))
    except (OSError, SafetensorError) as err:
        raise WorkbenchError(f"{folder / artifacts.WEIGHTS}: unreadable weights ({err})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(("IGNORE", "mask"))]
    if missing or unexpected:
        key = (missing or unexpected)[0]
        raise WorkbenchError(f"{folder / artifacts.WEIGHTS}: weights do not match the config (key {key!r})")
    model.eval()
    return LM(model=model, tokenizer=tokenizer, name=str(config.get("name", folder.name)), path=folder, config=config)


# --------------------------------------------------------------------------------------------- pretrained, offline


def _offline_hint(name: str) -> str:
    return (
        f"model {name!r} is not available offline: no local folder of that name and not in the Hugging Face cache "
        f"({os.environ.get('HF_HOME', '~/.cache/huggingface')}). On a machine with network run "
        f"`hf download {name}` (then copy the Hugging Face cache here), or save it with "
        f"`AutoModelForCausalLM.from_pretrained({name!r}).save_pretrained(FOLDER)` and pass FOLDER"
    )


def _hf_folder(name_or_path: str) -> Path:
    """A local folder holding the model: the path itself, or the cached snapshot of a hub name (no network)."""
    path = Path(name_or_path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WorkbenchError(f"{path} has no config.json: not a Hugging Face model folder or workbench artifact")
        return path
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, invalid repo id, ...: all mean "not on disk"
        raise WorkbenchError(_offline_hint(str(name_or_path))) from None


def load_pretrained(name_or_path: str | Path, tokenizer: Any = None) -> LM:
    """A Hugging Face causal LM from a local folder or the local cache, converted into a HookedTransformer.

    Why not `HookedTransformer.from_pretrained`: in TransformerLens 3.9 it accepts only its list of official names,
    not a folder. We reuse its own converters (`convert_hf_model_config`, `get_pretrained_state_dict`) on the local
    folder instead, with HF_HUB_OFFLINE=1 and local_files_only, so nothing is fetched.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = _hf_folder(str(name_or_path))
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        hf_model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise WorkbenchError(f"{folder}: cannot load the Hugging Face model ({str(err).splitlines()[0]})") from None
    if tokenizer is None:
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, TypeError):
            tokenizer = None  # a weights-only folder: encode() then asks for token ids
    try:
        cfg_dict = loading.convert_hf_model_config(str(folder))
    except (NotImplementedError, ValueError, KeyError, AttributeError) as err:
        raise WorkbenchError(f"{folder}: TransformerLens cannot convert this architecture ({err})") from None
    cfg = HookedTransformerConfig(**cfg_dict, device="cpu")
    state = loading.get_pretrained_state_dict(str(folder), cfg, hf_model)
    model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    if tokenizer is not None:
        model.tokenizer = tokenizer
    model.eval()
    config = {"kind": "hf", "source": str(name_or_path), "folder": str(folder)}
    return LM(model=model, tokenizer=tokenizer, name=Path(str(name_or_path)).name, path=folder, config=config)


def load_lm(name_or_path: str | Path) -> LM:
    """A workbench LM artifact (registered name or folder) or a locally available pretrained model.

    Order: a folder with a workbench LM config -> artifact; a registered name in artifacts/lms -> artifact; a
    Hugging Face folder or a cached hub name -> pretrained. Anything else: one WorkbenchError (nearest artifact
    names, and how to make a hub model available offline).
    """
    path = Path(name_or_path)
    if path.is_dir():
        cfg_file = path / artifacts.CONFIG
        if (path / artifacts.WEIGHTS).is_file() and cfg_file.is_file():
            try:
                kind = json.loads(cfg_file.read_text()).get("kind")
            except (OSError, json.JSONDecodeError):
                kind = None
            if kind == "lm":
                return _load_artifact(path)
        return load_pretrained(path)
    if str(name_or_path) in artifacts.available("lms"):
        return _load_artifact(artifacts.resolve(name_or_path, "lms"))
    names = artifacts.available("lms")
    try:
        return load_pretrained(str(name_or_path))
    except WorkbenchError as err:
        if names and "/" not in str(name_or_path):
            from workbench.errors import closest

            near = closest(str(name_or_path), names)
            if near:
                raise WorkbenchError(f"unknown LM {str(name_or_path)!r}; did you mean: {', '.join(near)}?") from None
        raise err from None
