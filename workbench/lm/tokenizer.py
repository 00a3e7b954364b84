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
