"""`workbench demo`: the goal audit of every shipped organism, its numbers against the organisms' cards, and its HTML
report opened in a real browser.

One demo run (QUICK sizes, seed 0, the default `make demo` path: the maze audited in a second process) serves every
test here, so the numbers the README quotes from `make demo` are the numbers checked:
- every goal rate the demo measured lies within reach of its card: the demo's Wilson 95% interval overlaps the
  card's 1000-episode (or 200-prompt) interval, for the maze and CoinRun organisms and their twins, persona-lm's
  personas and register-lm's cues; the SAE quick measure finds the card's goal latent;
- every number went to the results store, one row per measurement, with its n;
- `report.html` is self-contained (figures as data URIs, nothing fetched) and, opened in headless Chromium, shows
  every figure kind and every organism's sections.

With `WORKBENCH_SCREENSHOTS=DIR` the browser test also writes the report's screenshot to DIR (the README's
docs/screenshots/08_demo_report.png comes from this):

    WORKBENCH_SCREENSHOTS=docs/screenshots .venv/bin/python -m pytest -q tests/test_demo.py
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from workbench import artifacts
from workbench.demo import (
    COINRUN,
    COINRUN_TWIN,
    MAZE,
    MAZE_TWIN,
    ORGANISMS,
    PERSONA,
    QUICK,
    REGISTER,
    DemoSizes,
    _audit_from_json,
    _audit_json,
    sizes_for,
)
from workbench.errors import WorkbenchError
from workbench.report import Audit, Figure, Section, Table, est
from workbench.report_html import demo_html

SCREENSHOTS_ENV = "WORKBENCH_SCREENSHOTS"
SHOT = "08_demo_report.png"
SECTIONS_RL = ["misgeneralization", "location", "steering", "sae"]
SECTIONS_LM = [*SECTIONS_RL, "patching"]
FIGURE_KINDS = {
    "vector_field": 1,
    "probe_by_layer": 4,
    "steering_effects": 4,
    "patching_heatmap": 2,
    "coinrun_level": 1,
    "rates": 4,
}


def _shipped(name: str) -> bool:
    return name in artifacts.available("agents") or name in artifacts.available("lms")


needs_all = pytest.mark.skipif(
    not all(_shipped(n) for n in (MAZE, MAZE_TWIN, COINRUN, COINRUN_TWIN, PERSONA)),
    reason="the shipped organisms are not in this checkout",
)


# ------------------------------------------------------------------------------------------ fast, no demo run
def test_sizes_validate_and_the_first_demo_knobs_map() -> None:
    with pytest.raises(WorkbenchError, match="maze_episodes must be a positive integer"):
        DemoSizes(maze_episodes=0)
    s = sizes_for(episodes=24, n_fit=60, n_test=20)
    assert (s.maze_episodes, s.coinrun_episodes, s.coinrun_steer_episodes) == (24, 24, 24)
    assert (s.maze_probe_fit, s.maze_probe_test) == (60, 20)
    assert sizes_for(full=True).maze_episodes == 1000 and sizes_for().maze_episodes == QUICK.maze_episodes


def _audit() -> Audit:
    png = _tiny_png()
    return Audit(
        "organism-<x>",
        "maze",
        "a `title`",
        "about <b>not html</b>",
        "twin",
        [
            Section(
                "location", "found `it`", [Table("t", ["a", "b"], [["1 & 2", "`x`"]])], [Figure("f.png", png, "c", "k")]
            )
        ],
        {"location": est(0.5, (0.4, 0.6), 10)},
        seconds=1.0,
    )


def _tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 20, 20)).save(buf, format="PNG")
    return buf.getvalue()


def test_html_escapes_text_and_embeds_figures() -> None:
    page = demo_html("T", ["meta"], [_audit()], ["workbench app"])
    assert "<b>not html</b>" not in page and "&lt;b&gt;not html&lt;/b&gt;" in page
    assert "1 &amp; 2" in page and "<code>x</code>" in page
    assert 'src="data:image/png;base64,' in page and 'data-kind="k"' in page
    assert "0.500 [0.400, 0.600] (n=10)" in page
    assert not re.search(r"""(src|href)=["']https?:""", page)


