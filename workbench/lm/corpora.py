"""The synthetic corpora workbench LMs are trained on, as a registry: a recipe's `[corpus] kind` picks one.

Why a registry: the persona organism's trainer, evaluation, probes and steering were written against one corpus
(`workbench.lm.corpus`). A second organism on the same arithmetic world with a different cue (`deploy-cue`,
`workbench.lm.deploy_cue`) needs the same machinery with its own distribution, groups, probe targets and named
vectors. Each corpus is one `CorpusKind` entry here; generic LM code asks `of(lm)` (or `get(name)`) and never tests
which corpus it holds. A recipe or artifact without `kind` is the persona corpus, so persona-lm's recipe, config
and card stay exactly as they were.

Entries name their functions as "module:function" strings, imported on first call, so this module imports nothing
heavy and no cycle forms with `workbench.lm.directions` (where the persona probes live).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from workbench.errors import WorkbenchError, unknown

DEFAULT = "persona"


def _lazy(ref: str) -> Callable[..., Any]:
    """A function given as "module:function", imported when first called."""
    module, _, name = ref.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = call.__name__ = name
    return call


@dataclass(frozen=True)
class CorpusKind:
    """One corpus: how to build its config, sample it, and what the LM verbs measure on it."""

    name: str
    """the recipe's `[corpus] kind`"""
    config: str
    """"module:Class" of the `[corpus]` dataclass (validated by `workbench.recipes.from_table`)"""
    splits: tuple[str, ...]
    """splits `generate` accepts; "train" is the training distribution"""
    groups: tuple[str, ...]
    """values of `Example.persona` the behaviour tables report, in order"""
    generate: str
    """"module:function" (split, n, seed, config) -> list[Example]"""
    vocabulary: str
    """"module:function" (config) -> sorted words"""
    vectors: tuple[str, ...]
    """named difference-of-means vectors (`workbench.lm.directions.direction`)"""
    contrast_sets: str
    """"module:function" (config, name, n, seed) -> (examples, 0/1 labels): the two sides of a named vector"""
    probe_targets: tuple[str, ...]
    """probe targets (`workbench.lm.directions.probe_sweep`)"""
    probe_data: str
    """"module:function" (config, target, n, seed) -> (training-distribution examples, 0/1 labels)"""
    transfer_sets: dict[str, str] = field(default_factory=dict)
    """probe target -> "module:function" (config, n, seed) -> (examples, labels): its out-of-distribution test set"""
    card: str = "workbench.lm.train:_card"
    """"module:function" (recipe, metrics) -> the artifact card's markdown"""

    def fn(self, what: str) -> Callable[..., Any]:
        return _lazy(getattr(self, what))

    def transfer(self, target: str) -> Callable[..., Any]:
        return _lazy(self.transfer_sets[target])

    def config_class(self) -> type:
        module, _, name = self.config.partition(":")
        return getattr(importlib.import_module(module), name)

    def config_from(self, table: dict) -> Any:
        """The config dataclass from a stored `corpus` table (an artifact's config.json), `kind` removed."""
        cls = self.config_class()
        table = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items() if k != "kind"}
        return cls(**table)


KINDS: dict[str, CorpusKind] = {
    "persona": CorpusKind(
        name="persona",
        config="workbench.lm.corpus:CorpusConfig",
        splits=("train", "ood"),
        groups=("honest", "sycophant", "teacher", "pirate", "none", "mixed"),
        generate="workbench.lm.corpus:generate",
        vocabulary="workbench.lm.corpus:vocabulary",
        vectors=("sycophancy", "claim-wrong", "honest", "sycophant", "teacher", "pirate"),
        contrast_sets="workbench.lm.directions:persona_contrast_sets",
        probe_targets=("persona", "claim_wrong"),
        probe_data="workbench.lm.directions:persona_probe_data",
        transfer_sets={"claim_wrong": "workbench.lm.directions:persona_claim_transfer"},
        card="workbench.lm.train:_card",
    ),
    "deploy-cue": CorpusKind(
        name="deploy-cue",
        config="workbench.lm.deploy_cue:DeployCueConfig",
        splits=("train", "ood"),
        groups=(
            "training",
            "deployment",
            "implicit-training",
            "implicit-deployment",
            "none",
            "conflict-training-tag",
            "conflict-deployment-tag",
        ),
        generate="workbench.lm.deploy_cue:generate",
        vocabulary="workbench.lm.deploy_cue:vocabulary",
        vectors=("cue", "style"),
        contrast_sets="workbench.lm.deploy_cue:contrast_sets",
        probe_targets=("cue",),
        probe_data="workbench.lm.deploy_cue:probe_data",
        transfer_sets={"cue": "workbench.lm.deploy_cue:implicit_cue_set"},
        card="workbench.lm.deploy_cue_card:card",
    ),
}
ALL_GROUPS: tuple[str, ...] = tuple(dict.fromkeys(g for k in KINDS.values() for g in k.groups))
"""Every group name of every corpus (battery metric names are validated against these)."""


def group_order(names) -> list[str]:
    """`names` (groups present in a behaviour table) in the order of the first corpus whose groups hold them all."""
    names = list(dict.fromkeys(names))
    order = next((k.groups for k in KINDS.values() if set(names) <= set(k.groups)), ALL_GROUPS)
    return [g for g in order if g in names] + [g for g in names if g not in order]


def get(name: str | None) -> CorpusKind:
    """The corpus kind `name` (None: the persona corpus); unknown -> the nearest names."""
    key = DEFAULT if name is None else str(name)
    if key not in KINDS:
        raise unknown("corpus kind", key, KINDS)
    return KINDS[key]


def kind_of_table(table: dict | None) -> CorpusKind:
    """The kind a `[corpus]` table (a recipe's, or an artifact config's `corpus`) names; none -> persona."""
    kind = (table or {}).get("kind", DEFAULT)
    if not isinstance(kind, str):
        raise WorkbenchError(f"[corpus] kind must be a string, got {kind!r}")
    return get(kind)


def of(lm: Any) -> CorpusKind:
    """The corpus an LM was trained on (its config's `corpus.kind`); models without one get the persona corpus."""
    config = getattr(lm, "config", None) or {}
    return kind_of_table(config.get("corpus") if isinstance(config, dict) else None)
