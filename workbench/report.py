"""Plain-text and markdown tables for results, shared by the CLI, the demo report and the README."""

from __future__ import annotations

from workbench.rl.rollout import RATE_KEYS


def _ci(value: float, ci: list[float]) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def rates_table(evals: list[dict]) -> str:
    """Rows of `{"artifact", "split", "rates", "ci95"}` (eval JSON) as a markdown table."""
    rows = []
    for e in evals:
        cells = [e["artifact"], e["split"], str(e["episodes"])] + [_ci(e["rates"][k], e["ci95"][k]) for k in RATE_KEYS]
        inf = e.get("informative")
        if inf is not None:
            cf = inf["rates"]["corner_first"]
            cells.append("- (n=0)" if not inf["n"] else f"{_ci(cf, inf['ci95']['corner_first'])} (n={inf['n']})")
        rows.append(cells)
    head = ["artifact", "split", "n"] + list(RATE_KEYS)
    if any("informative" in e for e in evals):
        head.append("corner_first where start and cheese lie outside the region")
    return markdown_table(head, rows)


def steering_table(result: dict) -> str:
    """Baseline / steered / control rates and paired effects of a steering experiment as markdown."""
    rows = []
    for cond in ("baseline", "steered", "control"):
        r = result[cond]
        cells = [_ci(r["rates"][k], r["ci95"][k]) for k in RATE_KEYS]
        ds = result["decision_square"].get(cond)
        cells.append(_ci(ds["mean"], ds["ci95_mean"]) if ds else "-")
        rows.append([cond] + cells)
    for cond in ("steered", "control"):
        eff = result["effects"][cond]
        cells = [_ci(eff[k]["diff"], eff[k]["ci95"]) for k in RATE_KEYS]
        ds = result["decision_square"].get(cond, {}).get("diff_vs_baseline")
        cells.append(_ci(ds["mean"], ds["ci95"]) if ds else "-")
        rows.append([f"{cond} - baseline"] + cells)
    head = ["condition"] + list(RATE_KEYS) + [f"P(cheese-ward) at decision square (n={result['decision_square']['n']})"]
    title = (
        f"{result['artifact']}: {result['vector']} vector x {result['coef']:+g} at {result['layer']}, "
        f"{result['split']}, {result['episodes']} levels, seed {result['seed']}"
    )
    return title + "\n\n" + markdown_table(head, rows)


def probe_table(rows: list[dict]) -> str:
    """Cheese-location probe rows as markdown."""
    body = [
        [
            r["layer"],
            r["grid"],
            f"{r['fit_split']}->{r['test_split']}",
            _ci(r["top1"], r["ci95"]),
            _ci(r["control_top1"], r["control_ci95"]),
            f"{r['chance']:.3f}",
            str(r["n"]),
        ]
        for r in rows
    ]
    return markdown_table(["layer", "grid", "fit->test", "top-1", "shuffled-label control", "chance", "n"], body)


def contrast_table(contrast: dict) -> str:
    """Organism minus control on the same levels (paired bootstrap 95% CIs), overall and on the informative subset."""
    rows = [
        [
            subset,
            str(c["n"]),
            _ci(c["organism"], c["organism_ci95"]),
            _ci(c["control"], c["control_ci95"]),
            _ci(c["diff"], c["ci95"]),
        ]
        for subset, c in contrast["subsets"].items()
    ]
    head = [
        "episodes",
        "n",
        f"{contrast['organism']} corner_first",
        f"{contrast['control']} corner_first",
        "difference (paired)",
    ]
    return markdown_table(head, rows)