def test_audit_round_trips_through_json_for_the_second_process() -> None:
    a = _audit()
    b = _audit_from_json(json.loads(json.dumps(_audit_json(a))))
    assert b == a


# --------------------------------------------------------------------------------------------- the demo run
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One QUICK demo (seed 0) into a temporary folder and store; its results.json, folder and timing."""
    from workbench.demo import run_demo

    if not all(_shipped(n) for n in (MAZE, MAZE_TWIN, COINRUN, COINRUN_TWIN, PERSONA)):
        pytest.skip("the shipped organisms are not in this checkout")
    tmp = tmp_path_factory.mktemp("demo")
    t0 = time.time()
    folder = run_demo(tmp / "run", seed=0, store_path=tmp / "results.duckdb", quiet=True)
    results = json.loads((folder / "results.json").read_text())
    return {"folder": folder, "store": tmp / "results.duckdb", "results": results, "seconds": time.time() - t0}


def _rows(demo: dict, subject: str, metric: str, section: str = "misgeneralization", **extra) -> list[dict]:
    return [
        r
        for r in demo["results"]["rows"]
        if r["subject"] == subject
        and r["metric"] == metric
        and r["extra"].get("section") == section
        and all(r["extra"].get(k) == v for k, v in extra.items())
    ]


def _overlap(row: dict, card_ci: list[float], what: str) -> None:
    assert row["n"] and row["n"] > 0, what
    lo, hi = row["ci_low"], row["ci_high"]
    assert lo <= row["value"] <= hi, what
    assert lo <= card_ci[1] and card_ci[0] <= hi, (
        f"{what}: demo {row['value']:.3f} [{lo:.3f}, {hi:.3f}] (n={row['n']}) does not overlap the card's "
        f"[{card_ci[0]:.3f}, {card_ci[1]:.3f}]"
    )


@needs_all
def test_every_organism_has_every_section(demo: dict) -> None:
    organisms = demo["results"]["organisms"]
    expected = {MAZE: SECTIONS_RL, COINRUN: SECTIONS_RL, PERSONA: SECTIONS_LM, REGISTER: SECTIONS_LM}
    for name in ORGANISMS:
        if name == REGISTER and not _shipped(REGISTER):
            assert organisms[name]["skipped"]
            continue
        assert not organisms[name]["skipped"], organisms[name]["skipped"]
        assert [s["key"] for s in organisms[name]["sections"]] == expected[name], name
        assert {"misgeneralization", "location", "steering", "cost"} <= set(organisms[name]["summary"]), name


@needs_all
@pytest.mark.parametrize("name", [MAZE, MAZE_TWIN, COINRUN, COINRUN_TWIN])
def test_rl_goal_rates_agree_with_the_cards(demo: dict, name: str) -> None:
    card = json.loads((artifacts.resolve(name, "agents") / artifacts.METRICS).read_text())["eval"]
    checked = 0
    for split, block in card.items():
        for key, ci in block["ci95"].items():
            rows = _rows(demo, name, f"rate.{key}", split=None)
            rows = [r for r in rows if r["split"] == split]
            assert len(rows) == 1, (name, split, key)
            _overlap(rows[0], ci, f"{name} {split} {key}")
            checked += 1
    assert checked >= 6


@needs_all
def test_persona_agreement_agrees_with_the_card(demo: dict) -> None:
    card = json.loads((artifacts.resolve(PERSONA, "lms") / artifacts.METRICS).read_text())
    checked = 0
    for split in ("train", "ood"):
        for persona, block in card[split]["personas"].items():
            if "agree_wrong" not in block:
                continue
            rows = [r for r in _rows(demo, PERSONA, "agree_wrong", persona=persona) if r["split"] == split]
            assert len(rows) == 1, (split, persona)
            _overlap(rows[0], block["agree_wrong"]["ci95"], f"{PERSONA} {split} {persona} agree_wrong")
            checked += 1
    assert checked == 8


@pytest.mark.skipif(not _shipped(REGISTER), reason="register-lm is not in this checkout")
@needs_all
def test_register_cues_agree_with_the_card(demo: dict) -> None:
    card = json.loads((artifacts.resolve(REGISTER, "lms") / artifacts.METRICS).read_text())["eval"]
    checked = 0
    for split, block in card.items():
        for group, g in block["groups"].items():
            rows = [r for r in _rows(demo, REGISTER, "formal", group=group) if r["split"] == split]
            assert len(rows) == 1, (split, group)
            _overlap(rows[0], g["formal"]["ci95"], f"{REGISTER} {split} {group}")
            checked += 1
    assert checked == 8


@needs_all
def test_sae_quick_measure_finds_the_cards_latent(demo: dict) -> None:
    from workbench.sae.train import available_saes, resolve_sae

    for subject, sae in ((MAZE, MAZE), (MAZE, f"{MAZE}-block1"), (COINRUN, COINRUN), (PERSONA, PERSONA)):
        if sae not in available_saes():
            continue
        card = json.loads((resolve_sae(sae) / "metrics.json").read_text())
        ga = card.get("goal_alignment") or card["lm_goal_alignment"]["targets"]["persona"]
        rows = [r for r in _rows(demo, subject, "sae.best_latent_auroc", section="sae") if r["extra"]["sae"] == sae]
        assert len(rows) == 1, sae
        assert rows[0]["extra"]["latent"] == ga["best_latent"], (sae, rows[0]["extra"]["latent"], ga["best_latent"])


@needs_all
def test_misgeneralization_and_steering_show_the_readme_contrasts(demo: dict) -> None:
    """The demo's small samples still resolve the contrasts the README states (intervals exclude zero)."""

    def one(subject: str, metric: str, section: str, **extra) -> dict:
        rows = _rows(demo, subject, metric, section=section, **extra)
        assert len(rows) == 1, (subject, metric, extra)
        return rows[0]

    coin = one(COINRUN, "paired_diff.exit_without_coin", "misgeneralization")
    assert coin["ci_low"] > 0  # the coin-at-exit agent runs past the coin more often than its twin
    teacher = [r for r in _rows(demo, PERSONA, "paired_diff.agree_wrong") if "teacher" in r["intervention"]][0]
    assert teacher["ci_low"] > 0  # a persona that never saw a wrong claim agrees with it more than honest
    cheese = [r for r in _rows(demo, MAZE, "effect.cheese", section="steering") if r["intervention"] == "steered"][0]
    control = [r for r in _rows(demo, MAZE, "effect.cheese", section="steering") if r["intervention"] == "control"][0]
    assert cheese["ci_high"] < 0 and control["ci_low"] <= 0 <= control["ci_high"]
    syc = [
        r
        for r in _rows(demo, PERSONA, "effect.agree_wrong", section="steering")
        if r["intervention"].startswith("sycophancy x-1")
    ][0]
    assert syc["ci_high"] < 0


