"""Results-store rows from what the measuring commands print: one row per measurement.

Why here: `eval`, `steer`, `probe`, `collect`, `sae eval` and `patch` return typed results whose `to_json()` is what
`--json` prints; issue 13 asks that every measuring verb also records its measurements in the results store
(`workbench.store`), so `workbench results` and SQL see them beside the batteries' and the LM commands' rows. A row is
run id, subject, split, seed, intervention, metric, value, ci_low, ci_high, n (and `extra`, a JSON document); the
store adds the git sha and the time. Names follow the demo's: `rate.<goal>`, `effect.<goal>`, `probe....`.

Results of a shape these functions do not know (a user's own subject kind) still get rows: `flat_rows` turns every
number in the JSON into one, pairing an estimate with its `ci95` where the two sit in one object.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["collect_rows", "eval_rows", "flat_rows", "patch_rows", "probe_rows", "steer_rows"]

_SPLITS = ("train", "ood", "heldout", "test")
_ESTIMATE_KEYS = ("value", "mean", "rate", "diff", "top1", "r", "auroc")


def _row(
    run_id: str,
    *,
    subject: str,
    split: str | None,
    seed: int | None,
    intervention: str,
    metric: str,
    value: Any,
    ci: Any = None,
    n: Any = None,
    extra: dict | None = None,
) -> dict:
    lo, hi = (ci[0], ci[1]) if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
    return {
        "run_id": run_id,
        "subject": str(subject),
        "split": split,
        "seed": seed,
        "intervention": intervention,
        "metric": metric,
        "value": _number(value),
        "ci_low": _number(lo),
        "ci_high": _number(hi),
        "n": int(n) if isinstance(n, numbers.Integral) and not isinstance(n, bool) else None,
        "extra": extra or {},
    }


def _number(v: Any) -> float | None:
    if v is None or isinstance(v, bool) or not isinstance(v, numbers.Real):
        return None
    return float(v)


def _rates(run_id: str, block: Mapping, *, prefix: str, n: Any, **head: Any) -> list[dict]:
    """Rows of a `{"rates": {k: v}, "ci95": {k: [lo, hi]}}` block (plus `died` and `informative` when present)."""
    rows = [
        _row(run_id, metric=f"{prefix}rate.{k}", value=v, ci=block.get("ci95", {}).get(k), n=n, **head)
        for k, v in block.get("rates", {}).items()
    ]
    died = block.get("died")
    if isinstance(died, Mapping) and "rate" in died:
        rows.append(_row(run_id, metric=f"{prefix}rate.died", value=died["rate"], ci=died.get("ci95"), n=n, **head))
    info = block.get("informative")
    if isinstance(info, Mapping) and info.get("n"):
        rows += _rates(
            run_id, {"rates": info["rates"], "ci95": info["ci95"]}, prefix="informative.", n=info["n"], **head
        )
    return rows


def eval_rows(data: Mapping, run_id: str) -> list[dict]:
    """`workbench eval`: each goal rate with its Wilson interval (and on the informative levels)."""
    head = {"subject": data["artifact"], "split": data.get("split"), "seed": data.get("seed"), "intervention": "none"}
    if "rates" not in data:
        return flat_rows(data, run_id, **head)
    return _rates(run_id, data, prefix="", n=data.get("episodes"), **head)


def steer_rows(data: Mapping, run_id: str) -> list[dict]:
    """`workbench steer`: rates per condition (baseline, steered, control), paired effects against the baseline,
    and the decision-square probability where the subject has one."""
    if not all(c in data for c in ("baseline", "steered", "control")):
        return flat_rows(
            data, run_id, subject=data.get("artifact", "?"), split=data.get("split"), seed=data.get("seed")
        )
    where = f"x{data.get('coef', 0):+g} @ {data.get('layer')}"
    labels = {
        "baseline": "none",
        "steered": f"{data.get('vector')} {where}",
        "control": f"random equal-norm {where}",
    }
    extra = {k: data[k] for k in ("vector", "coef", "layer", "probe") if k in data}
    head = {"subject": data["artifact"], "split": data.get("split"), "seed": data.get("seed"), "extra": extra}
    rows: list[dict] = []
    for cond, label in labels.items():
        rows += _rates(run_id, data[cond], prefix="", n=data[cond].get("n"), intervention=label, **head)
    for cond in ("steered", "control"):
        for goal, eff in data.get("effects", {}).get(cond, {}).items():
            rows.append(
                _row(
                    run_id,
                    intervention=labels[cond],
                    metric=f"effect.{goal}",
                    value=eff.get("diff"),
                    ci=eff.get("ci95"),
                    n=data[cond].get("n"),
                    **head,
                )
            )
    ds = data.get("decision_square")
    if isinstance(ds, Mapping):
        for cond, label in labels.items():
            block = ds.get(cond)
            if not isinstance(block, Mapping):
                continue
            rows.append(
                _row(
                    run_id,
                    intervention=label,
                    metric="decision_square.p_goal",
                    value=block.get("mean"),
                    ci=block.get("ci95_mean"),
                    n=ds.get("n"),
                    **head,
                )
            )
            diff = block.get("diff_vs_baseline")
            if isinstance(diff, Mapping):
                rows.append(
                    _row(
                        run_id,
                        intervention=label,
                        metric="decision_square.effect",
                        value=diff.get("mean"),
                        ci=diff.get("ci95"),
                        n=ds.get("n"),
                        **head,
                    )
                )
    return rows


def probe_rows(data: Mapping, run_id: str, *, seed: int) -> list[dict]:
    """`workbench probe`: one row per layer x target x test split, with the control in `extra`."""
    rows = []
    for r in data.get("rows", []):
        layer = r.get("layer")
        if "top1" in r:  # maze: cheese-location spatial probes
            metric, value = f"probe.cheese_top1.{layer}", r["top1"]
        elif "metric" in r and "value" in r:  # CoinRun: coin / exit probes
            metric, value = f"probe.{r.get('target')}.{r['metric']}.{layer}", r["value"]
        else:
            rows += flat_rows(r, run_id, subject=data["artifact"], split=r.get("test_split"), seed=seed)
            continue
        skip = {"layer", "top1", "value", "metric", "ci95", "n", "test_split"}
        rows.append(
            _row(
                run_id,
                subject=data["artifact"],
                split=r.get("test_split", "ood"),
                seed=seed,
                intervention="none",
                metric=metric,
                value=value,
                ci=r.get("ci95"),
                n=r.get("n"),
                extra={k: v for k, v in r.items() if k not in skip},
            )
        )
    return rows


def collect_rows(data: Mapping, run_id: str, *, split: str, seed: int, episodes: int, states: str) -> list[dict]:
    """`workbench collect`: the rows collected (one per level or step) with the hooks and labels in `extra`."""
    extra = {k: data.get(k) for k in ("hooks", "labels", "out")}
    extra["states"] = states
    return [
        _row(
            run_id,
            subject=data["artifact"],
            split=split,
            seed=seed,
            intervention="none",
            metric="collect.rows",
            value=data.get("rows"),
            n=episodes,
            extra=extra,
        )
    ]


def patch_rows(frame: Any, run_id: str, *, subject: str, seed: int, means: Mapping[str, float]) -> list[dict]:
    """`workbench patch`: one row per patched (activation, layer, position/head) with its bootstrap interval, plus
    the clean and corrupt baselines of each mode (`means`: `"<mode>/clean"` -> mean metric)."""
    rows = [
        _row(
            run_id,
            subject=subject,
            split=None,
            seed=seed,
            intervention="none",
            metric=f"patch.logit_diff.{key}",
            value=value,
        )
        for key, value in means.items()
    ]
    index = [c for c in ("layer", "pos", "head") if c in frame.columns]
    for rec in frame.to_dict("records"):
        where = " ".join(f"{c}{int(rec[c])}" for c in index if rec.get(c) == rec.get(c))
        rows.append(
            _row(
                run_id,
                subject=subject,
                split=None,
                seed=seed,
                intervention=f"{rec['mode']} patch {rec['activation']} {where}".strip(),
                metric="patch.effect",
                value=rec["effect"],
                ci=[rec.get("ci_low"), rec.get("ci_high")],
                n=int(rec["n"]),
                extra={k: rec[k] for k in ("activation", "mode", *index, "token") if k in rec},
            )
        )
    return rows


def flat_rows(
    data: Any,
    run_id: str,
    *,
    subject: str,
    split: str | None = None,
    seed: int | None = None,
    intervention: str = "none",
    prefix: str = "",
    n: int | None = None,
    extra: dict | None = None,
) -> list[dict]:
    """One row per number in a JSON-like result: an object holding an estimate (`value`, `mean`, `rate`, `diff`,
    ...) and its `ci95` is one row with the interval; a key named like a split (`train`, `ood`) sets the row's
    split below it; `n` (or `episodes`, `prompts`) nearest above a number is its sample size."""
    rows: list[dict] = []

    def walk(node: Any, path: list[str], split_: str | None, n_: int | None) -> None:
        if isinstance(node, Mapping):
            here_n = node.get("n", node.get("episodes", node.get("prompts", n_)))
            here_n = here_n if isinstance(here_n, numbers.Integral) and not isinstance(here_n, bool) else n_
            est = next((k for k in _ESTIMATE_KEYS if _finite_or_nan(node.get(k))), None)
            if est is not None and isinstance(node.get("ci95"), list | tuple):
                rows.append(
                    _row(
                        run_id,
                        subject=subject,
                        split=split_,
                        seed=seed,
                        intervention=intervention,
                        metric=prefix + ".".join(path or [est]),
                        value=node[est],
                        ci=node["ci95"],
                        n=here_n,
                        extra=extra,
                    )
                )
                return
            for key, value in node.items():
                if key in ("n", "seed", "episodes", "prompts", "null_reasons"):
                    continue
                walk(value, [*path, str(key)], str(key) if str(key) in _SPLITS else split_, here_n)
        elif _finite_or_nan(node):
            rows.append(
                _row(
                    run_id,
                    subject=subject,
                    split=split_,
                    seed=seed,
                    intervention=intervention,
                    metric=prefix + ".".join(path or ["value"]),
                    value=node,
                    n=n_,
                    extra=extra,
                )
            )

    walk(data, [], split, n)
    return rows


def _finite_or_nan(v: Any) -> bool:
    """A plain number (bools, strings and lists are not measurements)."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and (math.isfinite(v) or math.isnan(v))
