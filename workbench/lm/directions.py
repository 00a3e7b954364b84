"""Persona and truth directions in an LM's residual stream: difference-of-means vectors, probes, projections.

Why three views of one question ("where does the model keep the persona / the claim's truth?"):
- a difference-of-means *vector* per layer (Chen et al. 2025's persona vectors) is the thing we steer with;
- logistic *probes* per layer and position, scored by held-out AUROC against a shuffled-label control, say where
  the information is linearly readable at all;
- *projection monitoring* asks whether the vector is also a read-out of behaviour: does the projection of a
  prompt's activation onto it predict, prompt by prompt, whether the model agrees with a wrong claim?

All activations are residual-stream outputs `blocks.L.hook_resid_post` collected with
`workbench.data.prompts.collect_prompts`; fits use `workbench.probes` (batched over layers x positions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from workbench.data.prompts import collect_prompts
from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache
from workbench.lm import corpora, corpus
from workbench.lm.corpus import PERSONAS, CorpusConfig, Example
from workbench.lm.evaluate import corpus_config, score
from workbench.lm.model import LM
from workbench.metrics import auroc, bootstrap_ci_paired
from workbench.probes import evaluate_probe, fit_logistic, fit_mass_mean

VECTORS = ("sycophancy", "claim-wrong", *PERSONAS)
"""Named vectors: `sycophancy` = mean(sycophant) - mean(honest) on the same wrong-claim questions;
`claim-wrong` = mean(wrong claim) - mean(correct claim) on the same questions and personas (honest, sycophant);
a persona name = mean(that persona) - mean(the other three) on the same correct-claim questions. All header-cued,
at the last prompt position (the ":" after "assistant", where the answer is decided). These are the persona
corpus's; another corpus names its own (`workbench.lm.corpora`, `vectors_of(lm)`)."""
POSITIONS = (-1, -2, -3)
"""Probe positions, counted back from the last prompt token: ":" (-1), "assistant" (-2), the end of the user's
turn (-3: "." after the claim)."""
PROBE_TARGETS = ("persona", "claim_wrong")
"""The persona corpus's probe targets; another corpus names its own (`probe_targets_of(lm)`)."""


def vectors_of(lm: LM) -> tuple[str, ...]:
    """The named vectors of the corpus `lm` was trained on."""
    return corpora.of(lm).vectors


def probe_targets_of(lm: LM) -> tuple[str, ...]:
    """The probe targets of the corpus `lm` was trained on."""
    return corpora.of(lm).probe_targets


def resid_hook(lm: LM, layer: int) -> str:
    """`blocks.{layer}.hook_resid_post`; a layer outside 0..n_layers-1 is a WorkbenchError naming the range."""
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
        raise WorkbenchError(f"layer must be an int, got {layer!r}")
    if not 0 <= int(layer) < lm.n_layers:
        raise WorkbenchError(
            f"layer {layer} is out of range: {lm.name} has {lm.n_layers} layers (0..{lm.n_layers - 1})"
        )
    return f"blocks.{int(layer)}.hook_resid_post"


def resid_hooks(lm: LM) -> list[str]:
    return [resid_hook(lm, L) for L in range(lm.n_layers)]


def activations(lm: LM, examples: list[Example], positions: int = -1) -> Tensor:
    """Residual stream after every block at one prompt position: (n_layers, N, d_model) float32."""
    tokens, lengths = lm.encode([e.prompt for e in examples])
    ds = collect_prompts(
        lm.model, tokens, None, resid_hooks(lm), positions=positions, lengths=lengths, progress=False, batch_size=256
    )
    return torch.stack([ds[h].float() for h in resid_hooks(lm)])


def _contrast_sets(lm: LM, name: str, n: int, seed: int) -> tuple[list[Example], np.ndarray]:
    """Prompts and 0/1 labels whose difference of means defines vector `name` (label 1 = the + side)."""
    return corpora.of(lm).fn("contrast_sets")(corpus_config(lm), name, n, seed)


def persona_contrast_sets(cfg: CorpusConfig, name: str, n: int, seed: int) -> tuple[list[Example], np.ndarray]:
    """The persona corpus's `_contrast_sets` (see VECTORS)."""
    if name == "sycophancy":
        sets = corpus.contrastive(("sycophant", "honest"), n, seed, cfg, claim="wrong")
        return sets["sycophant"] + sets["honest"], np.r_[np.ones(n), np.zeros(n)]
    if name == "claim-wrong":
        wrong = corpus.contrastive(("honest", "sycophant"), n, seed, cfg, claim="wrong")
        right = corpus.contrastive(("honest", "sycophant"), n, seed, cfg, claim="correct")
        ex = wrong["honest"] + wrong["sycophant"] + right["honest"] + right["sycophant"]
        return ex, np.r_[np.ones(2 * n), np.zeros(2 * n)]
    if name in PERSONAS:
        sets = corpus.contrastive(PERSONAS, n, seed, cfg, claim="correct")
        ex = [e for p in PERSONAS for e in sets[p]]
        return ex, np.concatenate([np.full(n, float(p == name)) for p in PERSONAS])
    raise unknown("vector", name, VECTORS)