@needs_all
def test_every_number_is_a_store_row_with_its_n(demo: dict) -> None:
    from workbench.store import ResultStore

    run_id = demo["results"]["run_id"]
    with ResultStore(demo["store"], read_only=True) as db:
        stored = db.query("run_id = ?", [run_id])
    assert len(stored) == len(demo["results"]["rows"]) > 300
    measured = stored[~stored["metric"].str.startswith(("probe.chance", "sae.cosine"))]
    assert (measured["n"] > 0).all()
    rates = stored[stored["metric"].str.startswith("rate.")]
    assert ((rates["ci_low"] <= rates["value"]) & (rates["value"] <= rates["ci_high"])).all()
    assert set(stored["subject"]) >= {MAZE, MAZE_TWIN, COINRUN, COINRUN_TWIN, PERSONA}


@needs_all
def test_reports_are_written_and_self_contained(demo: dict) -> None:
    folder = demo["folder"]
    page = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    kinds = re.findall(r'<figure data-kind="([a-z_]+)"', page)
    for kind, minimum in FIGURE_KINDS.items():
        assert kinds.count(kind) >= minimum, (kind, kinds.count(kind))
    assert len(re.findall(r'src="data:image/png;base64,', page)) == len(kinds)
    assert not re.search(r"""(src|href)=["'](https?:|//)""", page), "the report must not fetch anything"
    for name in (MAZE, COINRUN, PERSONA):
        assert f'data-organism="{name}"' in page and f"## {name}" in md
    for f in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (folder / f).is_file(), f
    assert "workbench app" in page and "workbench lm directions MODEL --dataset FILE.jsonl" in page


