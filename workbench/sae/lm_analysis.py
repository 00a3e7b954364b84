"""SAE latents of a persona LM: which latents read the persona and the claim's truth, and do they steer like the
sycophancy vector?

Goal alignment: the persona LM (`workbench.lm`) answers a wrong claim truthfully as `honest` and agreeably as
`sycophant`. The labels are the ones the LM's probes use (`workbench.lm.directions._probe_data`: persona =
sycophant (1) vs honest (0) dialogues as sampled in training; claim_wrong = wrong (1) vs correct (0) claims in
honest/sycophant dialogues), read at the last prompt position (the ":" after "assistant", where the answer is
decided) of the SAE's layer. Every latent is an AUROC scorer for a label. Latents are non-negative, so a latent that
fires for *honest* scores the sycophant label below 0.5: each latent's polarity (+1 fires for label 1, -1 for label
0) is chosen on the fit prompts and its held-out AUROC is measured in that orientation (no choice on the test set).
Baselines on the same prompts and labels: the logistic probe (`fit_logistic`), the difference of means of the fit
prompts, and the named difference-of-means vector that `workbench lm steer` uses (sycophancy / claim-wrong); the
control is the latent (and the probe) chosen on labels shuffled across fit prompts, tested on the true labels.

Steering: the best persona latent's decoder direction (oriented towards sycophant, rescaled to the sycophancy
vector's norm) is added at coef on the after-prompt positions exactly as `workbench.lm.steering` adds the sycophancy
vector, next to that vector and an equal-norm random direction (`random_like`), at the same coefs, on the same OOD
prompts; and the latent is clamped in the spliced model (`clamp_latent`, error term kept) at every position. Every
condition is scored by `workbench.lm.steering`'s own condition / paired-difference machinery: the agreement-with-a-
wrong-claim rate (Wilson CI), its paired change vs the un-intervened run (bootstrap CI) and the capability cost.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.errors import WorkbenchError
from workbench.hooks import run_with_cache
from workbench.interventions import clamp_latent, random_like
from workbench.metrics import auroc, bootstrap_ci_paired
from workbench.probes import fit_logistic

TARGETS = ("persona", "claim_wrong")
VECTOR_FOR = {"persona": "sycophancy", "claim_wrong": "claim-wrong"}
LABEL_NAMES = {"persona": ("honest", "sycophant"), "claim_wrong": ("correct claim", "wrong claim")}
"""What label 0 and label 1 are, per target (for tables: "fires for honest")."""
LABEL_TEXT = {
    "persona": "persona: sycophant (1) vs honest (0)",
    "claim_wrong": "the user's claim is wrong (1) vs correct (0)",
}


def resid_layer(hook: str) -> int:
    """The layer L of a residual-stream hook `blocks.L.hook_resid_{pre,mid,post}`; other hooks are an error."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|mid|post)", str(hook))
    if not m:
        raise WorkbenchError(f"LM goal alignment reads a residual stream hook (blocks.L.hook_resid_post), not {hook!r}")
    return int(m.group(1))


@torch.no_grad()
def prompt_acts(lm, examples, hook: str, position: int = -1, batch: int = 256) -> Tensor:
    """(N, d_model) activations at `hook` at one prompt position (-1: the last prompt token) of each example."""
    from workbench.data.prompts import collect_prompts

    tokens, lengths = lm.encode([e.prompt for e in examples])
    ds = collect_prompts(
        lm.model, tokens, None, [hook], positions=position, lengths=lengths, progress=False, batch_size=batch
    )
    return ds[hook].float()


@torch.no_grad()
def encode(sae, x: Tensor) -> np.ndarray:
    """(N, d_sae) latent activations of (N, d_in) rows, as float64 numpy."""
    return sae.encode(x.to(sae.dtype)).double().numpy()


