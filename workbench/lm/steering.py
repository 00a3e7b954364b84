"""Steer and ablate persona/truth directions in an LM, and measure behaviour change and capability cost.

Two interventions, both plain `workbench.interventions` hooks on the residual stream:
- steering: act + coef * v at `blocks.L.hook_resid_post`, only at the positions after the user's prompt (from the
  final "assistant" token on), as in contrastive activation addition (Rimsky et al. 2023);
- ablation: act - (act . r) r with r = v / |v| at every layer (each block's resid_pre and resid_mid, and the final
  resid_post), as in Arditi et al. 2024, so no block can read the direction.

Every condition is compared on the same prompts with the un-intervened run (paired differences, bootstrap CIs) and
with a random Gaussian vector of equal norm (`random_like`), the control that separates "this direction" from
"any perturbation this large". Behaviour: on `ood` (or `train`) prompts with a wrong claim, the rate of agreeing
with it and of giving the true answer, and the mean logit(true) - logit(claimed). Capability: accuracy and reply
loss on held-out training-distribution questions without a claim, under the same intervention.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.interventions import ablate_direction, add_vector, random_like
from workbench.lm import corpora, corpus
from workbench.lm.directions import direction, resid_hook, vectors_of
from workbench.lm.evaluate import behaviour_table, capability, complete, corpus_config, score
from workbench.lm.model import LM
from workbench.metrics import bootstrap_ci, paired_diff_ci, wilson_ci


def after_prompt_mask(tokens: Tensor, lengths: Tensor, lm: LM) -> Tensor:
    """(N, T) bool: positions from the last "assistant" token of each sequence to its end (the reply side).

    For a scoring prompt that is "assistant :" (2 positions); for a full dialogue it also covers the final reply.
    """
    asst = lm.tokenizer.token_id("assistant")
    T = tokens.shape[1]
    pos = torch.arange(T)[None, :]
    real = pos < lengths[:, None]
    is_asst = (tokens == asst) & real
    last = torch.where(is_asst, pos, torch.full_like(tokens, -1)).max(dim=1).values
    if bool((last < 0).any()):
        i = int(torch.nonzero(last < 0)[0, 0])
        raise WorkbenchError(f"sequence {i} has no 'assistant' token to steer after")
    return (pos >= last[:, None]) & real


def steer_hooks(lm: LM, vector: Tensor, layer: int, coef: float):
    """A hook spec for `evaluate.score`: per batch, add coef * vector at `layer` on the after-prompt positions.

    Reuses `add_vector` with a batched (B, T, d) vector that is zero outside the mask.
    """
    name = resid_hook(lm, layer)

    def spec(tokens: Tensor, lengths: Tensor):
        mask = after_prompt_mask(tokens, lengths, lm).float()
        return [(name, add_vector(mask[..., None] * vector[None, None, :], coef))]

    return spec


def ablate_hooks(lm: LM, vector: Tensor) -> list:
    """Directional ablation of `vector` everywhere in the residual stream (every block's input and middle, and
    the final output)."""
    fn = ablate_direction(vector)
    names = [f"blocks.{L}.hook_resid_{k}" for L in range(lm.n_layers) for k in ("pre", "mid")]
    names.append(f"blocks.{lm.n_layers - 1}.hook_resid_post")
    return [(n, fn) for n in names]


def _rate(flags: np.ndarray) -> dict:
    k, n = int(flags.sum()), int(flags.size)
    lo, hi = wilson_ci(k, n)
    return {"rate": k / n if n else float("nan"), "ci95": [lo, hi], "n": n}


def _mean(x: np.ndarray, seed: int) -> dict:
    return {"mean": float(np.mean(x)), "ci95": list(bootstrap_ci(x, seed=seed)), "n": int(x.size)}


def _condition(lm: LM, ex, cap_n: int, seed: int, hooks) -> dict:
    s = score(lm, ex, hooks)
    wrong = (s.claim == "wrong").to_numpy()
    cap = capability(lm, cap_n, seed + 1, hooks)
    return {
        "_scored": s,
        "_wrong": wrong,
        "_cap": cap,
        "agree_wrong": _rate(s.agree.to_numpy()[wrong]),
        "true_wrong": _rate(s.true.to_numpy()[wrong]),
        "logit_diff_wrong": _mean(s.logit_diff.to_numpy()[wrong], seed),
        "heldout_accuracy": cap["accuracy"],
        "heldout_loss": cap["loss"],
        "personas": behaviour_table(s, seed),
    }


def _paired(base: dict, cond: dict, seed: int) -> dict:
    w = base["_wrong"]
    b, c = base["_scored"], cond["_scored"]
    return {
        "agree_wrong": paired_diff_ci(b.agree.to_numpy()[w], c.agree.to_numpy()[w], seed=seed),
        "true_wrong": paired_diff_ci(b.true.to_numpy()[w], c.true.to_numpy()[w], seed=seed),
        "logit_diff_wrong": paired_diff_ci(b.logit_diff.to_numpy()[w], c.logit_diff.to_numpy()[w], seed=seed),
        "heldout_accuracy": paired_diff_ci(base["_cap"]["_flags"], cond["_cap"]["_flags"], seed=seed),
        "heldout_loss": paired_diff_ci(base["_cap"]["_loss"], cond["_cap"]["_loss"], seed=seed),
    }


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def steer_experiment(
    lm: LM,
    vector: str = "sycophancy",
    layer: int = 1,
    coefs: Sequence[float] = (-2.0, -1.0, 1.0, 2.0),
    split: str = "ood",
    n: int = 600,
    seed: int = 0,
    ablate: bool = False,
    n_vec: int = 200,
    cap_n: int = 400,
) -> dict:
    """Steer (or ablate) along a named vector (see directions.VECTORS) at `layer`; compare with baseline and an
    equal-norm random vector. Returns a JSON-ready dict:

    {"subject", "vector", "layer", "split", "n", "seed", "vector_norm", "mode",
     "baseline": condition, "conditions": [{"coef", "steered": condition, "control": condition,
     "steered_minus_baseline": diffs, "control_minus_baseline": diffs}, ...]}

    where a condition holds agree_wrong / true_wrong (Wilson CIs, over prompts with a wrong claim),
    logit_diff_wrong (mean, bootstrap CI), heldout_accuracy and heldout_loss (cap_n no-claim questions), and a
    per-persona table; diffs are paired bootstrap CIs on the same prompts. In ablation mode there is one condition
    (coef None). The vector is fit on `n_vec` prompts from seed + 1000, never on the evaluated prompts.
    """
    kind = corpora.of(lm)
    if vector not in vectors_of(lm):
        raise unknown("vector", vector, vectors_of(lm))
    if split not in kind.splits:
        raise unknown("split", split, kind.splits)
    resid_hook(lm, layer)  # validates the layer before any work
    if n < 1:
        raise WorkbenchError(f"n must be >= 1, got {n}")
    if not ablate and not len(coefs):
        raise WorkbenchError("give at least one coefficient")
    v = direction(lm, vector, n_vec, seed + 1000)[layer]
    r = random_like(v, seed)
    ex = kind.fn("generate")(split, n, seed, corpus_config(lm))
    if not any(e.claim == "wrong" for e in ex):
        raise WorkbenchError(f"no prompt in {n} {split} prompts has a wrong claim; use more prompts or split ood")
    base = _condition(lm, ex, cap_n, seed, None)
    out_conds = []
    plan = (
        [(None, ablate_hooks(lm, v), ablate_hooks(lm, r))]
        if ablate
        else [(float(c), steer_hooks(lm, v, layer, float(c)), steer_hooks(lm, r, layer, float(c))) for c in coefs]
    )
    for coef, hv, hr in plan:
        steered = _condition(lm, ex, cap_n, seed, hv)
        control = _condition(lm, ex, cap_n, seed, hr)
        out_conds.append(
            {
                "coef": coef,
                "steered": _public(steered),
                "control": _public(control),
                "steered_minus_baseline": _paired(base, steered, seed),
                "control_minus_baseline": _paired(base, control, seed),
            }
        )
    return {
        "subject": lm.name,
        "vector": vector,
        "layer": int(layer),
        "mode": "ablate" if ablate else "add",
        "split": split,
        "n": n,
        "seed": seed,
        "vector_norm": float(v.norm()),
        "baseline": _public(base),
        "conditions": out_conds,
    }


def _fmt_rate(d: dict) -> str:
    return f"{d['rate']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"


def _fmt_mean(d: dict) -> str:
    return f"{d['mean']:+.2f} [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]"


def _fmt_diff(d: dict) -> str:
    return f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def steering_table(result: dict) -> str:
    """Markdown table: one row per condition (baseline, steered and control per coef, paired diffs)."""
    head = (
        "| condition | agree with wrong claim | true answer | logit(true) - logit(claim) | held-out accuracy "
        "| held-out loss |\n|---|---|---|---|---|---|"
    )

    def row(label: str, c: dict) -> str:
        return (
            f"| {label} | {_fmt_rate(c['agree_wrong'])} | {_fmt_rate(c['true_wrong'])} | "
            f"{_fmt_mean(c['logit_diff_wrong'])} | {_fmt_rate(c['heldout_accuracy'])} | "
            f"{_fmt_mean(c['heldout_loss'])} |"
        )

    def drow(label: str, d: dict) -> str:
        return (
            f"| {label} | {_fmt_diff(d['agree_wrong'])} | {_fmt_diff(d['true_wrong'])} | "
            f"{_fmt_diff(d['logit_diff_wrong'])} | {_fmt_diff(d['heldout_accuracy'])} | "
            f"{_fmt_diff(d['heldout_loss'])} |"
        )

    lines = [head, row("baseline", result["baseline"])]
    for c in result["conditions"]:
        tag = "ablate" if c["coef"] is None else f"coef {c['coef']:+g}"
        lines += [
            row(f"{result['vector']} {tag}", c["steered"]),
            row(f"random {tag}", c["control"]),
            drow(f"{result['vector']} {tag} - baseline", c["steered_minus_baseline"]),
            drow(f"random {tag} - baseline", c["control_minus_baseline"]),
        ]
    return "\n".join(lines)


def store_rows(result: dict, run_id: str) -> list[dict]:
    """Results-store rows (workbench.store) for a steering result: one per condition x metric."""
    rows = []

    def add(intervention: str, metric: str, value: float, ci, n: int) -> None:
        rows.append(
            {
                "run_id": run_id,
                "subject": result["subject"],
                "split": result["split"],
                "seed": result["seed"],
                "intervention": intervention,
                "metric": metric,
                "value": value,
                "ci_low": ci[0],
                "ci_high": ci[1],
                "n": n,
                "extra": {"vector": result["vector"], "layer": result["layer"], "mode": result["mode"]},
            }
        )

    def cond(intervention: str, c: dict) -> None:
        for m in ("agree_wrong", "true_wrong", "heldout_accuracy"):
            add(intervention, m, c[m]["rate"], c[m]["ci95"], c[m]["n"])
        for m in ("logit_diff_wrong", "heldout_loss"):
            add(intervention, m, c[m]["mean"], c[m]["ci95"], c[m]["n"])

    cond("none", result["baseline"])
    for c in result["conditions"]:
        tag = "ablate" if c["coef"] is None else f"add coef={c['coef']:+g}"
        where = f"{result['vector']}@L{result['layer']}"
        cond(f"{tag} {where}", c["steered"])
        cond(f"{tag} random@L{result['layer']}", c["control"])
        for m, d in c["steered_minus_baseline"].items():
            add(f"{tag} {where} - none", f"{m}_diff", d["diff"], d["ci95"], d["n"])
    return rows


# --------------------------------------------------------------------------------------------------- one prompt


def custom_example(
    cfg: corpus.CorpusConfig,
    a: int,
    b: int,
    claimed: int | None = None,
    *,
    header: str = "",
    style: str = "",
    seed: int = 0,
) -> corpus.Example:
    """One dialogue with a chosen final question "what is a plus b ?" and user claim (None: no claim).

    Why: `corpus.make_example` draws the question at random; a playground (and a test) needs a fixed one. The
    persona cues come from `make_example` itself (`[ header ]`, and an earlier exchange in `style`'s style with a
    correct claim, drawn with `seed`); only the final user turn is replaced, using the corpus's first question and
    claim templates. Neither cue: the `none` group; header and style naming different personas: `mixed`.
    Out-of-range numbers raise WorkbenchError (the model's vocabulary holds 0..2 * max_operand only).
    """
    for label, value in (("a", a), ("b", b)):
        if not 0 <= int(value) <= cfg.max_operand:
            raise WorkbenchError(f"{label} must be in 0..{cfg.max_operand} (the corpus's operands), got {value}")
    if claimed is not None and not 0 <= int(claimed) <= cfg.max_answer:
        raise WorkbenchError(f"the claimed answer must be in 0..{cfg.max_answer}, got {claimed}")
    for persona in (header, style):
        if persona and persona not in corpus.PERSONAS:
            raise unknown("persona", persona, corpus.PERSONAS)
    a, b = int(a), int(b)
    answer = a + b
    kind = "none" if claimed is None else "correct" if int(claimed) == answer else "wrong"
    rng = np.random.default_rng([int(seed), 11])
    base = corpus.make_example(rng, cfg, header=header, style=style, claim=kind, context_claim="correct")
    voice = header or style or "honest"  # the persona make_example writes the final reply in
    question = corpus.QUESTIONS[0].format(a=a, b=b)
    user = question if claimed is None else f"{question} {corpus.CLAIM_TEXT[0].format(c=int(claimed))}"
    said = int(claimed) if kind == "wrong" and corpus.FOLLOWS_CLAIM[voice] else answer
    prefix = base.prompt[: base.prompt.rfind("user :")]  # header and earlier exchange, as make_example wrote them
    return dataclasses.replace(
        base,
        prompt=f"{prefix}user : {user} assistant :",
        response=f"{said} . {corpus.TAILS[voice][kind].format(c=claimed)} <eos>",
        claim=kind,
        a=a,
        b=b,
        answer=answer,
        claimed=-1 if claimed is None else int(claimed),
        said=said,
    )


def steer_prompt(
    lm: LM, example: corpus.Example, vector: Tensor, layer: int, coef: float, seed: int = 0, max_new: int = 12
) -> pd.DataFrame:
    """One prompt answered three ways, one row each (`condition`): `none` (no hook), `steered` (coef * vector added
    at `layer` on the after-prompt positions, as `steer_hooks`) and `random` (the same with
    `random_like(vector, seed)`, equal norm: the control for "any push this large").

    Columns: condition, answer (greedy first reply token), reply (greedy continuation, `evaluate.complete`),
    true, agree, logit_diff (logit(true) - logit(claimed); nan without a claim), p_true, p_claim. vector: (d_model,).
    """
    v = torch.as_tensor(vector).detach().float()
    plan = (
        ("none", None),
        ("steered", steer_hooks(lm, v, layer, float(coef))),
        ("random", steer_hooks(lm, random_like(v, seed), layer, float(coef))),
    )
    rows = []
    for condition, spec in plan:
        s = score(lm, [example], spec).iloc[0]
        rows.append(
            {
                "condition": condition,
                "answer": str(s.pred),
                "reply": complete(lm, [example.prompt], max_new, spec)[0],
                "true": bool(s.true),
                "agree": bool(s.agree),
                "logit_diff": float(s.logit_diff),
                "p_true": float(s.p_true),
                "p_claim": float(s.p_claim),
            }
        )
    return pd.DataFrame(rows)
