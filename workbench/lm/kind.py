"""Language models as a subject kind: shipped LM artifacts and local Hugging Face folders, through `load_lm`.

The LM verbs live under `workbench lm` (datasets, directions, steering, patching); this entry makes LMs references
that the shared verbs (`sae`, batteries, the app) resolve through the same registry as policies.
"""

from __future__ import annotations

from typing import Any

from workbench.subjects import SubjectKind


def load(ref: str) -> Any:
    from workbench.lm.model import load_lm

    lm = load_lm(ref)
    if getattr(lm, "kind", None) is None:
        try:
            lm.kind = "lm"
        except AttributeError:
            pass
    return lm


def _battery():
    from workbench.lm.battery import adapter

    return adapter()


def _features():
    from workbench.lm.features import VIEWS

    return VIEWS


KIND = SubjectKind(
    name="lm",
    summary="language models: workbench LM artifacts or Hugging Face-format folders (TransformerLens, offline)",
    load=load,
    verbs={},
    battery=_battery(),
    features=_features(),
)