def _oriented(y: np.ndarray, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per latent: AUROC against y, and the polarity (+1 / -1) that makes it >= 0.5 (constant latents: 0.5, +1)."""
    a = np.array([auroc(y, feats[:, j]) for j in range(feats.shape[1])])
    pol = np.where(a >= 0.5, 1.0, -1.0)
    return np.maximum(a, 1.0 - a), pol


def _measured(y: np.ndarray, score: np.ndarray, n_boot: int, seed: int) -> dict:
    return {"auroc": auroc(y, score), "ci95": list(bootstrap_ci_paired(y, score, auroc, n_boot, seed))}


def lm_goal_alignment(
    lm,
    sae,
    hook: str,
    n_fit: int = 1000,
    n_test: int = 500,
    seed: int = 0,
    n_top: int = 5,
    n_boot: int = 500,
    n_vec: int = 200,
    position: int = -1,
    targets: Sequence[str] = TARGETS,
) -> dict:
    """Rank SAE latents by AUROC for each label in `targets` (module docstring) on `n_fit` prompts (seed), re-measure
    the top `n_top` on `n_test` held-out prompts (seed + 1), next to the probe, diff-of-means, named vector and the
    shuffled-label controls. Returns a JSON-ready dict {"hook", "position", "targets": {target: {...}}} plus
    "directions" {target: {"sae_decoder", "probe", "diff_of_means", "vector"}} ((d_model,) tensors; drop before
    writing JSON). AUROC CIs: paired bootstrap over prompts."""
    from workbench.lm.directions import _probe_data, direction

    layer = resid_layer(hook)
    out: dict = {"hook": hook, "layer": layer, "position": int(position), "seed": int(seed), "targets": {}}
    dirs: dict = {}
    rng = np.random.default_rng(seed)
    for target in targets:
        if target not in TARGETS:
            from workbench.errors import unknown

            raise unknown("alignment target", target, TARGETS)
        fit_ex, y_fit = _probe_data(lm, target, int(n_fit), seed)
        test_ex, y_test = _probe_data(lm, target, int(n_test), seed + 1)
        y_fit, y_test = y_fit.astype(bool), y_test.astype(bool)
        Xf, Xt = prompt_acts(lm, fit_ex, hook, position), prompt_acts(lm, test_ex, hook, position)
        Ff, Ft = encode(sae, Xf), encode(sae, Xt)
        strength, pol = _oriented(y_fit, Ff)
        order = np.argsort(-strength, kind="stable")[: int(n_top)]
        latents = [
            {
                "latent": int(j),
                "polarity": int(pol[j]),
                "fit_auroc": float(strength[j]),
                "density_fit": float((Ff[:, j] != 0).mean()),
                "fires_for": LABEL_NAMES[target][int(pol[j] > 0)],
                "mean_when_firing": float(Ff[Ff[:, j] != 0, j].mean()) if (Ff[:, j] != 0).any() else 0.0,
                **_measured(y_test, pol[j] * Ft[:, j], n_boot, seed),
            }
            for j in order
        ]
        probe = fit_logistic(Xf.double(), torch.as_tensor(y_fit, dtype=torch.float64))
        shuffled = rng.permutation(y_fit)
        ctrl_probe = fit_logistic(Xf.double(), torch.as_tensor(shuffled, dtype=torch.float64))
        dm = Xf[torch.as_tensor(y_fit)].double().mean(0) - Xf[~torch.as_tensor(y_fit)].double().mean(0)
        vec = direction(lm, VECTOR_FOR[target], int(n_vec), seed + 1000)[layer].double()
        s_strength, s_pol = _oriented(shuffled, Ff)
        ctrl = int(np.argmax(s_strength))
        best = int(order[0])
        out["targets"][target] = {
            "label": LABEL_TEXT[target],
            "n_fit": int(y_fit.size),
            "n_test": int(y_test.size),
            "positives_test": int(y_test.sum()),
            "best_latent": best,
            "best_polarity": int(pol[best]),
            "latents": latents,
            "probe": _measured(y_test, probe.scores(Xt.double())[0].numpy(), n_boot, seed),
            "diff_of_means": _measured(y_test, (Xt.double() @ dm).numpy(), n_boot, seed),
            "vector": {"name": VECTOR_FOR[target], **_measured(y_test, (Xt.double() @ vec).numpy(), n_boot, seed)},
            "control_latent": {
                "latent": ctrl,
                "fit_auroc_shuffled": float(s_strength[ctrl]),
                **_measured(y_test, s_pol[ctrl] * Ft[:, ctrl], n_boot, seed),
            },
            "control_probe": _measured(y_test, ctrl_probe.scores(Xt.double())[0].numpy(), n_boot, seed),
            "cosine_decoder_vector": float(
                torch.nn.functional.cosine_similarity(sae.W_dec[best].detach().double() * pol[best], vec, dim=0)
            ),
        }
        dirs[target] = {
            "sae_decoder": (sae.W_dec[best].detach().float() * float(pol[best])).clone(),
            "probe": probe.direction()[0].float().clone(),
            "diff_of_means": dm.float(),
            "vector": vec.float(),
        }
    out["directions"] = dirs
    return out


def alignment_table(ga: dict) -> str:
    """Markdown: one block per target, the top latents (held-out AUROC with CI, fit AUROC, polarity) then the
    baselines and controls."""

    def ci(r: dict) -> str:
        return f"{r['auroc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"

    lines = []
    for t in ga["targets"].values():
        lines += [
            f"**{t['label']}** ({t['n_fit']} fit prompts, {t['n_test']} held-out prompts with {t['positives_test']} "
            f"positive; `{ga['hook']}` at prompt position {ga['position']})",
            "",
            "| scorer | AUROC (held out) | AUROC (fit) |",
            "|---|---|---|",
        ]
        for lat in t["latents"]:
            lines.append(
                f"| SAE latent {lat['latent']} (fires for {lat['fires_for']}; density {lat['density_fit']:.2f}) | "
                f"{ci(lat)} | "
                f"{lat['fit_auroc']:.3f} |"
            )
        c = t["control_latent"]
        lines += [
            f"| logistic probe | {ci(t['probe'])} | |",
            f"| difference of means (fit prompts) | {ci(t['diff_of_means'])} | |",
            f"| `{t['vector']['name']}` vector (`workbench lm steer`'s) | {ci(t['vector'])} | |",
            f"| control: best latent for shuffled labels (latent {c['latent']}) | {ci(c)} | "
            f"{c['fit_auroc_shuffled']:.3f} (shuffled) |",
            f"| control: probe fitted on shuffled labels | {ci(t['control_probe'])} | |",
            "",
            f"Cosine between the best latent's (oriented) decoder direction and the `{t['vector']['name']}` vector: "
            f"{t['cosine_decoder_vector']:+.3f}.",
            "",
        ]
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------------------- steering
def lm_latent_steering(
    lm,
    sae,
    hook: str,
    latent: int,
    polarity: int = 1,
    coefs: Sequence[float] = (-2.0, -1.0, 1.0, 2.0),
    clamp_values: Sequence[float] = (0.0,),
    n: int = 600,
    seed: int = 0,
    n_vec: int = 200,
    cap_n: int = 200,
) -> dict:
    """The persona latent vs the sycophancy vector vs a random direction on the same `n` OOD prompts (module doc).

    The latent's decoder direction W_dec[latent] * polarity is rescaled to the norm of the sycophancy vector (fit
    as `steer_experiment` fits it: n_vec prompts, seed + 1000), so "+coef" pushes all three directions equally hard
    in activation units; the random direction is `random_like(vector, seed)`. Clamps set the latent to each of
    `clamp_values` at every position with the SAE's error term kept. The first condition splices the plain SAE
    reconstruction in (behavioural fidelity: does the model still answer as it did?). Returns {"baseline",
    "conditions": [{"name", "kind", "coef", "result", "minus_baseline"}], ...}, JSON-ready; conditions are scored by
    `workbench.lm.steering`'s `_condition` and `_paired` (the same numbers `workbench lm steer` reports)."""
    from workbench.lm import corpus
    from workbench.lm.directions import direction
    from workbench.lm.evaluate import corpus_config
    from workbench.lm.steering import _condition, _paired, _public, steer_hooks

    layer = resid_layer(hook)
    if not 0 <= int(latent) < sae.cfg.d_sae:
        raise WorkbenchError(f"latent {latent} out of range for an SAE of width {sae.cfg.d_sae}")
    if polarity not in (1, -1):
        raise WorkbenchError(f"polarity must be +1 or -1, got {polarity}")
    v = direction(lm, "sycophancy", int(n_vec), seed + 1000)[layer].float()
    raw = sae.W_dec[int(latent)].detach().float() * float(polarity)
    d = raw / raw.norm().clamp_min(1e-12) * v.norm()
    r = random_like(v, seed)
    ex = corpus.generate("ood", int(n), seed, corpus_config(lm))
    base = _condition(lm, ex, cap_n, seed, None)
    from workbench.interventions import sae_splice

    plan: list[tuple[str, str, float | None, object]] = [
        ("SAE reconstruction spliced in (fidelity)", "splice", None, [(hook, sae_splice(sae))])
    ]
    for c in coefs:
        c = float(c)
        plan += [
            ("sycophancy vector", "add", c, steer_hooks(lm, v, layer, c)),
            (f"SAE latent {latent} decoder", "add", c, steer_hooks(lm, d, layer, c)),
            ("random direction (control)", "add", c, steer_hooks(lm, r, layer, c)),
        ]
    for value in clamp_values:
        plan.append((f"SAE latent {latent} clamped", "clamp", float(value), [(hook, clamp_latent(sae, latent, value))]))
    conds = []
    for name, kind, coef, hooks in plan:
        res = _condition(lm, ex, cap_n, seed, hooks)
        conds.append(
            {
                "name": name,
                "kind": kind,
                "coef": coef,
                "result": _public(res),
                "minus_baseline": _paired(base, res, seed),
            }
        )
    return {
        "subject": lm.name,
        "hook": hook,
        "layer": layer,
        "latent": int(latent),
        "polarity": int(polarity),
        "split": "ood",
        "n": int(n),
        "seed": int(seed),
        "vector_norm": float(v.norm()),
        "decoder_cosine_vector": float(torch.nn.functional.cosine_similarity(raw, v, dim=0)),
        "baseline": _public(base),
        "conditions": conds,
    }


