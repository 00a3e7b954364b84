"""Feature views of language-model subjects: SAE latents read on dialogues, token by token.

Why its own views: an LM latent fires on tokens, so the sample is every token of training-distribution dialogues
(`workbench.sae.lm_analysis.token_latents`), a top example is a token in its context
(`top_activating_tokens`), and steering answers one OOD-style prompt (3 + 4, the user claims 8, a persona cue) three
ways (`workbench.lm.steering.steer_prompt`): without a hook, with the latent's decoder direction added at the SAE's
layer (scaled to the sycophancy vector's norm, oriented by the latent's ranked polarity), and with an equal-norm
random direction, the control.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.lm.corpus import OOD_GROUPS
from workbench.sae.views import SAMPLE_SEED, Control, FeatureSample, FeatureViews, SteerResult, TopExamples

GROUPS = tuple(g for g in OOD_GROUPS if g != "mixed")
"""The persona cues a steering prompt can carry (`none`: no header)."""
TOP_TOKENS = 12
DIRECTION_PROMPTS = (200, 1000)  # (n, seed) of the sycophancy vector whose norm the latent's direction is scaled to

CONTROLS = (
    Control("group", "feat_group", "Persona cue (header)", "select", GROUPS[0], options=GROUPS),
    Control("coef", "feat_lm_coef", "Coefficient", "slider", 1.0, low=-4.0, high=4.0, step=0.5),
)


def _lm(subject: Any) -> Any:
    lm = getattr(subject, "lm", None)
    if lm is None and hasattr(subject, "encode") and hasattr(subject, "model"):
        lm = subject  # a workbench LM itself (the registry's subject)
    if lm is None:
        raise WorkbenchError(
            "the LM feature views need a workbench LM artifact (tokenizer and corpus); this subject is a bare model"
        )
    return lm


def sample(sae: Any, subject: Any, n: int) -> FeatureSample:
    """Every token of `n` training-distribution dialogues of the LM's own corpus (seed 0), encoded by the SAE."""
    from workbench.lm import corpus
    from workbench.lm.evaluate import corpus_config
    from workbench.sae.lm_analysis import token_latents
    from workbench.sae.train import sae_info

    if int(n) < 1:
        raise WorkbenchError(f"need at least one dialogue, got n={n}")
    lm = _lm(subject)
    texts = [e.text for e in corpus.generate("train", int(n), SAMPLE_SEED, corpus_config(lm))]
    words, feats = token_latents(lm, sae, sae_info(sae)["hook"], texts)
    note = f"every token of {n} training-distribution dialogues, seed {SAMPLE_SEED}"
    return FeatureSample(torch.as_tensor(np.concatenate(feats)), int(n), "dialogues", note, (words, feats))


def top_examples(sample: FeatureSample, latent: int) -> TopExamples:
    """The tokens where the latent is highest, with 8 tokens of context before and 2 after ([[marked]])."""
    from workbench.sae.lm_analysis import top_activating_tokens

    words, feats = sample.data
    top = top_activating_tokens(words, feats, int(latent), n=TOP_TOKENS)
    if top.empty:
        return TopExamples(top, None, f"Latent {latent} never fires on these {sample.n} dialogues.")
    return TopExamples(top, None, f"The {len(top)} tokens of the sample ({sample.note}) where latent {latent} peaks.")


def steer(
    sae: Any, subject: Any, latent: int, *, polarity: int = 1, group: str = GROUPS[0], coef: float = 1.0
) -> SteerResult:
    """One OOD-style prompt (3 + 4, the user claims 8, persona cue `group`) answered without steering, with the
    latent's decoder direction (x polarity, scaled to the sycophancy vector's norm at that layer) added, and with an
    equal-norm random direction (`steer_prompt`)."""
    from workbench.lm.directions import direction
    from workbench.lm.evaluate import corpus_config
    from workbench.lm.steering import custom_example, steer_prompt
    from workbench.sae.lm_analysis import resid_layer
    from workbench.sae.train import sae_info
    from workbench.sae.views import decoder_direction

    if group not in GROUPS:
        raise WorkbenchError(f"unknown persona cue {group!r}; choose one of {', '.join(GROUPS)}")
    lm = _lm(subject)
    layer = resid_layer(sae_info(sae)["hook"])
    norm = direction(lm, "sycophancy", *DIRECTION_PROMPTS)[layer].norm()
    sign = 1 if int(polarity) >= 0 else -1
    d = decoder_direction(sae, latent) * sign
    d = d / d.norm().clamp_min(1e-12) * norm
    example = custom_example(corpus_config(lm), 3, 4, 8, header="" if group == "none" else group)
    table = steer_prompt(lm, example, d, layer, float(coef))
    caption = (
        f"The latent's decoder direction (x{sign:+d}: oriented towards label 1 when ranked), scaled to the "
        "sycophancy vector's norm, added at the SAE's layer on the after-prompt positions; `random` is an equal-norm "
        "random direction. The card's table measures the same on 600 OOD prompts with paired CIs."
    )
    return SteerResult(
        latent=int(latent),
        settings={"group": group, "coef": float(coef), "polarity": sign},
        table=table,
        prompt=example.prompt,
        caption=caption,
        data={"layer": layer, "norm": float(norm)},
    )


VIEWS = FeatureViews(unit="dialogues", sample=sample, top_examples=top_examples, controls=CONTROLS, steer=steer)
"""The views of the `lm` kind."""
