"""The LM verbs on any model and dataset: directions, steering (plain, conditional, capped), ablation, monitoring.

Why these shapes (RESEARCH.md, "How serious work measures"):
- every dataset is split by record, seeded, into a fit half (directions are fitted there) and a held-out half
  (every number is measured there), so no effect is scored on the prompts that made the vector;
- directions: per layer and position, held-out AUROC of the projection with a bootstrap CI, next to the same method
  fitted on permuted labels -- the control for "any direction separates these";
- steering / capping / ablation: the same held-out items un-intervened, intervened, and intervened along an
  equal-norm random direction (per coefficient), paired differences with bootstrap CIs; the capability cost of
  each condition is cross-entropy on neutral text and the KL of its next-token distribution to the un-intervened
  model's, with intervals;
- monitoring: Pearson r (paired-bootstrap CI) between the projection onto the direction and the behaviour score,
  AUROC for predicting the behaviour, and the same r for a random direction.
Behaviour: contrast pairs with a question and A/B questions are scored by log P(trait answer | prompt) - log P(other
answer | prompt); any dataset with prompts can instead be scored on greedy generations by a `Scorer`.
All intervals come from `workbench.metrics`; interventions are `workbench.lm.interventions` hook specs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.interventions import random_like
from workbench.lm import datasets as D
from workbench.lm import interventions as I
from workbench.lm import toolkit as K
from workbench.lm.model import LM
from workbench.metrics import auroc, bootstrap_ci, bootstrap_ci_paired, paired_diff_ci, rate

METHODS = ("mean-diff", "pca", "logistic")
MODES = ("add", "conditional", "cap")


# ------------------------------------------------------------------------------------------------ helpers
def check_layer(lm: LM, layer: int) -> int:
    if not 0 <= int(layer) < lm.n_layers:
        raise WorkbenchError(
            f"layer {layer} is out of range: {lm.name} has {lm.n_layers} layers (0..{lm.n_layers - 1})"
        )
    return int(layer)


def check_position(position: Any) -> int | str:
    if position == "mean":
        return "mean"
    try:
        p = int(position)
    except (TypeError, ValueError):
        raise WorkbenchError(
            f"position must be a negative int (from the end, -1 = last token) or 'mean', got {position!r}"
        ) from None
    if p >= 0:
        raise WorkbenchError(f"position must count from the end (-1 = last token) or be 'mean', got {p}")
    return p


def split_units(n: int, seed: int, fit_frac: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of records 0..n-1 into (fit, held-out), each at least 2."""
    if not 0 < fit_frac < 1:
        raise WorkbenchError(f"fit fraction must be in (0, 1), got {fit_frac}")
    if n < 4:
        raise WorkbenchError(f"need at least 4 records to fit and hold out, got {n}")
    perm = np.random.default_rng([int(seed), 31]).permutation(n)
    k = min(max(2, int(round(n * fit_frac))), n - 2)
    return np.sort(perm[:k]), np.sort(perm[k:])


def _est(x: np.ndarray, seed: int) -> dict:
    x = np.asarray(x, float)
    return {
        "mean": float(x.mean()) if x.size else float("nan"),
        "ci95": list(bootstrap_ci(x, seed=seed)),
        "n": int(x.size),
    }


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    sx, sy = x.std(), y.std()
    if sx == 0 or sy == 0:
        return float("nan")
    return float(((x - x.mean()) * (y - y.mean())).mean() / (sx * sy))


