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
    rows = [
        [e["artifact"], e["split"], str(e["episodes"])] + [_ci(e["rates"][k], e["ci95"][k]) for k in RATE_KEYS]
        for e in evals
    ]
    return markdown_table(["artifact", "split", "n"] + list(RATE_KEYS), rows)


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
