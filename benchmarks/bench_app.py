"""Maze lab latency: how long from moving the cheese to the new vector field being computed, on this CPU.

The issue's target: the Maze lab updates the vector field within a second after the cheese is moved. Measured here
on the Python side, two ways, for the same sequence of cheese cells on the same maze (seed 0, ood split):

1. the page: a `streamlit.testing` AppTest of `app/pages/2_Maze_lab.py`, warmed up (organism loaded, layer shapes
   and the cheese probe cached, one untimed edit), then for each cell the two cheese inputs are set and the timed
   `at.run()` reruns the whole page script: edited level, decision square, vector field, the figure drawn to PNG,
   the probe heatmap for the new maze and its figure. Every cell is new, so the page's vector-field cache misses
   (what a user moving the cheese sees). The same again on other cells with no probe layer selected: the rerun up
   to the vector-field figure, which Streamlit sends to the browser before it computes the heatmap. Browser
   transfer and drawing are not included (tests/test_app_browser.py checks that the image is replaced; it does not
   time it).
2. the API alone: `agent.world.levels(...).with_cheese(cell)` then `vector_field(policy, level)`: the part of the
   rerun that is the model.

The policy is the shipped `maze-cheese-corner` when present, else a seeded random policy of the same shape in a
temporary artifacts folder. Reported: median, 90th percentile and max seconds over the cells. Informational, like
every benchmark here: it never fails on the number.

Usage: python benchmarks/bench_app.py [--quick] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "app" / "pages" / "2_Maze_lab.py"
AGENT_NAME = "maze-cheese-corner"
SEED, SPLIT = 0, "ood"
BUDGET_S = 1.0  # the target for one cheese move
PROBE_EPISODES = "50"  # the page's cached probe is fitted once in warm-up; its size does not change a rerun's cost


def quantiles(samples: list[float]) -> dict[str, float | int]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)]
    return {"median_s": statistics.median(ordered), "p90_s": p90, "max_s": ordered[-1], "n": len(ordered)}


def agent_name(tmp: Path) -> tuple[str, str]:
    """(the organism the page is pointed at, where it came from); sets WORKBENCH_ARTIFACTS for a stand-in."""
    from workbench import artifacts

    if AGENT_NAME in artifacts.available("agents"):
        return AGENT_NAME, f"trained agent {AGENT_NAME!r}"
    from workbench.rl.agent import save_agent
    from workbench.rl.envs.maze import MazeConfig
    from workbench.rl.policies import ImpalaPolicy, PolicyConfig

    torch.manual_seed(0)
    cfg = PolicyConfig(channels=(8, 16, 32), pool=(False, True, True), hidden=128)
    env = {"kind": "maze", "split": "train", **MazeConfig().__dict__}
    config = {"kind": "rl-agent", "env": env, "policy": cfg.to_dict()}
    save_agent(tmp / "agents" / "random-maze", ImpalaPolicy(cfg), config, card="# random\n", metrics={})
    os.environ["WORKBENCH_ARTIFACTS"] = str(tmp)
    return "random-maze", "random-init policy of the shipped shape (no trained artifact)"


def cheese_cells(level, count: int) -> list[tuple[int, int]]:
    """`count` free cells of the maze, spread over it, none the mouse's or the cheese's own cell."""
    taken = {tuple(int(v) for v in level.mouse[0]), tuple(int(v) for v in level.cheese[0])}
    free = [tuple(int(v) for v in c) for c in level.free_cells(0) if tuple(int(v) for v in c) not in taken]
    picks = np.linspace(0, len(free) - 1, num=min(count, len(free))).round().astype(int)
    return [free[i] for i in dict.fromkeys(picks)]


def bench_app_latency(quick: bool = False, threads: int = 1) -> dict:
    """Seconds from a cheese move to the new vector field: the Maze lab page rerun, and the API call alone."""
    torch.set_num_threads(threads)
    saved = dict(os.environ)
    os.environ.setdefault("WORKBENCH_APP_PROBE_EPISODES", PROBE_EPISODES)
    try:
        return _measure(quick, threads)
    finally:  # leave the environment as found (a stand-in agent points WORKBENCH_ARTIFACTS at a temporary folder)
        os.environ.clear()
        os.environ.update(saved)


def _measure(quick: bool, threads: int) -> dict:
    from workbench.rl.agent import load_agent
    from workbench.rl.vector_field import vector_field

    with tempfile.TemporaryDirectory(prefix="bench-app-") as tmp:
        name, source = agent_name(Path(tmp))
        agent = load_agent(name)
        base = agent.world.levels(SPLIT, 1, SEED)  # level SEED as the app's Maze lab draws it
        moves = 5 if quick else 20
        cells = cheese_cells(base, 2 * (1 + moves))  # two disjoint sequences: the two page variants below
        warm, timed = cells[0], cells[1 : 1 + moves]

        # 2. the API alone (level edit + one batched forward over every free cell)
        api = []
        with torch.no_grad():
            vector_field(agent.policy, base.with_cheese(np.array([warm])))
            for cell in timed:
                start = time.perf_counter()
                vector_field(agent.policy, base.with_cheese(np.array([cell])))
                api.append(time.perf_counter() - start)

        # 1. the page, as it opens (with the probe heatmap), then without probe layers: the rerun up to and including
        # the vector field figure, which Streamlit sends to the browser before the heatmap is computed.
        page, first_load = page_reruns(name, [warm, *timed], probe=True)
        field_only, _ = page_reruns(name, cells[1 + moves :], probe=False)
    return {
        "policy": source,
        "threads": threads,
        "cells": len(timed),
        "maze": {"seed": SEED, "split": SPLIT, "free_cells": len(base.free_cells(0))},
        "first_page_load_s": first_load,
        "page": quantiles(page),
        "page_without_probe": quantiles(field_only),
        "api": quantiles(api),
        "budget_s": BUDGET_S,
    }


def page_reruns(name: str, cells: list[tuple[int, int]], probe: bool) -> tuple[list[float], float]:
    """(seconds of each timed rerun after the first cell's untimed warm-up edit, seconds of the first page load)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(PAGE), default_timeout=900)
    at.session_state["lab_agent"] = name
    at.session_state["lab_seed"] = SEED
    if not probe:
        at.session_state["lab_probe_layers"] = []
    start = time.perf_counter()
    at.run()
    first_load = time.perf_counter() - start
    times = []
    for i, cell in enumerate(cells):
        at.number_input(key="lab_cheese_row").set_value(cell[0])
        at.number_input(key="lab_cheese_col").set_value(cell[1])
        start = time.perf_counter()
        at.run()
        elapsed = time.perf_counter() - start
        if at.exception or at.error:
            raise AssertionError(f"Maze lab failed for cheese {cell}: {[e.value for e in [*at.exception, *at.error]]}")
        if not any(m.label == "Decision square" for m in at.metric):
            raise AssertionError(f"Maze lab drew no vector field for cheese {cell}")
        if i > 0:
            times.append(elapsed)
    return times, first_load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 cheese moves instead of 20")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    r = bench_app_latency(args.quick, args.threads)
    print(f"policy: {r['policy']}; torch threads {r['threads']}; {r['cells']} cheese moves on {r['maze']}")
    print(f"first page load (organism, layer shapes, probe fit): {r['first_page_load_s']:.2f} s")
    labels = {
        "page": "Maze lab page rerun (AppTest)",
        "page_without_probe": "Maze lab page rerun without probe heatmaps (AppTest)",
        "api": "vector_field API call",
    }
    for key, label in labels.items():
        q = r[key]
        ms = {k: round(q[k] * 1e3) for k in ("median_s", "p90_s", "max_s")}
        print(f"{label}: median {ms['median_s']} ms, p90 {ms['p90_s']} ms, max {ms['max_s']} ms")
    verdict = "met" if r["page"]["p90_s"] <= r["budget_s"] else "NOT met"
    print(f"target: page rerun p90 <= {r['budget_s']:g} s: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