def fit_directions(X: Tensor, y: np.ndarray, method: str, unit: np.ndarray | None = None, l2: float = 1e-2) -> Tensor:
    """Directions (L, d) from activations X (L, N, d) and 0/1 labels y (N,), in activation units.

    mean-diff: mean(y=1) - mean(y=0). pca: the first principal axis of the paired differences (pos - neg per unit;
    RepE style) or, without pairs, of the centred activations. logistic: the L2 logistic probe's weight in raw
    activation space. pca and logistic are unit axes scaled to the class-mean separation along them, signed so the
    trait side projects higher: every method's vector is then in the same units and can be added as it is.
    """
    if method not in METHODS:
        raise unknown("method", method, METHODS)
    X = X.double()
    yt = torch.as_tensor(y, dtype=torch.float64)
    if yt.sum() == 0 or yt.sum() == len(yt):
        raise WorkbenchError("the fit half holds only one class; use more records")
    md = X[:, yt == 1].mean(1) - X[:, yt == 0].mean(1)  # (L, d)
    if method == "mean-diff":
        return md.float()
    if method == "pca":
        if unit is not None and _paired(unit, y):
            order = np.lexsort((-np.asarray(y), unit))  # per unit: positive first, then negative
            Xp = X[:, order]
            diffs = Xp[:, 0::2] - Xp[:, 1::2]  # (L, P, d)
            _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
        else:
            Xc = X - X.mean(1, keepdim=True)
            _, _, vh = torch.linalg.svd(Xc, full_matrices=False)
        u = vh[:, 0]  # (L, d)
    else:
        from workbench.probes import fit_logistic

        u = fit_logistic(X, yt, l2=l2).direction().double()
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sep = (md * u).sum(-1, keepdim=True)
    return (u * sep).float()  # sign flips with sep: the trait side always projects higher


def _paired(unit: np.ndarray, y: np.ndarray) -> bool:
    _, counts = np.unique(unit, return_counts=True)
    if not (counts == 2).all():
        return False
    for u in np.unique(unit):
        if sorted(np.asarray(y)[unit == u]) != [0.0, 1.0]:
            return False
    return True


def _shuffled(y: np.ndarray, seed: int) -> np.ndarray:
    """Control labels: a seeded permutation of the fit labels across all texts (pairs broken up)."""
    return np.random.default_rng([int(seed), 97]).permutation(y)


class Fitted:
    """Directions fitted on the fit half of a dataset: `vectors` (L, d), plus the texts, labels and split."""

    def __init__(
        self,
        lm: LM,
        ds: D.Dataset,
        method: str,
        position: int | str,
        seed: int,
        fit_frac: float,
        vectors: Tensor | None = None,
    ) -> None:
        self.lm, self.ds, self.method, self.position, self.seed = lm, ds, method, position, seed
        self.ct = D.contrast_texts(lm, ds)
        self.fit_units, self.test_units = split_units(len(ds), seed, fit_frac)
        self.X = K.resid_acts(lm, self.ct.texts, position, self.ct.starts)  # (L, N, d)
        self.fit_rows = np.isin(self.ct.unit, self.fit_units)
        self.test_rows = ~self.fit_rows
        if vectors is not None:  # given (e.g. fitted on another dataset): the fit half is still never measured
            self.vectors = check_vectors(lm, vectors)
            self.method = "given"
        else:
            self.vectors = fit_directions(
                self.X[:, torch.as_tensor(self.fit_rows)],
                self.ct.labels[self.fit_rows],
                method,
                self.ct.unit[self.fit_rows],
            )


def check_vectors(lm: LM, vectors: Any) -> Tensor:
    """(n_layers, d_model) float32 vectors, or a WorkbenchError naming both shapes."""
    v = torch.as_tensor(vectors).detach().float()
    want = (lm.n_layers, int(lm.model.cfg.d_model))
    if tuple(v.shape) != want:
        raise WorkbenchError(f"vectors have shape {tuple(v.shape)} but {lm.name} needs (n_layers, d_model) = {want}")
    return v


