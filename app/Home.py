"""goal-workbench app: home page. Start with `workbench app` (offline: no usage stats, no browser launch)."""

from __future__ import annotations

import sys
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import streamlit as st  # noqa: E402

from workbench import artifacts  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402

st.set_page_config(page_title="goal-workbench", layout="wide")
st.title("goal-workbench")
st.markdown(
    """
An interpretability workbench for **goal representations** in trained agents: find where a model keeps its goal,
read it out with probes, and steer it, with controls and 95% intervals.

The first organisms are maze agents. `maze-cheese-corner` was trained with the cheese always in the top-right
region of the maze, so "go to the cheese" and "go to the corner" earned the same reward; out of distribution they
part (Langosco et al. 2022). `maze-cheese-anywhere` is its control twin, trained with the cheese anywhere. A
*cheese vector* in the policy's activations can switch cheese-seeking off (Turner et al. 2023).
"""
)

st.subheader("Organisms present")
names = common.agent_names()
if names:
    rows = []
    for name in names:
        try:
            cfg = artifacts.read_config(artifacts.resolve(name, "agents"))
            split = cfg.get("env", {}).get("split", "?")
        except WorkbenchError as err:  # a broken folder is reported, not raised
            split = f"unreadable ({err})"
        rows.append({"organism": name, "trained on split": split})
    st.table(rows)
else:
    st.info(f"No organisms in `{artifacts.artifacts_root() / 'agents'}` yet.")
for name in common.missing_recipes():
    st.warning(f"`{name}` is not trained (yet): {common.train_hint(name)}.")

st.subheader("Pages")
st.page_link(
    "pages/1_Organisms.py", label="Organisms: cards, evaluation rates with CIs, rollout playback (any RL subject)"
)
st.page_link(
    "pages/2_Maze_lab.py",
    label="Maze lab: edit a maze, vector fields, decision squares, cheese vectors, channel clamps, probe heatmaps",
)
st.page_link("pages/3_CoinRun_lab.py", label="CoinRun lab: coin vs exit organisms, their cards and rates with CIs")
st.page_link(
    "pages/4_Probes_and_batteries.py",
    label="Probes & batteries: the results store, filterable, probe metrics per layer",
)
st.page_link("pages/5_Features.py", label="Features: sparse autoencoders (SAELens format) on organism activations")
st.page_link("pages/6_Personas.py", label="Personas: the persona language model, truth vs agreement")
st.caption(
    "Everything runs locally on CPU and offline. The same functions are available from Python (`import workbench`) "
    "and the `workbench` command line. Organisms, Maze lab and CoinRun lab also take a checkpoint path: a "
    "published-format `.pth` with its env (`procgen-maze`, `procgen-coinrun`), an artifact folder or a registered "
    "subject."
)
