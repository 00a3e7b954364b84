"""Load, save and encode for language-model subjects: our own artifacts and locally stored pretrained models.

Why one `LM` object: every LM experiment needs the same four things -- a `HookedTransformer`, the tokenizer that
made its vocabulary, where it came from, and a way to turn strings into a right-padded (N, T) batch with lengths.
`load_lm(name_or_path)` returns that for

- a workbench artifact (`artifacts/lms/NAME` or a folder with weights.safetensors + config.json + tokenizer.json),
- a Hugging Face model folder written by `save_pretrained` (config.json + model.safetensors, and a tokenizer),
- a model name (e.g. `gpt2`) that is already in the local Hugging Face cache.

`load_lm` is THE loading function: the CLI, the app, batteries and the subject registry all call it, so a later move
from `HookedTransformer` to TransformerLens's TransformerBridge touches this file only. Nothing is ever downloaded:
HF_HUB_OFFLINE is set and every Hugging Face call uses local_files_only. A model that is not on disk, a folder
without weights or tokenizer, or pickled weights (`pytorch_model.bin`: refused, never unpickled) give one
WorkbenchError naming the file, never a hang or a traceback. Config gaps TransformerLens trips over (GPT-2 configs
saved by transformers 5 carry no `n_ctx`; `n_inner`) are filled from the fields that do exist.
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
from workbench.lm.tokenizer import HFTokenizer, WordTokenizer, load_tokenizer

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
    def tok(self) -> WordTokenizer | HFTokenizer:
        """The tokenizer behind the one interface (encode / decode / token_id / ids); a bare Hugging Face tokenizer
        given to `LM(...)` is wrapped on first use."""
        tok = self.tokenizer
        if tok is None:
            raise WorkbenchError(f"{self.name} was loaded without a tokenizer; pass token ids instead of text")
        if not isinstance(tok, (WordTokenizer, HFTokenizer)):
            tok = HFTokenizer(tok)
        return tok

    @property
    def pad_id(self) -> int:
        if self.tokenizer is None:
            return 0
        return int(self.tok.pad_id)

    @property
    def bos_id(self) -> int | None:
        return self.tok.bos_id

    @property
    def eos_id(self) -> int | None:
        return self.tok.eos_id

    def _ids(self, text: str, bos: bool) -> list[int]:
        return list(self.tok.encode(text, bos=bos))

    def token_ids(self, text: str, bos: bool = False) -> list[int]:
        """Token ids of one text (no BOS unless asked): the one encode call behind every tokenizer kind."""
        return self._ids(text, bos)

    def decode(self, ids) -> str:
        return self.tok.decode([int(i) for i in torch.as_tensor(ids).reshape(-1)])

    def token_strings(self, ids) -> list[str]:
        """Token ids as strings (special tokens included), for position labels."""
        flat = [int(i) for i in torch.as_tensor(ids).reshape(-1)]
        tok = self.tok
        if isinstance(tok, WordTokenizer):
            return [tok.vocab[i] for i in flat]
        return tok.convert_ids_to_tokens(flat)

    def single_token(self, text: str, where: str = "") -> int:
        """The id of `text` when it is exactly one token; else a WorkbenchError prefixed by `where`."""
        try:
            return int(self.tok.token_id(text))
        except WorkbenchError as err:
            raise WorkbenchError(f"{where}{': ' if where else ''}{err} for {self.name}'s tokenizer") from None

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tok, "has_chat_template", False))

    def format_prompt(self, user: str = "", system: str = "", assistant: str | None = None) -> str:
        """A (system, user) prompt, optionally with the assistant's reply, as the text the model reads.

        With a chat template (an instruction-tuned HF tokenizer) the messages go through it; without one the parts
        are joined by newlines (a base model, our organisms). With `assistant=None` and a template the generation
        prompt is appended, so the next token is the assistant's first.
        """
        if self.has_chat_template:
            msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
            head = self.tok.chat(msgs, add_generation_prompt=True)
            return head if assistant is None else head + assistant
        parts = [p for p in (system, user) if p]
        head = "\n".join(parts)
        if assistant is None:
            return head
        return head + assistant if head else assistant

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


def check_tokenizer(tokenizer: WordTokenizer | HFTokenizer, config: dict, d_vocab: int, where: str) -> None:
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
        raise WorkbenchError(f"{tok_path}: missing (the model's tokenizer)")
    if not (folder / artifacts.WEIGHTS).is_file():
        raise WorkbenchError(f"{folder / artifacts.WEIGHTS}: missing (the model's weights)")
    tokenizer = load_tokenizer(folder)
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

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = (
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "model.bin",
    "model.pt",
    "model.pth",
    "model.ckpt",
)


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


def check_hf_folder(folder: Path, require_tokenizer: bool = True) -> None:
    """Refuse, before anything is loaded, a folder whose weights are missing or pickled, or that has no tokenizer.

    Why refuse `pytorch_model.bin`: unpickling a third-party file can run arbitrary code (DESIGN: nothing is ever
    unpickled). Convert it where it came from with `save_pretrained(FOLDER, safe_serialization=True)`.
    """
    folder = Path(folder)
    if not any((folder / f).is_file() for f in SAFE_WEIGHTS):
        pickled = [f for f in PICKLED_WEIGHTS if (folder / f).is_file()]
        pickled += sorted(p.name for p in folder.glob("pytorch_model-*.bin"))
        if pickled:
            raise WorkbenchError(
                f"{folder / pickled[0]}: pickled PyTorch weights are refused (unpickling can run code); save the model "
                "as safetensors (`model.save_pretrained(FOLDER, safe_serialization=True)`) and pass that folder"
            )
        raise WorkbenchError(f"{folder / SAFE_WEIGHTS[0]}: missing (no model weights in {folder})")
    index = folder / "model.safetensors.index.json"
    if index.is_file() and not (folder / "model.safetensors").is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, AttributeError):
            raise WorkbenchError(f"{index}: unreadable shard index") from None
        for shard in shards:
            if not (folder / shard).is_file():
                raise WorkbenchError(f"{folder / shard}: missing (listed in {index.name})")
    if require_tokenizer:
        from workbench.lm.tokenizer import HF_TOKENIZER_FILES, has_tokenizer

        if not has_tokenizer(folder):
            raise WorkbenchError(
                f"{folder}: no tokenizer (looked for {', '.join(HF_TOKENIZER_FILES)}); save it beside the weights with "
                f"`tokenizer.save_pretrained({str(folder)!r})`"
            )


def hf_config_gaps(hf_cfg: dict) -> tuple[dict, list[str]]:
    """Fill the config fields TransformerLens's converter reads but a saved config may lack; returns (patched
    config, notes). GPT-2 saved by transformers 5 has no `n_ctx` (it is `n_positions`)."""
    cfg = dict(hf_cfg)
    notes = []
    if cfg.get("model_type") == "gpt2" and "n_ctx" not in cfg:
        cfg["n_ctx"] = int(cfg.get("n_positions", 1024))
        notes.append(f"n_ctx taken from n_positions ({cfg['n_ctx']})")
    return cfg, notes


def _tl_config(folder: Path) -> tuple[dict, list[str]]:
    """TransformerLens config dict for a local HF folder, converted from a gap-filled copy of its config.json."""
    import tempfile

    from transformer_lens import loading_from_pretrained as loading

    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkbenchError(f"{folder / 'config.json'}: unreadable ({err})") from None
    patched, notes = hf_config_gaps(raw)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(patched))
        try:
            cfg_dict = loading.convert_hf_model_config(tmp)
        except (NotImplementedError, ValueError, KeyError, AttributeError, TypeError, IndexError) as err:
            arch = (raw.get("architectures") or [raw.get("model_type", "?")])[0]
            raise WorkbenchError(
                f"{folder / 'config.json'}: TransformerLens cannot convert architecture {arch!r} "
                f"({str(err).splitlines()[0][:120] if str(err) else type(err).__name__})"
            ) from None
    if raw.get("model_type") == "gpt2" and raw.get("n_inner"):
        cfg_dict["d_mlp"] = int(raw["n_inner"])
        notes.append(f"d_mlp taken from n_inner ({cfg_dict['d_mlp']})")
    cfg_dict["tokenizer_name"] = None  # never let TransformerLens fetch or load a tokenizer itself
    return cfg_dict, notes


def load_pretrained(name_or_path: str | Path, tokenizer: Any = None, require_tokenizer: bool = True) -> LM:
    """A Hugging Face causal LM from a local folder or the local cache, converted into a HookedTransformer.

    Why not `HookedTransformer.from_pretrained`: in TransformerLens 3.9 it accepts only its list of official names,
    not a folder. We reuse its own converters (`convert_hf_model_config`, `get_pretrained_state_dict`) on the local
    folder instead, with HF_HUB_OFFLINE=1 and local_files_only, so nothing is fetched. Weights are read from
    safetensors only. `require_tokenizer=False` accepts a weights-only folder (then `encode` asks for token ids).
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    folder = _hf_folder(str(name_or_path))
    check_hf_folder(folder, require_tokenizer=require_tokenizer and tokenizer is None)
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens import loading_from_pretrained as loading
    from transformers import AutoModelForCausalLM

    cfg_dict, notes = _tl_config(folder)
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise WorkbenchError(f"{folder}: cannot load the Hugging Face model ({str(err).splitlines()[0]})") from None
    if tokenizer is None and (require_tokenizer or _has_tok(folder)):
        tokenizer = load_tokenizer(folder)
    elif tokenizer is not None and not isinstance(tokenizer, (WordTokenizer, HFTokenizer)):
        tokenizer = HFTokenizer(tokenizer)
    cfg = HookedTransformerConfig(**cfg_dict, device="cpu")
    state = loading.get_pretrained_state_dict(str(folder), cfg, hf_model)
    model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    if isinstance(tokenizer, HFTokenizer):
        model.tokenizer = tokenizer.tok
        if tokenizer.vocab_size > cfg.d_vocab:
            raise WorkbenchError(
                f"{folder}: the tokenizer has {tokenizer.vocab_size} tokens but the model's vocabulary is {cfg.d_vocab}"
            )
    model.eval()
    del hf_model
    config = {"kind": "hf", "source": str(name_or_path), "folder": str(folder), "config_notes": notes}
    name = Path(str(name_or_path)).name if Path(str(name_or_path)).is_dir() else str(name_or_path)
    return LM(model=model, tokenizer=tokenizer, name=name, path=folder, config=config)


