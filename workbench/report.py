"""Plain-text and markdown tables for results, shared by the CLI, the demo report and the README; and the demo's
audit report as data (`Audit` -> `Section` -> `Table` / `Figure`) with its markdown rendering."""

from __future__ import annotations

from dataclasses import dataclass, field

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


# ------------------------------------------------------------------------------------------- the demo's audit report
# `workbench demo` measures every shipped organism with the same sections; these types hold what it measured in a
# form both renderers (this module's markdown, `workbench.report_html`'s self-contained HTML) read, so the two
# reports cannot disagree. Every cell string is formatted from a number that also went to the results store.

SECTIONS = {
    "misgeneralization": "Does it misgeneralize?",
    "location": "Where does the goal live?",
    "steering": "Does steering along the goal direction change OOD goal pursuit?",
    "sae": "What does an SAE latent add?",
    "patching": "Patching map",
}
"""Section key -> heading, in report order (patching: language models only)."""


def est(value: float, ci=None, n: int | None = None, signed: bool = False, digits: int = 3) -> str:
    """`0.655 [0.625, 0.684] (n=1000)`: a number with its 95% interval and sample size (either may be absent)."""
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    if value is None or value != value:
        text = "-"
    else:
        text = f.format(value)
    if ci is not None and all(c is not None and c == c for c in ci):
        text += f" [{f.format(ci[0])}, {f.format(ci[1])}]"
    if n is not None:
        text += f" (n={n})"
    return text


@dataclass
class Table:
    """A titled table of preformatted cells (markdown and HTML render the same cells)."""

    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        parts = (
            [f"**{self.title}**", "", markdown_table(self.header, self.rows)]
            if self.title
            else [markdown_table(self.header, self.rows)]
        )
        if self.note:
            parts += ["", self.note]
        return "\n".join(parts)


@dataclass
class Figure:
    """A PNG figure: written beside the markdown report as `name` and embedded (base64) in the HTML report."""

    name: str
    png: bytes
    caption: str
    kind: str = (
        ""  # what it shows (vector_field, probe_by_layer, steering_effects, patching_heatmap, coinrun_level, ...)
    )


@dataclass
class Section:
    """One of SECTIONS for one organism: a one-line finding, tables, figures and notes."""

    key: str
    finding: str
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return SECTIONS.get(self.key, self.key)


@dataclass
class Audit:
    """The goal audit of one organism (and its twin or within-model control)."""

    organism: str
    kind: str
    title: str
    about: str
    control: str
    sections: list[Section] = field(default_factory=list)
    summary: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    skipped: str = ""  # why the organism was not audited (missing artifact); empty when it was

    def section(self, key: str) -> Section | None:
        return next((s for s in self.sections if s.key == key), None)


SUMMARY_COLUMNS = {
    "misgeneralization": "misgeneralization (OOD, vs control)",
    "location": "goal readable (best layer vs shuffled)",
    "steering": "steering effect vs equal-norm control",
    "cost": "capability cost",
    "sae": "best SAE latent vs probe",
    "patching": "patching (top sites)",
}


def summary_rows(audits: list[Audit]) -> tuple[list[str], list[list[str]]]:
    """The one-row-per-organism summary (terminal, markdown and HTML share it)."""
    head = ["organism", *SUMMARY_COLUMNS.values()]
    rows = []
    for a in audits:
        if a.skipped:
            rows.append([a.organism, f"skipped: {a.skipped}"] + [""] * (len(SUMMARY_COLUMNS) - 1))
            continue
        rows.append([a.organism] + [a.summary.get(k, "-") for k in SUMMARY_COLUMNS])
    return head, rows


SUMMARY_SHORT = {
    "misgeneralization": "misgeneralizes? (OOD vs control)",
    "location": "goal readable (vs shuffled labels)",
    "steering": "steering vs equal-norm control",
    "cost": "capability cost",
    "sae": "best SAE latent vs probe",
    "patching": "patching (top sites)",
}


def summary_long(audits: list[Audit]) -> list[tuple[str, str, str]]:
    """The summary as (organism, check, result) rows: narrow enough for a terminal."""
    rows = []
    for a in audits:
        if a.skipped:
            rows.append((a.organism, "skipped", a.skipped))
            continue
        for key, label in SUMMARY_SHORT.items():
            if key in a.summary:
                rows.append((a.organism, label, a.summary[key]))
    return rows


def demo_markdown(title: str, meta: list[str], audits: list[Audit], next_steps: list[str]) -> str:
    """The demo's markdown report: summary table, then every organism's sections with tables and figure links."""
    head, rows = summary_rows(audits)
    out = [f"# {title}", "", *meta, "", "## Summary", "", markdown_table(head, rows), ""]
    for a in audits:
        out += [f"## {a.organism}: {a.title}", ""]
        if a.skipped:
            out += [f"Skipped: {a.skipped}", ""]
            continue
        out += [a.about, "", f"Control: {a.control}.", "", f"Audited in {a.seconds:.0f} s.", ""]
        for s in a.sections:
            out += [f"### {s.title}", "", f"*{s.finding}*", ""]
            for t in s.tables:
                out += [t.markdown(), ""]
            for f in s.figures:
                out += [f"![{f.caption}]({f.name})", "", f"{f.caption}", ""]
            for note in s.notes:
                out += [note, ""]
    out += ["## Next", "", *[f"- `{c}`" for c in next_steps], ""]
    return "\n".join(out)
