"""The demo's figures and its self-contained HTML report.

Why one file that opens anywhere: the report is what a newcomer sees first and what gets attached to a message or
opened on a machine without the workbench, so every figure is a PNG embedded as a base64 data URI, the style sheet is
inline and nothing is fetched (a browser test checks both). Figures are drawn here from plain numbers (value and
95% interval per point), so the demo measures and this module only draws; the same `Audit` objects render to
markdown in `workbench.report`.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence

import numpy as np

from workbench.report import SUMMARY_COLUMNS, Audit, Figure, Section, Table, summary_rows

Point = tuple[float, float, float]
"""(value, ci_low, ci_high) of one plotted estimate."""

STEERED, CONTROL, TWIN, ORGANISM = "#c0392b", "#7f8c8d", "#2980b9", "#c0392b"


# ------------------------------------------------------------------------------------------------------ figures
def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")  # headless, and the same pixels everywhere
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig, dpi: int = 90) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    plt = _plt()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plain(text: str) -> str:
    """Figure text without the markdown backticks the tables use."""
    return text.replace("`", "")


def _yerr(points: Sequence[Point]) -> np.ndarray:
    v = np.array([p[0] for p in points], float)
    lo = np.array([p[1] for p in points], float)
    hi = np.array([p[2] for p in points], float)
    return np.stack([np.clip(v - lo, 0, None), np.clip(hi - v, 0, None)])


def bars_figure(
    title: str, categories: Sequence[str], series: dict[str, Sequence[Point]], ylabel: str, ylim=(0.0, 1.0)
) -> bytes:
    """Grouped bars with 95% interval whiskers: one group per category, one bar per series."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(categories) * max(1, len(series)) / 2, 3.2))
    width = 0.8 / max(1, len(series))
    x = np.arange(len(categories))
    colors = [ORGANISM, TWIN, "#27ae60", "#8e44ad", "#f39c12", "#16a085"]
    for i, (name, points) in enumerate(series.items()):
        v = [p[0] for p in points]
        ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            v,
            width,
            yerr=_yerr(points),
            capsize=3,
            label=name,
            color=colors[i % len(colors)],
            alpha=0.85,
        )
    ax.set_xticks(x, categories, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=9)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return png_bytes(fig)