def load_vectors(lm: LM, path: str | Path) -> Tensor:
    """Vectors written by `workbench lm directions --save` (safetensors, key "vectors"), checked against the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise WorkbenchError(f"vector file {str(path)!r} does not exist")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as err:
        raise WorkbenchError(f"{path}: unreadable vectors ({err})") from None
    if "vectors" not in tensors:
        raise WorkbenchError(f"{path}: no 'vectors' tensor (keys: {', '.join(tensors)})")
    try:
        return check_vectors(lm, tensors["vectors"])
    except WorkbenchError as err:
        raise WorkbenchError(f"{path}: {err}") from None


# ------------------------------------------------------------------------------------------------ directions
def directions_study(
    lm: LM,
    ds: D.Dataset,
    method: str = "mean-diff",
    positions: Sequence[int | str] = (-1,),
    seed: int = 0,
    fit_frac: float = 0.5,
    n_boot: int = 1000,
) -> dict:
    """Per layer and position: held-out AUROC of the projection onto the fitted direction (bootstrap CI), the same
    for a direction fitted on permuted labels (control), the pairwise accuracy (pairs: trait side projects higher),
    and the vector norm. JSON-ready; `best` names the layer/position with the highest held-out AUROC."""
    if method not in METHODS:
        raise unknown("method", method, METHODS)
    positions = [check_position(p) for p in positions] or [-1]
    rows = []
    for pos in positions:
        f = Fitted(lm, ds, method, pos, seed, fit_frac)
        yf = f.ct.labels[f.fit_rows]
        ctrl = fit_directions(
            f.X[:, torch.as_tensor(f.fit_rows)],
            _shuffled(yf, seed),
            method,
            f.ct.unit[f.fit_rows],
        )
        Xt = f.X[:, torch.as_tensor(f.test_rows)].double()
        yt = f.ct.labels[f.test_rows]
        ut = f.ct.unit[f.test_rows]
        if len(set(yt.tolist())) < 2:
            raise WorkbenchError(f"{ds.path}: the held-out half holds only one class; use more records")
        for L in range(lm.n_layers):
            v = f.vectors[L].double()
            proj = (Xt[L] @ (v / v.norm().clamp_min(1e-12))).numpy()
            c = ctrl[L].double()
            cproj = (Xt[L] @ (c / c.norm().clamp_min(1e-12))).numpy()
            lo, hi = bootstrap_ci_paired(yt, proj, auroc, n_boot=n_boot, seed=seed)
            row = {
                "layer": L,
                "position": pos,
                "auroc": auroc(yt, proj),
                "ci_low": lo,
                "ci_high": hi,
                "control_auroc": auroc(yt, cproj),
                "n_test": int(len(yt)),
                "n_fit": int(f.fit_rows.sum()),
                "vector_norm": float(v.norm()),
            }
            if _paired(ut, yt):
                order = np.lexsort((-yt, ut))
                row["pair_accuracy"] = float(np.mean(proj[order][0::2] > proj[order][1::2]))
            rows.append(row)
    best = max(rows, key=lambda r: r["auroc"])
    return {
        "subject": lm.name,
        "dataset": ds.summary(),
        "method": method,
        "seed": seed,
        "fit_frac": fit_frac,
        "hook": "blocks.L.hook_resid_post",
        "rows": rows,
        "best": {"layer": best["layer"], "position": best["position"], "auroc": best["auroc"]},
    }


def direction_vectors(
    lm: LM, ds: D.Dataset, method: str = "mean-diff", position: int | str = -1, seed: int = 0, fit_frac: float = 0.5
) -> Tensor:
    """The (n_layers, d_model) directions fitted on the dataset's fit half (what steer/ablate/monitor use)."""
    return Fitted(lm, ds, method, check_position(position), seed, fit_frac).vectors


# ------------------------------------------------------------------------------------------------ behaviour
class Behaviour:
    """How a condition is scored on the held-out records: log-prob difference of the two answers, or a scorer on
    greedy generations. `__call__(spec) -> (N,) scores`; `trait(scores)` -> 0/1 flags (the trait side won)."""

    def __init__(self, lm: LM, ds: D.Dataset, units: np.ndarray, scorer: D.Scorer | None, max_new: int) -> None:
        self.lm, self.ds, self.units, self.scorer, self.max_new = lm, ds, units, scorer, max_new
        if scorer is not None:
            if ds.kind == "patch":
                raise WorkbenchError(f"{ds.path}: patching pairs are for `workbench patch`, not steering")
            self.prompts = [D.prompts(lm, ds)[i] for i in units]
            self.label = f"scorer {scorer.spec} on greedy generations ({max_new} tokens)"
            self.threshold = 0.5
        elif ds.kind == "ab" or (ds.kind == "contrast" and all(ds.records[i].get("question") for i in units)):
            trip = [D.behaviour_pair(lm, ds, int(i)) for i in units]
            self.prompts = [t[0] for t in trip]
            self.pos, self.neg = [t[1] for t in trip], [t[2] for t in trip]
            self.label = "log P(trait answer | prompt) - log P(other answer | prompt)"
            self.threshold = 0.0
        else:
            raise WorkbenchError(
                f"{ds.path}: {D.KIND_NAMES[ds.kind]}"
                + (" without a question" if ds.kind == "contrast" else "")
                + " have no behaviour to measure; give a scorer (--scorer keywords:..., regex:... or module:function) "
                "or use A/B questions / contrast pairs with a question"
            )

    def __call__(self, spec: K.HookSpec = None) -> np.ndarray:
        if self.scorer is not None:
            texts = K.greedy(self.lm, self.prompts, self.max_new, spec)
            self.last_generations = texts
            return np.array([self.scorer(t) for t in texts])
        return K.answer_logprob(self.lm, self.prompts, self.pos, spec) - K.answer_logprob(
            self.lm, self.prompts, self.neg, spec
        )

    def trait(self, scores: np.ndarray) -> np.ndarray:
        return scores > self.threshold