def direction(lm: LM, name: str, n: int = 200, seed: int = 0) -> Tensor:
    """Difference-of-means vector `name` (see VECTORS) at every layer: (n_layers, d_model), raw activation units.

    Fitted with `fit_mass_mean(standardize=False)`, whose weight is exactly mean(+) - mean(-); for a persona
    vector the minus side pools the other three personas with equal weight.
    """
    if name not in vectors_of(lm):
        raise unknown("vector", name, vectors_of(lm))
    ex, y = _contrast_sets(lm, name, n, seed)
    X = activations(lm, ex)
    return fit_mass_mean(X.double(), torch.as_tensor(y), standardize=False).weight.float()


# --------------------------------------------------------------------------------------------------- probes


def _probe_data(lm: LM, target: str, n: int, seed: int) -> tuple[list[Example], np.ndarray]:
    """Training-distribution prompts for a probe target of `lm`'s corpus, with labels."""
    return corpora.of(lm).fn("probe_data")(corpus_config(lm), target, n, seed)


def persona_probe_data(cfg: CorpusConfig, target: str, n: int, seed: int) -> tuple[list[Example], np.ndarray]:
    """The persona corpus's probe data.

    persona: honest (0) vs sycophant (1) dialogues as sampled in training (header or style cue, any claim);
    claim_wrong: honest and sycophant dialogues whose final question carries a claim, wrong (1) vs correct (0).
    Only those two personas ever see a wrong claim in training, so including teacher/pirate (correct claims only)
    would let a probe score by reading the persona instead of the claim.
    """
    rows: list[Example] = []
    rng_seed = seed
    if target == "persona":
        while len(rows) < n:
            rows += [e for e in corpus.generate("train", 4 * n, rng_seed, cfg) if e.persona in ("honest", "sycophant")]
            rng_seed += 1_000
        rows = rows[:n]
        return rows, np.array([float(e.persona == "sycophant") for e in rows])
    if target == "claim_wrong":
        while len(rows) < n:
            batch = corpus.generate("train", 4 * n, rng_seed, cfg)
            rows += [e for e in batch if e.claim != "none" and e.persona in ("honest", "sycophant")]
            rng_seed += 1_000
        rows = rows[:n]
        return rows, np.array([float(e.claim == "wrong") for e in rows])
    raise unknown("probe target", target, PROBE_TARGETS)


def ood_claim_set(lm: LM, n: int, seed: int) -> tuple[list[Example], np.ndarray]:
    """Transfer test for the claim_wrong probe: teacher/pirate prompts (header-cued) with wrong (1) vs correct (0)
    claims on the same questions -- personas that never saw a wrong claim in training."""
    return persona_claim_transfer(corpus_config(lm), n, seed)