def layers_figure(
    title: str,
    layers: Sequence[str],
    series: dict[str, Sequence[Point]],
    controls: dict[str, Sequence[float]] | None = None,
    chance: Sequence[float] | float | None = None,
    ylabel: str = "held-out AUROC",
    ylim=(0.0, 1.02),
) -> bytes:
    """Probe quality by layer: one line with 95% interval whiskers per series, dashed shuffled-label controls, and
    a dotted chance level."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(3.6, 1.0 + 0.8 * len(layers)), 3.3))
    x = np.arange(len(layers))
    colors = ["#c0392b", "#2980b9", "#27ae60", "#8e44ad"]
    for i, (name, points) in enumerate(series.items()):
        color = colors[i % len(colors)]
        ax.errorbar(x, [p[0] for p in points], yerr=_yerr(points), marker="o", capsize=3, color=color, label=name)
        if controls and name in controls:
            ax.plot(
                x,
                controls[name],
                linestyle="--",
                marker="x",
                color=color,
                alpha=0.6,
                label=f"{name}: shuffled-label control",
            )
    if chance is not None:
        ch = [chance] * len(layers) if isinstance(chance, (int, float)) else list(chance)
        ax.plot(x, ch, linestyle=":", color="black", alpha=0.6, label="chance")
    ax.set_xticks(x, layers, fontsize=8, rotation=20 if max(len(s) for s in layers) > 8 else 0)
    ax.set_ylabel(ylabel, fontsize=9)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(_plain(title), fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return png_bytes(fig)


def effects_figure(title: str, rows: Sequence[tuple[str, Point, bool]], xlabel: str) -> bytes:
    """Forest plot of paired effects: one row per (label, (value, lo, hi), is_control), a line at zero. Steered
    rows red, equal-norm controls grey, so an effect is read against its control on the same axis."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.5 + 0.42 * len(rows)))
    y = np.arange(len(rows))[::-1]
    for yi, (_, p, ctrl) in zip(y, rows, strict=True):
        color = CONTROL if ctrl else STEERED
        ax.errorbar([p[0]], [yi], xerr=_yerr([p]), fmt="s" if ctrl else "o", color=color, capsize=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, [r[0] for r in rows], fontsize=8)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(_plain(title), fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return png_bytes(fig)


def heatmap_figure(
    title: str, panels: Sequence[tuple[str, np.ndarray, Sequence[str], Sequence[str]]], label: str
) -> bytes:
    """Patching heatmaps side by side: each panel (title, grid (rows, cols), row labels, column labels), on one
    diverging scale around 0 (1 = the clean run's behaviour restored)."""
    plt = _plt()
    widest = max(g.shape[1] for _, g, _, _ in panels)
    fig, axes = plt.subplots(
        len(panels),
        1,
        figsize=(max(5.0, 0.34 * widest + 1.8), 0.3 + 0.45 * sum(g.shape[0] + 2 for _, g, _, _ in panels)),
        squeeze=False,
    )
    vmax = max(1.0, max(float(np.nanmax(np.abs(g))) for _, g, _, _ in panels))
    for ax, (name, grid, rows, cols) in zip(axes[:, 0], panels, strict=True):
        im = ax.imshow(grid, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xticks(range(len(cols)), cols, fontsize=7, rotation=60, ha="right")
        ax.set_title(_plain(name), fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.025, pad=0.01, label=label)
    fig.suptitle(_plain(title), fontsize=10)
    fig.tight_layout()
    return png_bytes(fig)


def coinrun_figure(panels: Sequence[tuple[str, np.ndarray, np.ndarray | None]], cell_px: int) -> bytes:
    """CoinRun levels (RGB renders) stacked, each with the agent's path drawn over it (None: no path)."""
    plt = _plt()
    h, w = panels[0][1].shape[:2]
    inch = min(8.5, w / 50) / w  # inches per pixel: at most 8.5 inches wide
    fig, axes = plt.subplots(len(panels), 1, figsize=(w * inch + 0.2, len(panels) * (h * inch + 0.4)), squeeze=False)
    for ax, (name, img, path) in zip(axes[:, 0], panels, strict=True):
        ax.imshow(img)
        if path is not None and len(path):
            ax.plot((path[:, 1] + 0.5) * cell_px, (path[:, 0] + 0.5) * cell_px, color="white", linewidth=2.2)
            ax.plot((path[:, 1] + 0.5) * cell_px, (path[:, 0] + 0.5) * cell_px, color="#8e44ad", linewidth=1.2)
        ax.set_title(_plain(name), fontsize=9, loc="left")
        ax.set_axis_off()
    fig.tight_layout()
    return png_bytes(fig)


def figure_png(fig) -> bytes:
    """PNG bytes of a figure drawn elsewhere (e.g. `workbench.rl.vector_field.draw`)."""
    return png_bytes(fig, dpi=80)


# ------------------------------------------------------------------------------------------------------ the page
STYLE = """
body { font-family: -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif; margin: 0; color: #222;
       background: #fafafa; line-height: 1.45; }
header { background: #1f2d3d; color: #fff; padding: 18px 32px; }
header h1 { margin: 0 0 6px 0; font-size: 24px; }
header p { margin: 2px 0; font-size: 13px; color: #cfd8e3; }
header code { background: #33465b; color: #fff; }
main { padding: 12px 32px 40px 32px; max-width: 1400px; }
h2 { border-bottom: 2px solid #1f2d3d; padding-bottom: 4px; margin-top: 34px; }
h3 { margin: 22px 0 4px 0; color: #1f2d3d; }
.organism { background: #fff; border: 1px solid #dde3ea; border-radius: 6px; padding: 4px 20px 16px 20px;
            margin: 22px 0; }
.finding { font-style: italic; margin: 2px 0 8px 0; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0 4px 0; }
th, td { border: 1px solid #d5dbe2; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
td:first-child { white-space: nowrap; }
.tabletitle { font-weight: 600; font-size: 13px; margin-top: 10px; }
.note { font-size: 12px; color: #555; margin: 3px 0 8px 0; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; border: 1px solid #e3e7ec; background: #fff; }
figcaption { font-size: 12px; color: #444; max-width: 640px; }
nav a { margin-right: 14px; font-size: 13px; }
code, pre { background: #eef2f6; border-radius: 3px; font-size: 12.5px; }
code { padding: 1px 4px; }
pre { padding: 10px 14px; overflow-x: auto; }
.skipped { color: #a15c00; }
"""


def _inline(text: str) -> str:
    """Escape text, then render `code` and **bold** spans (the only markup the cells use)."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _table(t: Table) -> str:
    parts = [f'<div class="tabletitle">{_inline(t.title)}</div>'] if t.title else []
    parts.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in t.header) + "</tr></thead><tbody>")
    for row in t.rows:
        parts.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
    parts.append("</tbody></table>")
    if t.note:
        parts.append(f'<p class="note">{_inline(t.note)}</p>')
    return "\n".join(parts)


def _figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (
        f'<figure data-kind="{html.escape(f.kind)}"><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(f.caption)}" data-name="{html.escape(f.name)}"><figcaption>{_inline(f.caption)}'
        "</figcaption></figure>"
    )


def _section(s: Section) -> str:
    parts = [
        f'<div class="section" data-section="{s.key}"><h3>{_inline(s.title)}</h3>',
        f'<p class="finding">{_inline(s.finding)}</p>',
    ]
    parts += [_table(t) for t in s.tables]
    parts += [_figure(f) for f in s.figures]
    parts += [f'<p class="note">{_inline(n)}</p>' for n in s.notes]
    parts.append("</div>")
    return "\n".join(parts)


def _anchor(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())


def demo_html(title: str, meta: Sequence[str], audits: Sequence[Audit], next_steps: Sequence[str]) -> str:
    """The whole report as one HTML document (no external resources)."""
    head, rows = summary_rows(list(audits))
    summary = Table(
        "",
        head,
        rows,
        note="Each cell: estimate [95% interval] (n = units measured). "
        "Columns: " + "; ".join(SUMMARY_COLUMNS.values()) + ".",
    )
    body = [
        f"<header><h1>{_inline(title)}</h1>" + "".join(f"<p>{_inline(m)}</p>" for m in meta) + "</header>",
        "<main>",
        "<nav>" + "".join(f'<a href="#{_anchor(a.organism)}">{html.escape(a.organism)}</a>' for a in audits) + "</nav>",
        '<h2 id="summary">Summary</h2>',
        _table(summary),
    ]
    for a in audits:
        body.append(f'<section class="organism" id="{_anchor(a.organism)}" data-organism="{html.escape(a.organism)}">')
        body.append(f"<h2>{html.escape(a.organism)}: {_inline(a.title)}</h2>")
        if a.skipped:
            body.append(f'<p class="skipped">Skipped: {_inline(a.skipped)}</p></section>')
            continue
        body.append(
            f"<p>{_inline(a.about)}</p><p><b>Control:</b> {_inline(a.control)}. "
            f'<span class="note">Audited in {a.seconds:.0f} s.</span></p>'
        )
        body += [_section(s) for s in a.sections]
        body.append("</section>")
    body.append('<h2 id="next">Next</h2><pre>' + html.escape("\n".join(next_steps)) + "</pre>")
    body.append("</main>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
