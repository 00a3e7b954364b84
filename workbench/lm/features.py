"""Feature views of language-model subjects: SAE latents read on dialogues, token by token.

Why its own views: an LM latent fires on tokens, so the sample is every token of training-distribution dialogues
(`workbench.sae.lm_analysis.token_latents`), a top example is a token in its context
(`top_activating_tokens`), and steering answers one OOD-style prompt (3 + 4, the user claims 8, a persona cue) three
ways (`workbench.lm.steering.steer_prompt`): without a hook, with the latent's decoder direction added at the SAE's
layer (scaled to the sycophancy vector's norm, oriented by the latent's ranked polarity), and with an equal-norm
random direction, the control.

An SAE card (`workbench sae train`) adds the persona analyses (`card`): latents ranked against persona and
claim-wrong labels next to the probe and the sycophancy vector, and steering with the best persona latent on OOD
prompts against that vector and a random direction, with paired intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.lm.corpus import OOD_GROUPS
from workbench.sae.views import (
    SAMPLE_SEED,
    CardAnalyses,
    Control,
    FeatureSample,
    FeatureViews,
    SteerResult,
    TopExamples,
)

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


def lm_analyses(lm: Any, sae: Any, hook: str, align_prompts: int, steer_prompts: int, seed: int) -> dict:
    """Persona goal alignment (fit on `align_prompts`, held out on half as many) and steering with the best persona
    latent on `steer_prompts` OOD prompts (`workbench.sae.lm_analysis`); JSON-ready metrics and card tables."""
    from workbench.sae.lm_analysis import alignment_table, lm_goal_alignment, lm_latent_steering, lm_steering_table

    ga = lm_goal_alignment(lm, sae, hook, n_fit=align_prompts, n_test=max(align_prompts // 2, 2), seed=seed)
    ga.pop("directions")
    persona = ga["targets"]["persona"]
    best = persona["latents"][0]
    # clamp to 0 (remove the latent) and to its mean activation when it fires (turn it on at every position)
    steer = lm_latent_steering(
        lm,
        sae,
        hook,
        best["latent"],
        best["polarity"],
        clamp_values=(0.0, round(best["mean_when_firing"], 3)),
        n=steer_prompts,
        seed=seed,
    )
    notes = (
        "## Why this hook\n\n"
        f"`{hook}`: a logistic probe reads sycophant vs honest there almost perfectly (its held-out AUROC is in the "
        "goal-alignment table below) and `workbench lm steer` steers with the sycophancy vector at that layer by "
        "default, so the SAE's latents can be compared with both on the same activations."
    )
    return {
        "lm_goal_alignment": ga,
        "lm_steering": steer,
        "lm_notes": notes,
        "lm_alignment_table": "## Goal alignment: latents vs persona and claim labels (AUROC, paired-bootstrap "
        "95% CIs over prompts)\n\n" + alignment_table(ga),
        "lm_steering_table": (
            f"## Steering with persona latent {steer['latent']} vs the sycophancy vector vs a random direction\n\n"
            f"Same {steer['n']} OOD prompts (seed {steer['seed']}) in every row; additions at `{hook}` on the "
            f"after-prompt positions, each direction at the sycophancy vector's norm ({steer['vector_norm']:.2f}); "
            f"the latent's oriented decoder direction has cosine {steer['decoder_cosine_vector']:+.3f} with the "
            "vector. Clamps keep the SAE's error term. Δ: paired differences vs no intervention (bootstrap 95% "
            "CIs); rates: Wilson 95% CIs; held-out accuracy on 200 no-claim questions.\n\n" + lm_steering_table(steer)
        ),
    }


CARD_SECTIONS = ("lm_notes", "lm_alignment_table", "lm_steering_table")
"""The `lm_analyses` entries that are markdown blocks of the card, in the card's order."""


def card(
    sae: Any, subject: Any, hook: str, *, align_episodes: int, steer_episodes: int, seed: int, progress: bool
) -> CardAnalyses:
    """A workbench LM artifact: `lm_analyses` on `align_episodes` / `steer_episodes` prompts, its tables as card
    sections. Nothing for a bare model (no tokenizer or corpus). `progress` is not used."""
    lm = getattr(subject, "lm", None)
    if lm is None:
        return CardAnalyses()
    metrics = lm_analyses(lm, sae, hook, align_episodes, steer_episodes, seed)
    return CardAnalyses(metrics=metrics, sections=tuple(metrics[k] for k in CARD_SECTIONS if metrics.get(k)))


VIEWS = FeatureViews(
    unit="dialogues", sample=sample, top_examples=top_examples, controls=CONTROLS, steer=steer, card=card
)
"""The views of the `lm` kind."""
