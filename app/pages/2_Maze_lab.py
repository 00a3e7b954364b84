"""Maze lab: edit a maze, see the policy's vector field and decision square, intervene, and read a cheese probe.

Any maze-world subject: a native maze organism, or a published procgen-maze checkpoint typed next to the selectbox.
Mazes come from the subject's world (`agent.world.levels`), so the same edits, fields, cheese vectors and probes run
on procgen's own 64x64 frames for a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from workbench.errors import WorkbenchError  # noqa: E402
from workbench.rl.envs.maze import render  # noqa: E402
from workbench.rl.maze_parity import CONVENTIONS, DEFAULT_CONVENTION  # noqa: E402
from workbench.rl.vector_field import draw  # noqa: E402

st.set_page_config(page_title="Maze lab - goal-workbench", layout="wide")
st.title("Maze lab")

# ------------------------------------------------------------------------------------------------ maze choice + edits
with st.sidebar:
    picked = common.pick_agent("lab_agent", family="maze")
if picked is None:
    st.stop()
agent, ref = picked
splits = list(agent.world.splits)

with st.sidebar:
    split = st.selectbox("Split", splits, index=splits.index("ood") if "ood" in splits else 0, key="lab_split")
    seed = int(st.number_input("Maze seed", min_value=0, value=0, step=1, key="lab_seed"))
    try:
        with st.spinner("Drawing the maze..."):
            base = common.base_level(ref, split, seed)
    except WorkbenchError as err:
        st.error(str(err))
        st.stop()
    world = base.world_size
    # A new maze resets the edit inputs to that maze's own cheese and mouse cells.
    level_id = (ref, split, seed)
    if st.session_state.get("lab_level_id") != level_id:
        st.session_state["lab_level_id"] = level_id
        st.session_state["lab_cheese_row"], st.session_state["lab_cheese_col"] = (int(v) for v in base.cheese[0])
        st.session_state["lab_mouse_row"], st.session_state["lab_mouse_col"] = (int(v) for v in base.mouse[0])
        st.session_state["lab_clamp_row"], st.session_state["lab_clamp_col"] = (int(v) for v in base.cheese[0])
    st.markdown("**Cheese** (row, col)")
    c1, c2 = st.columns(2)
    cheese_row = int(c1.number_input("Cheese row", step=1, key="lab_cheese_row"))
    cheese_col = int(c2.number_input("Cheese col", step=1, key="lab_cheese_col"))
    remove = st.checkbox("Remove cheese", key="lab_remove_cheese")
    st.markdown("**Mouse** (row, col)")
    m1, m2 = st.columns(2)
    mouse_row = int(m1.number_input("Mouse row", step=1, key="lab_mouse_row"))
    mouse_col = int(m2.number_input("Mouse col", step=1, key="lab_mouse_col"))
    st.caption(
        f"Row 0 is the top; the world is {world}x{world} (level seed {int(base.seeds[0])}: maze {seed} of `{split}` "
        "as the subject's world draws it). Defaults are the maze's own cells."
    )
    convention = st.selectbox(
        "Decision-square convention",
        list(CONVENTIONS),
        index=list(CONVENTIONS).index(DEFAULT_CONVENTION),
        key="lab_convention",
        help="workbench: no decision square when the top-right corner lies on the way to the cheese; "
        "procgen-tools: the cell after the corner then (workbench.rl.maze_parity)",
    )

cheese = None if remove else (cheese_row, cheese_col)
mouse = (mouse_row, mouse_col)
try:
    level = common.build_level(ref, split, seed, cheese, mouse)
except WorkbenchError as err:
    msg = str(err)
    st.error(msg if "free cell" in msg else f"{msg}; pick a free cell")
    st.stop()

ds_cell = common.decision_square(level, convention)

# ------------------------------------------------------------------------------------------------ interventions
shapes = common.layer_shapes(ref)
all_layers = list(shapes)
spatial = common.spatial_layers(ref)
with st.expander("Interventions", expanded=True):
    i1, i2 = st.columns(2)
    with i1:
        st.markdown("**Cheese vector** (activation with cheese minus without, this maze, mouse at its cell)")
        coef = float(st.slider("Cheese-vector coefficient (0 = off)", -3.0, 3.0, 0.0, 0.25, key="lab_cv_coef"))
        cv_layer = st.selectbox(
            "Cheese-vector layer", all_layers, index=common.default_index(all_layers), key="lab_cv_layer"
        )
    with i2:
        st.markdown("**Channel clamp**")
        clamp_on = st.checkbox("Clamp a channel", key="lab_clamp_on")
        clamp_layer = st.selectbox("Clamp layer", spatial, index=common.default_index(spatial), key="lab_clamp_layer")
        n_channels = shapes[clamp_layer][0]
        k1, k2 = st.columns(2)
        channel = int(
            k1.number_input(
                f"Channel (0..{n_channels - 1})",
                min_value=0,
                max_value=n_channels - 1,
                value=0,
                step=1,
                key=f"lab_clamp_channel_{clamp_layer}",
            )
        )
        clamp_value = float(k2.number_input("Value", value=0.0, step=0.5, key="lab_clamp_value"))
        everywhere = st.checkbox("At every cell", key="lab_clamp_everywhere")
        r1, r2 = st.columns(2)
        clamp_row = int(r1.number_input("Clamp at row", min_value=0, max_value=world - 1, step=1, key="lab_clamp_row"))
        clamp_col = int(r2.number_input("Clamp at col", min_value=0, max_value=world - 1, step=1, key="lab_clamp_col"))
        clamp_cell = None if everywhere else common.layer_cell(ref, clamp_layer, (clamp_row, clamp_col), level)
        if clamp_on and clamp_cell is not None:
            st.caption(f"World cell ({clamp_row}, {clamp_col}) is cell {clamp_cell} of this layer's grid.")

cv = (cv_layer, coef) if coef != 0.0 else None
clamp = (clamp_layer, channel, clamp_value, clamp_cell) if clamp_on else None
if cv is not None and cheese is None:
    st.info("The cheese is removed, so this maze's cheese vector is zero: the field does not change.")

# ------------------------------------------------------------------------------------------------ vector fields
try:
    with st.spinner("Computing vector fields..."):
        before = common.field(ref, split, seed, cheese, mouse)
        after = common.field(ref, split, seed, cheese, mouse, cv, clamp) if (cv or clamp) else None
except WorkbenchError as err:
    st.error(str(err))
    st.stop()

st.metric("Decision square", f"({ds_cell[0]}, {ds_cell[1]})" if ds_cell else "none")
if ds_cell is None:
    st.caption(
        "No decision square: the cheese was removed, or one goal lies on the way to the other, so the paths to the "
        "cheese and to the top-right corner never part."
    )

fields, titles = [before], [f"{agent.name}, {split} maze {seed}"]
if after is not None:
    parts = []
    if cv is not None:
        parts.append(f"cheese vec x{coef:+g} @ {cv_layer.removeprefix('embedder.')}")
    if clamp is not None:
        where = "all cells" if clamp_cell is None else f"cell {clamp_cell}"
        parts.append(f"ch {channel}={clamp_value:g} @ {clamp_layer.removeprefix('embedder.')} ({where})")
    fields.append(after)
    titles.append("; ".join(parts))
fig = draw(fields, titles, marks=[ds_cell] * len(fields), cell_px=common.FIELD_CELL_PX)
common.show_figure(fig)
st.caption("Arrows: the policy's expected move with the mouse on each free cell. Purple box: the decision square.")

if ds_cell is not None:
    table = {"before": before.at(ds_cell)}
    if after is not None:
        table["after"] = after.at(ds_cell)
    st.markdown("**Action probabilities at the decision square**")
    st.dataframe(pd.DataFrame(table, index=list(common.ACTION_NAMES)).T.round(3))

# ------------------------------------------------------------------------------------------------ probe heatmaps
st.subheader("Cheese-location probe")
episodes = common.probe_episodes()
probe_layers = st.multiselect(
    "Probe layers",
    spatial,
    default=[common.DEFAULT_LAYER] if common.DEFAULT_LAYER in spatial else spatial[:1],
    key="lab_probe_layers",
)
st.caption(
    f"A spatial (1x1) probe per layer, fitted on the start states of {episodes} OOD mazes (seed 0) to predict the "
    "cheese cell; shown: its softmax over the layer's cells for the maze above, painted onto the world cells each "
    "layer cell covers. Star: the cheese."
)
cols = st.columns(max(1, min(3, len(probe_layers))))
for i, layer in enumerate(probe_layers):
    with cols[i % len(cols)]:
        try:
            with st.spinner(f"Fitting a cheese probe at {layer} on {episodes} mazes..."):
                heat = common.probe_heatmap(ref, layer, level, episodes)
        except WorkbenchError as err:
            st.error(f"{layer}: {err}")
            continue
        pfig, ax = plt.subplots(figsize=(4, 4))
        ax.imshow(render(level, cell_px=1)[0])
        im = ax.imshow(heat, cmap="magma", alpha=0.75, vmin=0.0)
        if cheese is not None:
            ax.scatter([cheese[1]], [cheese[0]], marker="*", s=160, c="#2ecc71", edgecolors="black")
        ax.set_title(layer.removeprefix("embedder."), fontsize=10)
        ax.set_axis_off()
        pfig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="P(cheese here)")
        pfig.tight_layout()
        common.show_figure(pfig)

# ------------------------------------------------------------------------------------------------ retarget panel
st.subheader("Retarget: the discovered goal channels clamped at a target cell")


@st.cache_resource(show_spinner=False, max_entries=8)
def _goal_channels(ref, layer: str, n_fit: int):
    from workbench.rl.goal_channels import discover_goal_channels

    return discover_goal_channels(common.agent(ref), layer, n_fit=n_fit, seed=0)


@st.cache_data(show_spinner=False, max_entries=32)
def _retarget_view(ref, split: str, seed: int, cheese, mouse, layer: str, n_fit: int, target, size: int, mag: float):
    from workbench.rl.retarget import retarget_view

    found = _goal_channels(ref, layer, n_fit)
    level = common.build_level(ref, split, seed, cheese, mouse)
    return retarget_view(common.agent(ref), level, found, target, size=size, magnitude=mag)


@st.cache_data(show_spinner=False, max_entries=32)
def _auto_target(ref, split: str, seed: int, cheese, mouse, layer: str, n_fit: int):
    """A target the way `workbench retarget` draws them (a free cell off both natural routes), or None."""
    from workbench.rl.retarget import sample_pairs

    grid = _goal_channels(ref, layer, n_fit).shape[1]
    try:
        return tuple(
            int(v) for v in sample_pairs(common.build_level(ref, split, seed, cheese, mouse), 1, 0, grid).targets[0]
        )
    except WorkbenchError:
        return None


rt_fit = max(10, common.probe_episodes())
rc1, rc2, rc3, rc4, rc5 = st.columns(5)
rt_layer = rc1.selectbox("Layer", spatial, index=common.default_index(spatial), key="lab_rt_layer")
rt_auto = rc1.checkbox("Target: off both routes", value=True, key="lab_rt_auto", help="as `workbench retarget` draws")
rt_row = int(rc2.number_input("Target row", min_value=0, max_value=world - 1, value=1, step=1, key="lab_rt_row"))
rt_col = int(rc3.number_input("Target col", min_value=0, max_value=world - 1, value=1, step=1, key="lab_rt_col"))
rt_size = int(rc4.number_input("Channels (top k)", min_value=1, max_value=64, value=2, step=1, key="lab_rt_size"))
rt_mag = float(rc5.number_input("Push (std)", min_value=0.5, value=8.0, step=1.0, key="lab_rt_mag"))
if rt_auto and cheese is not None:
    with st.spinner(f"Ranking the channels of {rt_layer} on {rt_fit} mazes..."):
        auto = _auto_target(ref, split, seed, cheese, mouse, rt_layer, rt_fit)
    if auto is None:
        st.info("This maze has no free cell off both routes; untick the box and choose a target cell.")
    else:
        rt_row, rt_col = auto
        st.caption(
            f"Target ({rt_row}, {rt_col}): drawn off the routes to the cheese and to the corner; untick to choose."
        )
st.caption(
    f"Channels ranked on {rt_fit} fit mazes (seed 0) by correlation with the cheese map, spatial-probe weight and "
    "attribution at decision squares (`workbench.rl.goal_channels`); the top k are clamped to mean + k std (sign of "
    "their correlation) at the target's layer cell. `workbench retarget` measures this over 200 mazes with controls."
)
view = None
if cheese is None:  # targets are chosen against the cheese (off its route, not behind it): none to compare with
    st.info("Put the cheese back to retarget: the target is measured against the agent's route to the cheese.")
else:
    try:
        with st.spinner(f"Ranking the channels of {rt_layer} on {rt_fit} mazes and clamping them..."):
            view = _retarget_view(ref, split, seed, cheese, mouse, rt_layer, rt_fit, (rt_row, rt_col), rt_size, rt_mag)
    except WorkbenchError as err:
        st.error(str(err))
if view is not None:
    rfig = draw(
        [view.before, view.after],
        ["no intervention", f"ch {view.channels} @ {view.magnitude:g} std, layer cell {view.layer_cell}"],
        marks=[(rt_row, rt_col)] * 2,
        cell_px=common.FIELD_CELL_PX,
    )
    px = common.FIELD_CELL_PX
    rfig.axes[1].plot((view.path[:, 1] + 0.5) * px, (view.path[:, 0] + 0.5) * px, color="#2980b9", linewidth=2.5)
    common.show_figure(rfig)
    st.markdown(f"**Greedy path with the clamp:** {len(view.path) - 1} steps, ends at the **{view.outcome}**.")
    st.caption("Purple box: the target. Blue line: the most likely move from each cell, followed from the mouse.")