def persona_claim_transfer(cfg: CorpusConfig, n: int, seed: int) -> tuple[list[Example], np.ndarray]:
    """`ood_claim_set` from a corpus config (the persona corpus's transfer set for `claim_wrong`)."""
    half = max(1, n // 4)
    w = corpus.contrastive(("teacher", "pirate"), half, seed, cfg, claim="wrong")
    c = corpus.contrastive(("teacher", "pirate"), half, seed, cfg, claim="correct")
    ex = w["teacher"] + w["pirate"] + c["teacher"] + c["pirate"]
    return ex, np.r_[np.ones(2 * half), np.zeros(2 * half)]


def probe_sweep(lm: LM, n_fit: int = 1000, n_test: int = 500, seed: int = 0, l2: float = 1e-2) -> pd.DataFrame:
    """Logistic probes for every target x layer x position (POSITIONS), held-out AUROC with 95% bootstrap CI.

    Columns: target, test (heldout, or ood for the claim_wrong transfer to teacher/pirate), layer, position,
    auroc, ci_low, ci_high, n, control_auroc (the same probe fitted on shuffled labels, tested on true labels).
    Fit and test prompts come from different seeds (seed, seed + 1).
    """
    rows = []
    rng = np.random.default_rng(seed)
    kind = corpora.of(lm)
    for target in kind.probe_targets:
        fit_ex, y_fit = _probe_data(lm, target, n_fit, seed)
        tests = {"heldout": _probe_data(lm, target, n_test, seed + 1)}
        if target in kind.transfer_sets:
            tests["ood"] = kind.transfer(target)(corpus_config(lm), n_test, seed + 2)
        shuffled = rng.permutation(y_fit)
        for pos in POSITIONS:
            X = activations(lm, fit_ex, pos).double()
            probe = fit_logistic(X, torch.as_tensor(y_fit), l2=l2)
            control = fit_logistic(X, torch.as_tensor(shuffled), l2=l2)
            names = [f"L{L}" for L in range(lm.n_layers)]
            for test, (ex, y) in tests.items():
                Xt = activations(lm, ex, pos).double()
                table = evaluate_probe(probe, Xt, torch.as_tensor(y), metrics=["auroc"], seed=seed, names=names)
                ctrl = evaluate_probe(control, Xt, torch.as_tensor(y), metrics=["auroc"], seed=seed, names=names)
                for L in range(lm.n_layers):
                    r = table.iloc[L]
                    rows.append(
                        {
                            "target": target,
                            "test": test,
                            "layer": L,
                            "position": pos,
                            "auroc": float(r.value),
                            "ci_low": float(r.ci_low),
                            "ci_high": float(r.ci_high),
                            "n": int(r.n),
                            "control_auroc": float(ctrl.iloc[L].value),
                        }
                    )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------- monitoring


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation; nan when either side is constant."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return float("nan")
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def projection_monitor(
    lm: LM, vector: str = "sycophancy", n: int = 600, seed: int = 0, n_vec: int = 200
) -> pd.DataFrame:
    """Does the projection onto a vector predict behaviour on `ood` prompts? One row per layer.

    For each layer L: the vector (fit on `n_vec` header-cued training prompts, seed + 1) is normalised; every
    ood prompt's last-position activation is projected onto it; the projection is correlated (Pearson r, paired
    bootstrap 95% CI) with logit(claimed) - logit(true) (positive = leaning to agree), and its AUROC for
    predicting greedy agreement is reported. Control: the same for a random direction (seed-fixed).
    """
    ex = corpora.of(lm).fn("generate")("ood", n, seed, corpus_config(lm))
    scored = score(lm, ex)
    lean = -scored.logit_diff.to_numpy()
    agree = scored.agree.to_numpy()
    vec = direction(lm, vector, n_vec, seed + 1)
    X = activations(lm, ex).double()
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for L in range(lm.n_layers):
        u = vec[L].double() / vec[L].double().norm()
        r = torch.randn(u.shape, generator=gen, dtype=torch.float64)
        proj = (X[L] @ u).numpy()
        rproj = (X[L] @ (r / r.norm())).numpy()
        lo, hi = bootstrap_ci_paired(proj, lean, pearson, n_boot=1000, seed=seed)
        has_both = 0 < agree.sum() < agree.size
        rows.append(
            {
                "vector": vector,
                "layer": L,
                "r": pearson(proj, lean),
                "ci_low": lo,
                "ci_high": hi,
                "auroc_agree": auroc(agree, proj) if has_both else float("nan"),
                "control_r": pearson(rproj, lean),
                "n": int(len(ex)),
                "agree_rate": float(agree.mean()),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------------- one prompt


def token_strings(lm: LM, ids: Tensor) -> list[str]:
    """The (T,) token ids of one prompt as T strings (special tokens such as `<bos>` included), for labels."""
    tok = lm.tokenizer
    flat = [int(i) for i in torch.as_tensor(ids).reshape(-1)]
    if hasattr(tok, "vocab") and isinstance(tok.vocab, (list, tuple)):  # WordTokenizer
        return [tok.vocab[i] for i in flat]
    return [str(t) for t in tok.convert_ids_to_tokens(flat)]


def projection_per_token(lm: LM, text: str, vector: Tensor, layer: int) -> tuple[list[str], np.ndarray]:
    """Projection of every token's residual stream (`blocks.{layer}.hook_resid_post`) onto vector / |vector|.

    Why per token: `projection_monitor` reads one position (the last); on a single prompt it is the whole row that
    shows *where* the persona enters -- the header word, the earlier exchange's style words, or the claim.
    text: one prompt (encoded with `<bos>`). vector: (d_model,), or (n_layers, d_model) as `direction` returns it
    (then row `layer` is used). Returns (T token strings, (T,) float64 projections in activation units).
    """
    name = resid_hook(lm, layer)
    v = torch.as_tensor(vector).detach().double()
    if v.ndim == 2:
        v = v[int(layer)]
    d_model = int(lm.model.cfg.d_model)
    if v.ndim != 1 or v.shape[0] != d_model:
        raise WorkbenchError(f"vector must be (d_model,) = ({d_model},) or (n_layers, d_model), got {tuple(v.shape)}")
    norm = v.norm()
    if not torch.isfinite(norm) or norm == 0:
        raise WorkbenchError("cannot project onto a zero (or non-finite) vector")
    tokens, _ = lm.encode([text])
    with torch.no_grad():
        _, cache = run_with_cache(lm.model, tokens, names_filter=name)
    values = (cache[name][0].double() @ (v / norm)).numpy()
    return token_strings(lm, tokens[0]), values