def neutral_for(lm: LM, ds: D.Dataset, neutral: str | Path | None, test_units: np.ndarray) -> tuple[list[str], str]:
    """Neutral texts for capability cost: the given file; else `neutral.jsonl` beside the model; else the held-out
    records' texts (said so in the result)."""
    if neutral is not None:
        return D.neutral_texts(neutral), str(neutral)
    if lm.path is not None:
        for name in ("neutral.jsonl", "neutral.txt"):
            if (Path(lm.path) / name).is_file():
                return D.neutral_texts(Path(lm.path) / name), str(Path(lm.path) / name)
    ct = D.contrast_texts(lm, ds) if ds.kind != "patch" else None
    if ct is None:
        raise WorkbenchError("no neutral text: pass --neutral FILE")
    texts = [t for t, u in zip(ct.texts, ct.unit, strict=True) if u in set(test_units.tolist())]
    return texts, "held-out dataset texts (no --neutral given and no neutral.jsonl beside the model)"


def _condition(
    beh: Behaviour, spec, neutral: list[str], seed: int, base: dict | None = None, log: I.GateLog | None = None
) -> dict:
    gate = {}
    if log is not None:
        log.fired = log.rows = 0
    s = beh(spec)
    if log is not None:
        gate["behaviour_prompts"] = log.rate
        log.fired = log.rows = 0
    cost = K.cost_on_texts(beh.lm, neutral, spec)
    if log is not None:
        gate["neutral"] = log.rate
    out = {
        "_s": s,
        "_ce": cost["ce"],
        "behaviour": _est(s, seed),
        "trait_rate": rate(beh.trait(s)),
        "ce": _est(cost["ce"], seed),
        "kl": _est(cost["kl"], seed),
    }
    if base is not None:
        out["minus_baseline"] = {
            "behaviour": paired_diff_ci(base["_s"], s, seed=seed),
            "trait_rate": paired_diff_ci(beh.trait(base["_s"]).astype(float), beh.trait(s).astype(float), seed=seed),
            "ce": paired_diff_ci(base["_ce"], cost["ce"], seed=seed),
        }
    if getattr(beh, "last_generations", None) is not None:
        out["examples"] = beh.last_generations[:3]
    if gate:
        out["gate_rate"] = gate
    return out


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if not k.startswith("_")}


def _projection_quantiles(X: Tensor, u: Tensor, qs: Sequence[float | None]) -> list[float | None]:
    p = (X.double() @ (u.double() / u.double().norm())).numpy()
    return [None if q is None else float(np.quantile(p, q)) for q in qs]


