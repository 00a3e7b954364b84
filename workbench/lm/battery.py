"""How `workbench battery` checks measure language models (`probes/persona.toml`, `probes/deploy-cue.toml`): the LM
kind's `BatteryAdapter`, built on the LM library (`lm.evaluate`, `lm.directions.probe_sweep`, `lm.steering`) so a
battery threshold and `workbench lm ...`'s number are the same measurement.

For an LM, `episodes` counts prompts and `hook` is `blocks.L.hook_resid_post`. A probe check reads one row of
`probe_sweep`: fit on split `train` prompts, test seed = fit seed + 1, `test.split = "ood"` for the corpus's transfer
set (claim_wrong), `position` the prompt position counted back from the last token (-1 = last); these rules are the
adapter's `validate`. An intervention's vector is fit on `fit.episodes` prompts disjoint from the evaluated ones.

Metrics: behaviour -> `GROUP.RATE` per persona group plus `heldout_accuracy` / `heldout_loss` (capability);
probe/logistic -> `auroc`, `control_auroc`, `selectivity`; intervention -> `CONDITION.KEY` of `lm.steering`.
"""

from __future__ import annotations

from typing import Any

from workbench.errors import WorkbenchError
from workbench.lm.corpora import ALL_GROUPS
from workbench.subjects import BatteryAdapter

CONDITIONS = ("baseline", "steered", "control", "effect", "control_effect")
RATES = ("agree_wrong", "true_wrong", "logit_diff_wrong", "true_correct", "true_none")  # evaluate.behaviour_table
STEER = ("agree_wrong", "true_wrong", "logit_diff_wrong", "heldout_accuracy", "heldout_loss")  # lm.steering
METRICS = {
    "probe/logistic": ("auroc", "control_auroc", "selectivity"),
    "behaviour": tuple(f"{g}.{k}" for g in ALL_GROUPS for k in RATES) + ("heldout_accuracy", "heldout_loss"),
    "intervention": tuple(f"{c}.{k}" for c in CONDITIONS for k in STEER),
}


def choices(lm: Any) -> dict[str, tuple[str, ...]]:
    """The hooks (residual stream after each block), and the splits, probe targets and vectors of this LM's corpus."""
    from workbench.lm.corpora import of
    from workbench.lm.directions import probe_targets_of, resid_hooks, vectors_of

    return {
        "hook": tuple(resid_hooks(lm)),
        "split": of(lm).splits,
        "target": probe_targets_of(lm),
        "vector": vectors_of(lm),
        "method": ("logistic",),
    }


def validate(check: Any, lm: Any, where: str) -> None:
    """Probe checks read one `probe_sweep` row: a known position, fit on `train` with test seed fit.seed + 1, and an
    ood test set only for the corpus's transfer targets."""
    if check.kind != "probe":
        return
    from workbench.lm.directions import POSITIONS

    if check.position not in POSITIONS:
        raise WorkbenchError(f"{where}: position must be one of {', '.join(map(str, POSITIONS))}")
    if check.fit.split != "train" or check.test.seed != check.fit.seed + 1:
        raise WorkbenchError(
            f"{where}: LM probes fit on split 'train' and test on seed fit.seed + 1 (probe_sweep), "
            f"got fit.split {check.fit.split!r}, fit.seed {check.fit.seed}, test.seed {check.test.seed}"
        )
    from workbench.lm.corpora import of

    if check.test.split == "ood" and check.target not in (transfer := of(lm).transfer_sets):
        raise WorkbenchError(
            f"{where}: only target(s) {', '.join(map(repr, transfer)) or 'none'} have an ood test set; use "
            "test.split 'train'"
        )


def _layer(check: Any, lm: Any) -> int:
    from workbench.lm.directions import resid_hooks

    return resid_hooks(lm).index(check.hook)


def _rates(table: dict, prefix: str = "") -> dict[str, dict]:
    """`{"rate" | "mean", "ci95", "n"}` dicts (lm.evaluate / lm.steering) -> metrics named prefix + key."""
    from workbench.battery_measure import measurement

    return {
        f"{prefix}{k}": measurement(v["rate"] if "rate" in v else v["mean"], v["ci95"], v["n"])
        for k, v in table.items()
        if isinstance(v, dict) and "ci95" in v
    }


def probe(check: Any, lm: Any) -> dict[str, dict]:
    from workbench.battery_measure import measurement
    from workbench.lm.directions import probe_sweep

    sweep = probe_sweep(lm, check.fit.episodes, check.test.episodes, check.fit.seed, l2=check.l2)
    test = "ood" if check.test.split == "ood" else "heldout"
    row = sweep[
        (sweep.target == check.target)
        & (sweep.test == test)
        & (sweep.layer == _layer(check, lm))
        & (sweep.position == check.position)
    ].iloc[0]
    return {
        "auroc": measurement(row.auroc, (row.ci_low, row.ci_high), int(row.n)),
        "control_auroc": measurement(row.control_auroc, None, int(row.n)),
        "selectivity": measurement(row.auroc - row.control_auroc),
    }


def behaviour(check: Any, lm: Any) -> dict[str, dict]:
    from workbench.lm.evaluate import capability, evaluate_split

    d = check.data
    out: dict[str, dict] = {}
    for group, row in evaluate_split(lm, d.split, d.episodes, d.seed)["personas"].items():
        out |= _rates(row, f"{group}.")
    cap = capability(lm, d.episodes, d.seed)  # no-claim training-distribution questions
    return out | _rates({"heldout_accuracy": cap["accuracy"], "heldout_loss": cap["loss"]})


def intervention(check: Any, lm: Any) -> dict[str, dict]:
    from workbench.battery_measure import measurement
    from workbench.lm.steering import steer_experiment

    d = check.data
    r = steer_experiment(
        lm,
        check.vector,
        _layer(check, lm),
        (check.coef,),
        d.split,
        d.episodes,
        d.seed,
        n_vec=check.fit.episodes,
        cap_n=d.episodes,
    )
    cond = r["conditions"][0]
    out = _rates(r["baseline"], "baseline.") | _rates(cond["steered"], "steered.")
    out |= _rates(cond["control"], "control.")
    for key, prefix in (("steered_minus_baseline", "effect."), ("control_minus_baseline", "control_effect.")):
        out |= {f"{prefix}{k}": measurement(v["diff"], v["ci95"], v["n"]) for k, v in cond[key].items()}
    return out


def adapter() -> BatteryAdapter:
    """The LM kind's battery adapter: behaviour, probe (logistic) and intervention checks."""
    return BatteryAdapter(
        measure={"behaviour": behaviour, "probe": probe, "intervention": intervention},
        metrics=METRICS,
        choices=choices,
        validate=validate,
    )