def _has_tok(folder: Path) -> bool:
    from workbench.lm.tokenizer import has_tokenizer

    return has_tokenizer(folder)


def _is_workbench_lm(folder: Path) -> bool:
    try:
        return json.loads((folder / artifacts.CONFIG).read_text()).get("kind") == "lm"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


def load_lm(name_or_path: str | Path, *, require_tokenizer: bool = True) -> LM:
    """THE way to get a language model: a shipped name, an artifact folder, a Hugging Face-format local folder, or a
    name in the local Hugging Face cache (offline only). Returns an `LM` (HookedTransformer + tokenizer).

    Order: a folder whose config.json says kind "lm" -> workbench artifact; any other folder -> Hugging Face folder;
    a registered name in artifacts/lms -> that folder (either format); else a cached hub name. Anything else: one
    WorkbenchError (nearest artifact names, and how to make a hub model available offline).
    """
    path = Path(name_or_path)
    if path.is_dir():
        if (path / artifacts.CONFIG).is_file() and _is_workbench_lm(path):
            return _load_artifact(path)
        return load_pretrained(path, require_tokenizer=require_tokenizer)
    names = artifacts.available("lms")
    if str(name_or_path) in names:
        return load_lm(artifacts.artifacts_root() / "lms" / str(name_or_path), require_tokenizer=require_tokenizer)
    try:
        return load_pretrained(str(name_or_path), require_tokenizer=require_tokenizer)
    except WorkbenchError as err:
        if names and "/" not in str(name_or_path) and "not available offline" in str(err):
            from workbench.errors import closest

            near = closest(str(name_or_path), names)
            if near:
                raise WorkbenchError(f"unknown LM {str(name_or_path)!r}; did you mean: {', '.join(near)}?") from None
        raise err from None