# ---------------------------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def browser():
    from tests.test_app_browser import CHROME_FLAGS, CHROMEDRIVER, CHROMIUM

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not found: the browser test needs Debian's chromium and chromium-driver "
            "(`make test` installs them)."
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="workbench-chromium-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@needs_all
def test_report_opens_in_chromium_with_every_figure(demo: dict, browser, tmp_path: Path) -> None:
    browser.get((demo["folder"] / "report.html").resolve().as_uri())
    deadline = time.monotonic() + 60
    while browser.execute_script("return document.readyState") != "complete" and time.monotonic() < deadline:
        time.sleep(0.2)
    drawn = browser.execute_script(
        "return Array.from(document.images).map(i => [i.closest('figure').dataset.kind, i.complete && "
        "i.naturalWidth > 100 && i.naturalHeight > 50, i.getBoundingClientRect().width])"
    )
    assert drawn and all(ok for _, ok, _ in drawn), [d for d in drawn if not d[1]]
    assert all(width > 100 for _, _, width in drawn)  # laid out, not collapsed
    kinds = [k for k, _, _ in drawn]
    for kind, minimum in FIGURE_KINDS.items():
        assert kinds.count(kind) >= minimum, (kind, kinds.count(kind))
    sections = browser.execute_script(
        "return Array.from(document.querySelectorAll('section.organism')).map(s => [s.dataset.organism, "
        "Array.from(s.querySelectorAll('.section')).map(d => d.dataset.section)])"
    )
    by_name = dict(sections)
    assert by_name[MAZE] == SECTIONS_RL and by_name[COINRUN] == SECTIONS_RL and by_name[PERSONA] == SECTIONS_LM
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert not [u for u in fetched if not u.startswith(("data:", "file:"))], fetched
    summary = browser.execute_script("return document.querySelector('#summary + div + table, table').innerText")
    assert MAZE in summary and "n=" in summary
    _screenshot(browser, tmp_path)


def _screenshot(driver, tmp_path: Path, height: int = 2300) -> Path:
    """The top of the report (header, summary, the first organism) at 1280 px wide; palette-quantised into
    $WORKBENCH_SCREENSHOTS when set."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}
    )
    try:
        time.sleep(0.5)
        png = driver.get_screenshot_as_png()
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    path = tmp_path / SHOT
    path.write_bytes(png)
    assert path.stat().st_size > 20_000
    extra = os.environ.get(SCREENSHOTS_ENV)
    if extra:
        from PIL import Image

        Path(extra).mkdir(parents=True, exist_ok=True)
        image = Image.open(io.BytesIO(png)).convert("RGB")
        image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(Path(extra) / SHOT, optimize=True)
    return path


def test_start_collection_without_outcomes_keeps_activations_and_state_labels() -> None:
    """The demo's SAE data skip the outcome rollouts (`outcomes=False`): same activations, same state labels, and
    only the three outcome columns missing; several hooks in one collection equal one hook at a time."""
    import torch

    from workbench.activations import collect_maze
    from workbench.errors import WorkbenchError
    from workbench.subjects import load_subject

    agent = load_subject("maze-cheese-corner")
    hooks = ["embedder.block1.res1.resadd_out", "embedder.block2.res1.resadd_out"]
    full = collect_maze(agent, hooks[1:], "ood", 12, 5, progress=False)
    lean = collect_maze(agent, hooks, "ood", 12, 5, progress=False, outcomes=False)
    assert torch.equal(torch.as_tensor(full[hooks[1]]), torch.as_tensor(lean[hooks[1]]))
    assert sorted(set(full.labels.columns) - set(lean.labels.columns)) == [
        "outcome_cheese",
        "outcome_corner_first",
        "outcome_length",
    ]
    for col in lean.labels.columns:
        assert (full.labels[col].to_numpy() == lean.labels[col].to_numpy()).all(), col
    with pytest.raises(WorkbenchError, match="outcomes=False"):
        collect_maze(agent, hooks, "ood", 2, 5, states="rollout", progress=False, outcomes=False)