def steer_study(
    lm: LM,
    ds: D.Dataset,
    layer: int,
    coefs: Sequence[float] = (-1.0, 1.0),
    *,
    mode: str = "add",
    method: str = "mean-diff",
    position: int | str = -1,
    seed: int = 0,
    fit_frac: float = 0.5,
    neutral: str | Path | None = None,
    scorer: D.Scorer | None = None,
    max_new: int = 16,
    condition: D.Dataset | None = None,
    condition_layer: int | None = None,
    threshold: float | None = None,
    below: bool = False,
    cap: tuple[float | None, float | None] = (None, None),
    vectors: Tensor | None = None,
) -> dict:
    """Steer along the dataset's direction at `layer` and measure on the held-out half, with controls and costs.

    mode add: coef x vector after the prompt, one condition per coefficient (a sweep). mode conditional (CAST): the
    same, only where the prompt's mean projection onto the condition dataset's direction at `condition_layer`
    (default: `layer`) is above `threshold` (below it with below=True; default threshold: the midpoint of the two
    classes' mean projections on the condition's fit half). mode cap: clamp the projection onto the direction to the
    quantiles `cap` = (low, high) of the fit-half projections (None: open side); the control caps a random direction
    at the same quantiles of its own projections. Every other control is the same intervention along one equal-norm
    random vector (the same for every coefficient of a sweep, so the controls form a curve of their own).
    """
    if mode not in MODES:
        raise unknown("mode", mode, MODES)
    layer = check_layer(lm, layer)
    position = check_position(position)
    if mode != "cap" and not len(coefs):
        raise WorkbenchError("give at least one coefficient (--coef)")
    f = Fitted(lm, ds, method, position, seed, fit_frac, vectors)
    v = f.vectors[layer]
    beh = Behaviour(lm, ds, f.test_units, scorer, max_new)
    neutral_texts, neutral_src = neutral_for(lm, ds, neutral, f.test_units)
    base = _condition(beh, None, neutral_texts, seed)
    out: dict[str, Any] = {
        "subject": lm.name,
        "dataset": ds.summary(),
        "mode": mode,
        "method": f.method,
        "layer": layer,
        "position": position,
        "seed": seed,
        "n_fit": int(len(f.fit_units)),
        "n_test": int(len(f.test_units)),
        "vector_norm": float(v.norm()),
        "behaviour": beh.label,
        "neutral": {"source": neutral_src, "n": len(neutral_texts)},
        "baseline": _public(base),
        "conditions": [],
    }
    plans: list[tuple[dict, Any, Any, tuple[I.GateLog, I.GateLog] | None]] = []
    if mode == "add":
        r = random_like(v, seed + 1)  # one random direction for the sweep: its controls form a curve too
        for c in coefs:
            plans.append(({"coef": float(c)}, I.add_spec(layer, v, float(c)), I.add_spec(layer, r, float(c)), None))
    elif mode == "conditional":
        cds = condition or ds
        cl = check_layer(lm, layer if condition_layer is None else condition_layer)
        cf = Fitted(lm, cds, "mean-diff", -1, seed, fit_frac) if condition is not None else f
        cvec = cf.vectors[cl]
        if threshold is None:
            u = cvec.double() / cvec.double().norm()
            Xc = cf.X[cl, torch.as_tensor(cf.fit_rows)].double() @ u
            yc = torch.as_tensor(cf.ct.labels[cf.fit_rows])
            threshold = float((Xc[yc == 1].mean() + Xc[yc == 0].mean()) / 2)
        out["condition"] = {
            "dataset": cds.summary(),
            "layer": cl,
            "threshold": float(threshold),
            "fires": "below" if below else "above",
        }
        r = random_like(v, seed + 1)
        for c in coefs:
            logs = I.GateLog(), I.GateLog()
            kw = {"condition": cvec, "condition_layer": cl, "threshold": float(threshold), "above": not below}
            plans.append(
                (
                    {"coef": float(c)},
                    I.conditional_spec(layer, v, float(c), **kw, log=logs[0]),
                    I.conditional_spec(layer, r, float(c), **kw, log=logs[1]),
                    logs,
                )
            )
    else:
        lo_q, hi_q = cap
        for q in (lo_q, hi_q):
            if q is not None and not 0.0 <= q <= 1.0:
                raise WorkbenchError(f"cap quantiles must lie in [0, 1], got {q}")
        Xf = f.X[layer, torch.as_tensor(f.fit_rows)]
        lo, hi = _projection_quantiles(Xf, v, (lo_q, hi_q))
        r = random_like(v, seed + 1)
        rlo, rhi = _projection_quantiles(Xf, r, (lo_q, hi_q))
        plans.append(
            (
                {"cap_quantiles": [lo_q, hi_q], "cap": [lo, hi], "control_cap": [rlo, rhi]},
                I.cap_spec(layer, v, lo, hi),
                I.cap_spec(layer, r, rlo, rhi),
                None,
            )
        )
    for head, spec, ctrl, logs in plans:
        steered = _condition(beh, spec, neutral_texts, seed, base, logs[0] if logs else None)
        control = _condition(beh, ctrl, neutral_texts, seed, base, logs[1] if logs else None)
        row = {**head, "steered": _public(steered), "control": _public(control)}
        if logs is not None:
            row["gate_rate"] = steered["gate_rate"]["behaviour_prompts"]
        out["conditions"].append(row)
    return out


