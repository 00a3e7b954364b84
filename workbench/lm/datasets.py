"""Datasets for the LM verbs: documented JSONL formats, validated up front, errors naming file, line and field.

Why JSONL with fixed field names: researchers arrive with datasets in the formats of the tools they use (repeng /
persona-vector contrast pairs, CAA's A/B questions, probe datasets, patching pairs). Reading those formats as they are,
and refusing a bad record before any model runs, means a typo on line 317 is one line of error, not a traceback
after ten minutes of forwards. One record per line; blank lines are skipped; `id`, `meta` and `category` may ride
along on any record and are kept but not used.

Formats (the kind is detected from the first record's fields, or given):
- contrast pairs  {"positive": str, "negative": str, "question"?: str, "system"?: str}
  (persona-vector / RepE style). With a question, positive and negative are two answers to it (the text is the
  prompt -- system and question, through the chat template when the tokenizer has one -- followed by the answer);
  without one they are whole texts.
- A/B questions   {"question": str, "answer_matching_behavior": str, "answer_not_matching_behavior": str,
  "system"?: str} (CAA style). Scored by log P(matching | prompt) - log P(not matching | prompt), summed over the
  answer tokens; directions are read at the answer's last token (prompt + matching vs prompt + not matching).
- labelled prompts {"text": str, "label": 0/1 | true/false | one of two strings} for probes and monitoring.
- patching pairs  {"clean": str, "corrupt": str, "answer": str, "wrong_answer": str}: clean and corrupt must encode
  to the same number of tokens and both answers to exactly one token each (checked against the model's tokenizer by
  `patch_pairs`); metric logit(answer) - logit(wrong_answer) at the last token.
A behaviour scorer for free generation is `module:function` (text -> float), `keywords:w1,w2,...` or
`regex:PATTERN` (1.0 when any keyword / the pattern occurs, case-insensitive, else 0.0).
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError, closest

KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "contrast": (("positive", "negative"), ("question", "system")),
    "ab": (("question", "answer_matching_behavior", "answer_not_matching_behavior"), ("system",)),
    "labelled": (("text", "label"), ()),
    "patch": (("clean", "corrupt", "answer", "wrong_answer"), ()),
}
"""kind -> (required fields, optional fields)."""
KIND_NAMES = {
    "contrast": "contrast pairs",
    "ab": "A/B questions",
    "labelled": "labelled prompts",
    "patch": "patching pairs",
}
PASSENGERS = ("id", "meta", "category")
"""Fields any record may carry; kept, never used."""
MIN_RECORDS = 4


@dataclass
class Dataset:
    """A validated dataset: `records[i]` was line `lines[i]` of `path`."""

    kind: str
    path: Path
    records: list[dict]
    lines: list[int]
    positive_label: Any = None
    notes: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def where(self, i: int, fld: str | None = None) -> str:
        return f"{self.path}:{self.lines[i]}" + (f": field {fld!r}" if fld else "")

    def labels(self) -> np.ndarray:
        """labelled datasets: 1.0 where the record's label is the positive one, else 0.0."""
        if self.kind != "labelled":
            raise WorkbenchError(
                f"{self.path}: labels exist only for labelled prompts, this is {KIND_NAMES[self.kind]}"
            )
        return np.array([float(r["label"] == self.positive_label) for r in self.records])

    def summary(self) -> dict:
        out = {"path": str(self.path), "kind": self.kind, "format": KIND_NAMES[self.kind], "n": len(self)}
        if self.kind == "labelled":
            out["positive_label"] = self.positive_label
            out["n_positive"] = int(self.labels().sum())
        return out


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; invalid JSON or a non-object is an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"dataset {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise WorkbenchError(f"{path}: unreadable ({err})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise WorkbenchError(f"{path}:{n}: invalid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise WorkbenchError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
        out.append((n, obj))
    if not out:
        raise WorkbenchError(f"{path}: no records (one JSON object per line)")
    return out


def detect_kind(record: dict, where: str) -> str:
    keys = set(record)
    best = max(KINDS, key=lambda k: len(keys & set(KINDS[k][0])))
    if not keys & set(KINDS[best][0]):
        formats = "; ".join(f"{KIND_NAMES[k]} {{{', '.join(KINDS[k][0])}}}" for k in KINDS)
        raise WorkbenchError(f"{where}: cannot tell the format from fields {sorted(keys)}; expected {formats}")
    return best


def _check_record(kind: str, rec: dict, where: str) -> None:
    required, optional = KINDS[kind]
    allowed = set(required) | set(optional) | set(PASSENGERS)
    for key in rec:
        if key not in allowed:
            near = closest(key, sorted(allowed))
            hint = f"; did you mean: {', '.join(near)}?" if near else f"; valid: {', '.join(required + optional)}"
            raise WorkbenchError(f"{where}: unknown field {key!r} in {KIND_NAMES[kind]}{hint}")
    for key in required:
        if key not in rec:
            raise WorkbenchError(f"{where}: missing field {key!r} ({KIND_NAMES[kind]} need {', '.join(required)})")
    for key in (*required, *optional):
        if key not in rec or key == "label":
            continue
        v = rec[key]
        if not isinstance(v, str) or (key in required and not v.strip()):
            raise WorkbenchError(f"{where}: field {key!r} must be a non-empty string, got {v!r}"[:200])
    if kind == "labelled":
        label = rec["label"]
        if isinstance(label, float) or not isinstance(label, (bool, int, str)):
            raise WorkbenchError(f"{where}: field 'label' must be 0/1, true/false or a string, got {label!r}")


def load_dataset(path: str | Path, kind: str | None = None, positive_label: Any = None) -> Dataset:
    """Read and validate a JSONL dataset (see the module docstring for the formats). `kind` forces a format;
    `positive_label` picks the positive class of a labelled dataset whose labels are strings."""
    path = Path(path)
    rows = read_jsonl(path)
    if kind is None:
        kind = detect_kind(rows[0][1], f"{path}:{rows[0][0]}")
    elif kind not in KINDS:
        from workbench.errors import unknown

        raise unknown("dataset kind", kind, KINDS)
    for n, rec in rows:
        _check_record(kind, rec, f"{path}:{n}")
    ds = Dataset(kind=kind, path=path, records=[r for _, r in rows], lines=[n for n, _ in rows])
    if len(ds) < MIN_RECORDS:
        raise WorkbenchError(f"{path}: {len(ds)} records; at least {MIN_RECORDS} are needed (fit and held-out halves)")
    if kind == "labelled":
        ds.positive_label = _positive_label(ds, positive_label)
    return ds


def _positive_label(ds: Dataset, positive_label: Any) -> Any:
    values = [r["label"] for r in ds.records]
    distinct = sorted({json.dumps(v) for v in values})
    if len(distinct) != 2:
        raise WorkbenchError(
            f"{ds.path}: field 'label' must take exactly two values (for AUROC and directions), got "
            f"{len(distinct)}: {', '.join(distinct[:6])}"
        )
    pair = [json.loads(d) for d in distinct]
    if positive_label is not None:
        for v in pair:
            if v == positive_label or str(v) == str(positive_label):
                return v
        raise WorkbenchError(f"{ds.path}: positive label {positive_label!r} is not one of the labels {pair}")
    kinds = {type(v) for v in pair}
    if kinds <= {bool} or (kinds <= {int} and set(pair) == {0, 1}):
        return True if kinds <= {bool} else 1
    if kinds <= {bool, int} and set(pair) <= {0, 1}:
        return 1
    raise WorkbenchError(
        f"{ds.path}: labels {pair} are not 0/1 or true/false; name the positive one (--positive-label {pair[1]!r})"
    )


# ------------------------------------------------------------------------------------------------ texts per verb
@dataclass
class ContrastTexts:
    """Texts whose activations define a direction: `texts[j]` has label `labels[j]` (1 = the trait side) and belongs
    to record `unit[j]` (both sides of a pair share a unit, so fit/held-out splits never separate them). `starts[j]`
    is where the answer begins (for position "mean"), or None for whole texts."""

    texts: list[str]
    labels: np.ndarray
    unit: np.ndarray
    starts: list[int] | None


def contrast_texts(lm, ds: Dataset) -> ContrastTexts:
    """The two sides of every contrast pair / A/B question, or the labelled texts, as the model reads them."""
    texts, labels, unit, starts = [], [], [], []
    if ds.kind in ("contrast", "ab"):
        for i in range(len(ds)):
            prompt, pos, neg = behaviour_pair(lm, ds, i)
            head = len(lm.token_ids(prompt, bos=True)) if prompt else min(1, len(lm.token_ids("", bos=True)))
            for text, y in ((prompt + pos, 1.0), (prompt + neg, 0.0)):
                texts.append(text)
                labels.append(y)
                unit.append(i)
                starts.append(head)
    elif ds.kind == "labelled":
        ys = ds.labels()
        for i, r in enumerate(ds.records):
            texts.append(r["text"])
            labels.append(float(ys[i]))
            unit.append(i)
        starts = None
    else:
        raise WorkbenchError(
            f"{ds.path}: {KIND_NAMES[ds.kind]} define no direction; use contrast pairs, A/B or labelled"
        )
    return ContrastTexts(texts, np.asarray(labels), np.asarray(unit), starts)


def behaviour_pair(lm, ds: Dataset, i: int) -> tuple[str, str, str]:
    """(prompt, trait answer, other answer) of record i of a contrast or A/B dataset."""
    r = ds.records[i]
    if ds.kind == "ab":
        prompt = lm.format_prompt(r["question"], r.get("system", ""))
        return prompt, r["answer_matching_behavior"], r["answer_not_matching_behavior"]
    if ds.kind == "contrast":
        if r.get("question"):
            prompt = lm.format_prompt(r["question"], r.get("system", ""))
        else:
            prompt = r.get("system", "")
        return prompt, r["positive"], r["negative"]
    raise WorkbenchError(f"{ds.path}: {KIND_NAMES[ds.kind]} have no answer pair to score")


def prompts(lm, ds: Dataset) -> list[str]:
    """The prompt of every record (what a model continues): question (+ system) or the labelled text."""
    if ds.kind in ("contrast", "ab"):
        return [behaviour_pair(lm, ds, i)[0] for i in range(len(ds))]
    if ds.kind == "labelled":
        return [r["text"] for r in ds.records]
    return [r["clean"] for r in ds.records]


def neutral_texts(path: str | Path) -> list[str]:
    """Neutral text for capability cost: a .jsonl of {"text"} records or a .txt file (one text per non-blank line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        out = []
        for n, rec in read_jsonl(path):
            t = rec.get("text")
            if not isinstance(t, str) or not t.strip():
                raise WorkbenchError(f"{path}:{n}: field 'text' must be a non-empty string (neutral texts)")
            out.append(t)
        return out
    if not path.is_file():
        raise WorkbenchError(f"neutral text file {str(path)!r} does not exist")
    out = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not out:
        raise WorkbenchError(f"{path}: no neutral texts")
    return out


# ------------------------------------------------------------------------------------------------ patching pairs
def patch_pairs(lm, ds: Dataset) -> dict:
    """Encode patching pairs for `workbench.patching.patch_sweep`, checking every record against the tokenizer.

    Returns {"clean", "corrupt": (N, T) tokens right-padded, "answer", "wrong": (N,) ids, "answer_pos": (N,) last
    token of each pair, "lengths", "labels": the first pair's token strings, "equal_lengths": all pairs one length}.
    """
    import torch

    if ds.kind != "patch":
        raise WorkbenchError(
            f"{ds.path}: expected patching pairs {{clean, corrupt, answer, wrong_answer}}, got {KIND_NAMES[ds.kind]}"
        )
    clean_rows, corrupt_rows, ans, wrong = [], [], [], []
    for i, r in enumerate(ds.records):
        c = lm.token_ids(r["clean"], bos=True)
        k = lm.token_ids(r["corrupt"], bos=True)
        if len(c) != len(k):
            raise WorkbenchError(
                f"{ds.where(i, 'corrupt')}: {len(k)} tokens but 'clean' is {len(c)}; patching pairs must align token "
                "by token"
            )
        if len(c) > lm.n_ctx:
            raise WorkbenchError(f"{ds.where(i, 'clean')}: {len(c)} tokens, over the model's context of {lm.n_ctx}")
        a = lm.single_token(r["answer"], ds.where(i, "answer"))
        w = lm.single_token(r["wrong_answer"], ds.where(i, "wrong_answer"))
        if a == w:
            raise WorkbenchError(f"{ds.where(i, 'wrong_answer')}: the same token as 'answer'")
        clean_rows.append(c)
        corrupt_rows.append(k)
        ans.append(a)
        wrong.append(w)
    lengths = torch.tensor([len(r) for r in clean_rows])
    T = int(lengths.max())

    def pad(rows):
        t = torch.full((len(rows), T), lm.pad_id, dtype=torch.long)
        for j, row in enumerate(rows):
            t[j, : len(row)] = torch.tensor(row)
        return t

    return {
        "clean": pad(clean_rows),
        "corrupt": pad(corrupt_rows),
        "answer": torch.tensor(ans),
        "wrong": torch.tensor(wrong),
        "answer_pos": lengths - 1,
        "lengths": lengths,
        "labels": lm.token_strings(clean_rows[int(lengths.argmax())]),
        "equal_lengths": bool((lengths == lengths[0]).all()),
    }


# ------------------------------------------------------------------------------------------------ scorers
@dataclass
class Scorer:
    """A behaviour score for a generated text: `scorer(text) -> float`."""

    spec: str
    fn: Callable[[str], Any]

    def __call__(self, text: str) -> float:
        v = self.fn(text)
        if isinstance(v, bool):
            return float(v)
        try:
            out = float(v)
        except (TypeError, ValueError):
            raise WorkbenchError(
                f"scorer {self.spec!r} returned {v!r} for {text[:40]!r}; it must return a number"
            ) from None
        if not np.isfinite(out):
            raise WorkbenchError(f"scorer {self.spec!r} returned {out} for {text[:40]!r}")
        return out


def load_scorer(spec: str) -> Scorer:
    """`keywords:w1,w2`, `regex:PATTERN` or `module:function` (an importable function text -> number)."""
    if spec.startswith("keywords:"):
        words = [w.strip() for w in spec[len("keywords:") :].split(",") if w.strip()]
        if not words:
            raise WorkbenchError(f"scorer {spec!r}: no keywords after 'keywords:'")
        pattern = re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)", re.IGNORECASE)
        return Scorer(spec, lambda t: float(bool(pattern.search(t))))
    if spec.startswith("regex:"):
        try:
            pattern = re.compile(spec[len("regex:") :], re.IGNORECASE)
        except re.error as err:
            raise WorkbenchError(f"scorer {spec!r}: invalid regular expression ({err})") from None
        return Scorer(spec, lambda t: float(bool(pattern.search(t))))
    module, sep, func = spec.partition(":")
    if not sep or not module or not func:
        raise WorkbenchError(f"scorer {spec!r}: expected module:function, keywords:w1,w2 or regex:PATTERN")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise WorkbenchError(f"scorer {spec!r}: cannot import module {module!r} ({err})") from None
    fn = getattr(mod, func, None)
    if not callable(fn):
        raise WorkbenchError(f"scorer {spec!r}: module {module!r} has no function {func!r}")
    return Scorer(spec, fn)