def lm_steering_table(result: dict) -> str:
    """Markdown: baseline then every condition (agree-with-wrong-claim rate, its paired change, the change in
    logit(true) - logit(claim), held-out accuracy and its change)."""

    def rate(d: dict) -> str:
        return f"{d['rate']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}]"

    def diff(d: dict) -> str:
        return f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"

    b = result["baseline"]
    n_wrong = b["agree_wrong"]["n"]
    lines = [
        f"| condition (n={n_wrong} OOD prompts with a wrong claim) | agree with wrong claim | Δ agree vs none | "
        "Δ logit(true) - logit(claim) | held-out accuracy | Δ accuracy |",
        "|---|---|---|---|---|---|",
        f"| none | {rate(b['agree_wrong'])} | - | - | {rate(b['heldout_accuracy'])} | - |",
    ]
    for c in result["conditions"]:
        tag = "" if c["coef"] is None else f"x{c['coef']:+g}" if c["kind"] == "add" else f"= {c['coef']:g}"
        m, r = c["minus_baseline"], c["result"]
        lines.append(
            f"| {c['name']} {tag}".rstrip() + f" | {rate(r['agree_wrong'])} | {diff(m['agree_wrong'])} | "
            f"{diff(m['logit_diff_wrong'])} | {rate(r['heldout_accuracy'])} | {diff(m['heldout_accuracy'])} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ token examples
@torch.no_grad()
def token_latents(lm, sae, hook: str, texts: Sequence[str]) -> tuple[list[list[str]], list[np.ndarray]]:
    """Per text: its token strings and the (T, d_sae) latent activations at `hook` at each of its tokens."""
    from workbench.lm.directions import token_strings

    tokens, lengths = lm.encode(list(texts))
    _, cache = run_with_cache(lm.model, tokens, names_filter=hook)
    acts = cache[hook]
    words, feats = [], []
    for i in range(len(texts)):
        n_i = int(lengths[i])
        words.append(token_strings(lm, tokens[i, :n_i]))
        feats.append(encode(sae, acts[i, :n_i].reshape(n_i, -1)))
    return words, feats


def top_activating_tokens(
    words: list[list[str]], feats: list[np.ndarray], latent: int, n: int = 10, context: int = 8
) -> pd.DataFrame:
    """The `n` (text, position) pairs where `latent` is highest, with `context` tokens before and 2 after the token
    (marked [[like this]]). Columns: text, position, token, activation, context."""
    if not feats or not 0 <= int(latent) < feats[0].shape[1]:
        raise WorkbenchError(f"latent {latent} out of range")
    rows = [(float(f[t, latent]), i, t) for i, f in enumerate(feats) for t in range(f.shape[0]) if f[t, latent] > 0]
    rows.sort(key=lambda r: (-r[0], r[1], r[2]))
    out = []
    for value, i, t in rows[: int(n)]:
        w = words[i]
        ctx = " ".join([*w[max(0, t - context) : t], f"[[{w[t]}]]", *w[t + 1 : t + 3]])
        out.append({"text": i, "position": t, "token": w[t], "activation": value, "context": ctx})
    return pd.DataFrame(out, columns=["text", "position", "token", "activation", "context"])


__all__ = [
    "TARGETS",
    "alignment_table",
    "lm_goal_alignment",
    "lm_latent_steering",
    "lm_steering_table",
    "prompt_acts",
    "resid_layer",
    "token_latents",
    "top_activating_tokens",
]
