"""A word-level tokenizer saved as JSON next to the model: small, exact, and readable by eye.

Why word-level and not BPE: the persona corpus is generated from a closed vocabulary (a few dozen words, the
numbers 0..N and punctuation), so every word -- and in particular every number -- is one token. Then "which answer
does the model give" is a single next-token distribution, and the logit of the true answer against the claimed
answer is a clean continuous behaviour metric. An unknown word is an error, never a silent <unk>.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from workbench.errors import WorkbenchError, closest

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIALS = (PAD, BOS, EOS)
_WORD = re.compile(r"<[a-z]+>|\w+|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Words, numbers and single punctuation marks of `text`, in order (`"a+b ?"` -> `["a", "+", "b", "?"]`)."""
    return _WORD.findall(text)


class WordTokenizer:
    """Maps words to ids: `<pad>` = 0, `<bos>` = 1, `<eos>` = 2, then the vocabulary in the order given."""

    def __init__(self, words: Sequence[str]) -> None:
        vocab = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        if len(set(vocab)) != len(vocab):
            dup = next(w for w in vocab if vocab.count(w) > 1)
            raise WorkbenchError(f"tokenizer vocabulary lists {dup!r} twice")
        self.vocab: list[str] = vocab
        self.ids: dict[str, int] = {w: i for i, w in enumerate(vocab)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> WordTokenizer:
        """Vocabulary = every word seen in `texts`, sorted, so the same texts always give the same ids."""
        seen: set[str] = set()
        for t in texts:
            seen.update(split_words(t))
        return cls(sorted(seen - set(SPECIALS)))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """Token ids of `text` (with `<bos>` first unless bos=False); an unknown word raises WorkbenchError."""
        out = [self.bos_id] if bos else []
        for w in split_words(text):
            i = self.ids.get(w)
            if i is None:
                near = closest(w, self.vocab)
                hint = f"; did you mean: {', '.join(near)}?" if near else ""
                raise WorkbenchError(f"word {w!r} is not in the tokenizer's {self.vocab_size}-token vocabulary{hint}")
            out.append(i)
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Words joined by single spaces; pad/bos/eos dropped unless skip_special=False."""
        words = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise WorkbenchError(f"token id {i} is outside the tokenizer's vocabulary (size {self.vocab_size})")
            if skip_special and self.vocab[i] in SPECIALS:
                continue
            words.append(self.vocab[i])
        return " ".join(words)

    def token_id(self, word: str) -> int:
        """The id of one word (e.g. a number `"7"`); unknown -> WorkbenchError with the nearest words."""
        ids = self.encode(word, bos=False)
        if len(ids) != 1:
            raise WorkbenchError(f"{word!r} is {len(ids)} tokens, not one")
        return ids[0]

    def to_json(self) -> dict:
        return {"kind": "word", "version": 1, "vocab": self.vocab}

    def sha256(self) -> str:
        """Hash of the vocabulary (order matters): the model's config records it to catch a swapped tokenizer."""
        return hashlib.sha256(json.dumps(self.vocab).encode()).hexdigest()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Read a tokenizer.json written by `save`; anything else is a one-line WorkbenchError naming the file."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise WorkbenchError(f"{path}: unreadable tokenizer ({err})") from None
        if not isinstance(data, dict) or data.get("kind") != "word" or not isinstance(data.get("vocab"), list):
            raise WorkbenchError(f"{path}: not a word-level tokenizer file (expected kind 'word' and a vocab list)")
        vocab = data["vocab"]
        if tuple(vocab[:3]) != SPECIALS:
            raise WorkbenchError(f"{path}: the vocabulary must start with {', '.join(SPECIALS)}")
        return cls(vocab[3:])

    def __repr__(self) -> str:
        return f"WordTokenizer({self.vocab_size} tokens)"


# --------------------------------------------------------------------------------------------- subword tokenizers

HF_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
"""Any of these in a folder means a Hugging Face tokenizer lives there (tokenizer.json may also be ours, kind word)."""


class HFTokenizer:
    """A Hugging Face tokenizer behind the same small interface as `WordTokenizer`.

    Why an adapter: every LM verb needs the same five things from a tokenizer -- `encode(text, bos)` to ids,
    `decode`, the id of a single-token answer (`token_id`), the pad/bos/eos ids, and token strings for labels. Our
    word tokenizer and a subword tokenizer (GPT-2 BPE, one trained with the `tokenizers` library, a Llama
    sentencepiece) then look alike to the rest of the workbench. `encode` never adds the tokenizer's own special
    tokens; with bos=True it puts the BOS token first when the tokenizer has one (as TransformerLens does), so a
    prompt encodes the same way whichever tokenizer made it. A chat template is applied only through `chat`.
    """

    def __init__(self, tok) -> None:
        self.tok = tok

    @classmethod
    def from_file(cls, path: str | Path) -> HFTokenizer:
        """A bare `tokenizers` JSON file (as `tokenizers.Tokenizer.save` writes it), with no tokenizer_config."""
        from transformers import PreTrainedTokenizerFast

        path = Path(path)
        try:
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path))
        except Exception as err:  # tokenizers raises its own Exception subclasses for malformed files
            raise WorkbenchError(f"{path}: unreadable tokenizer ({str(err).splitlines()[0]})") from None
        specials = tok.backend_tokenizer.get_vocab()
        for name in ("<|endoftext|>", "<eos>", "</s>"):
            if name in specials and tok.eos_token is None:
                tok.eos_token = name
        for name in ("<|endoftext|>", "<bos>", "<s>"):
            if name in specials and tok.bos_token is None:
                tok.bos_token = name
        if tok.pad_token is None and tok.eos_token is not None:
            tok.pad_token = tok.eos_token
        return cls(tok)

    @classmethod
    def from_folder(cls, folder: str | Path) -> HFTokenizer:
        """`AutoTokenizer.from_pretrained(folder)` offline; a folder with only tokenizer.json falls back on it."""
        from transformers import AutoTokenizer

        folder = Path(folder)
        try:
            return cls(AutoTokenizer.from_pretrained(str(folder), local_files_only=True))
        except Exception as err:  # transformers raises OSError, ValueError, KeyError, ... for incomplete folders
            if (folder / "tokenizer.json").is_file():
                return cls.from_file(folder / "tokenizer.json")
            raise WorkbenchError(f"{folder}: cannot load the tokenizer ({str(err).splitlines()[0][:160]})") from None

    # the WordTokenizer interface -------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.tok)

    @property
    def bos_id(self) -> int | None:
        i = self.tok.bos_token_id
        return None if i is None else int(i)

    @property
    def eos_id(self) -> int | None:
        i = self.tok.eos_token_id
        return None if i is None else int(i)

    @property
    def pad_id(self) -> int:
        for i in (self.tok.pad_token_id, self.tok.eos_token_id):
            if i is not None:
                return int(i)
        return 0

    @property
    def pad_token_id(self) -> int:  # what older callers read from a raw HF tokenizer
        return self.pad_id

    @property
    def bos_token_id(self) -> int | None:
        return self.bos_id

    @property
    def eos_token_id(self) -> int | None:
        return self.eos_id

    def encode(self, text: str, bos: bool = True) -> list[int]:
        ids = [int(i) for i in self.tok(text, add_special_tokens=False)["input_ids"]]
        if bos and self.bos_id is not None:
            ids = [self.bos_id, *ids]
        return ids

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        return str(self.tok.decode([int(i) for i in ids], skip_special_tokens=skip_special))

    def token_id(self, text: str) -> int:
        """The id of `text` when it is exactly one token (mind the leading space of BPE words: " Paris")."""
        ids = self.encode(text, bos=False)
        if len(ids) != 1:
            shown = self.convert_ids_to_tokens(ids)
            raise WorkbenchError(f"{text!r} is {len(ids)} tokens {shown}, not one")
        return ids[0]

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [str(t) for t in self.tok.convert_ids_to_tokens([int(i) for i in ids])]

    # chat ------------------------------------------------------------------------------------------------------
    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tok, "chat_template", None))

    def chat(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """The chat template applied to messages ([{"role", "content"}]) as text (not tokens)."""
        if not self.has_chat_template:
            raise WorkbenchError("this tokenizer has no chat template")
        return str(self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))

    # identity --------------------------------------------------------------------------------------------------
    def sha256(self) -> str:
        """Hash of the tokenizer's full serialisation (vocabulary, merges, normaliser): catches a swapped file."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        data = backend.to_str() if backend is not None else json.dumps(sorted(self.tok.get_vocab().items()))
        return hashlib.sha256(data.encode()).hexdigest()

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        self.tok.save_pretrained(str(folder))
        return folder

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.tok).__name__}, {self.vocab_size} tokens)"


def is_word_tokenizer_file(path: Path) -> bool:
    """True when `path` is a workbench word-level tokenizer.json (kind "word"), not a `tokenizers` one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("kind") == "word"


def has_tokenizer(folder: Path) -> bool:
    return any((Path(folder) / f).is_file() for f in HF_TOKENIZER_FILES)


def load_tokenizer(folder: str | Path) -> WordTokenizer | HFTokenizer:
    """The tokenizer saved in a model folder: our word tokenizer (tokenizer.json, kind word) or a Hugging Face one.

    No tokenizer file at all is a one-line WorkbenchError naming the folder and the files looked for.
    """
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file() and is_word_tokenizer_file(folder / "tokenizer.json"):
        return WordTokenizer.load(folder / "tokenizer.json")
    if not has_tokenizer(folder):
        raise WorkbenchError(
            f"{folder}: no tokenizer (looked for {', '.join(HF_TOKENIZER_FILES)}); save one beside the weights "
            f"with `tokenizer.save_pretrained({str(folder)!r})`"
        )
    return HFTokenizer.from_folder(folder)