def ablate_study(
    lm: LM,
    ds: D.Dataset,
    layers: Sequence[int] | None = None,
    *,
    method: str = "mean-diff",
    position: int | str = -1,
    seed: int = 0,
    fit_frac: float = 0.5,
    neutral: str | Path | None = None,
    scorer: D.Scorer | None = None,
    max_new: int = 16,
    vectors: Tensor | None = None,
) -> dict:
    """For each layer's direction: ablate it everywhere in the residual stream (x - (x.r) r at every block's input
    and middle and the final output) and measure behaviour and cost on the held-out half, against ablating an
    equal-norm random direction. The layer whose ablation moves behaviour most, at a small KL, is the causal one."""
    position = check_position(position)
    layer_list = list(range(lm.n_layers)) if not layers else [check_layer(lm, x) for x in layers]
    f = Fitted(lm, ds, method, position, seed, fit_frac, vectors)
    beh = Behaviour(lm, ds, f.test_units, scorer, max_new)
    neutral_texts, neutral_src = neutral_for(lm, ds, neutral, f.test_units)
    base = _condition(beh, None, neutral_texts, seed)
    rows = []
    for L in layer_list:
        v = f.vectors[L]
        abl = _condition(beh, I.ablate_spec(lm.n_layers, v), neutral_texts, seed, base)
        ctl = _condition(beh, I.ablate_spec(lm.n_layers, random_like(v, seed + 1 + L)), neutral_texts, seed, base)
        rows.append({"layer": L, "vector_norm": float(v.norm()), "ablated": _public(abl), "control": _public(ctl)})
    return {
        "subject": lm.name,
        "dataset": ds.summary(),
        "mode": "ablate",
        "method": f.method,
        "position": position,
        "seed": seed,
        "n_fit": int(len(f.fit_units)),
        "n_test": int(len(f.test_units)),
        "behaviour": beh.label,
        "neutral": {"source": neutral_src, "n": len(neutral_texts)},
        "baseline": _public(base),
        "conditions": rows,
    }


# ------------------------------------------------------------------------------------------------ monitoring
def monitor_study(
    lm: LM,
    ds: D.Dataset,
    *,
    method: str = "mean-diff",
    position: int | str = -1,
    seed: int = 0,
    fit_frac: float = 0.5,
    scorer: D.Scorer | None = None,
    max_new: int = 16,
    n_boot: int = 1000,
    vectors: Tensor | None = None,
) -> dict:
    """Does the projection onto the direction predict behaviour, item by item, on the held-out half? Per layer:
    Pearson r with a paired-bootstrap CI, AUROC of the projection for the behaviour's trait side, and r for a
    random direction. The projection is read at the prompt's last token (before any answer); labelled prompts
    without a scorer use their labels as the behaviour."""
    position = check_position(position)
    f = Fitted(lm, ds, method, position, seed, fit_frac, vectors)
    units = f.test_units
    if ds.kind == "labelled" and scorer is None:
        texts = [ds.records[i]["text"] for i in units]
        score = ds.labels()[units]
        label, trait = f"label == {ds.positive_label!r}", score > 0.5
    else:
        beh = Behaviour(lm, ds, units, scorer, max_new)
        texts, score = beh.prompts, beh(None)
        label, trait = beh.label, beh.trait(score)
    if any(not t for t in texts):
        raise WorkbenchError(f"{ds.path}: some records have an empty prompt; monitoring reads the prompt's last token")
    X = K.resid_acts(lm, texts, -1).double()
    gen = torch.Generator().manual_seed(int(seed))
    rows = []
    both = 0 < trait.sum() < trait.size
    for L in range(lm.n_layers):
        u = f.vectors[L].double()
        u = u / u.norm().clamp_min(1e-12)
        r = torch.randn(u.shape, generator=gen, dtype=torch.float64)
        proj = (X[L] @ u).numpy()
        rproj = (X[L] @ (r / r.norm())).numpy()
        lo, hi = bootstrap_ci_paired(proj, score, pearson, n_boot=n_boot, seed=seed)
        rows.append(
            {
                "layer": L,
                "r": pearson(proj, score),
                "ci_low": lo,
                "ci_high": hi,
                "auroc": auroc(trait, proj) if both else float("nan"),
                "control_r": pearson(rproj, score),
                "n": int(len(texts)),
            }
        )
    return {
        "subject": lm.name,
        "dataset": ds.summary(),
        "method": f.method,
        "position": position,
        "seed": seed,
        "behaviour": label,
        "trait_rate": rate(trait),
        "rows": rows,
    }
