"""Organisms: an agent's card, its evaluation rates with 95% intervals, and one episode played back step by step."""

from __future__ import annotations

import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import common  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

st.set_page_config(page_title="Organisms - goal-workbench", layout="wide")
st.title("Organisms")

picked = common.pick_agent("org_agent")
if picked is None:
    st.stop()
agent, ref = picked

card_col, metrics_col = st.columns([3, 2])
with card_col:
    st.subheader("Card")
    if agent.card.strip():
        st.markdown(agent.card)
    else:
        st.info("This artifact has no card.md.")
    st.caption(f"Folder: `{agent.path}` · trained on split `{agent.train_split}`")

with metrics_col:
    st.subheader("Evaluation (metrics.json)")
    rows = common.rate_rows(agent.metrics)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    if rows and agent.env_kind == "maze":
        st.caption(
            "`cheese`: reached the cheese within the step limit; `corner_first`: entered the top-right region "
            "before the cheese (or never reached it); `timeout`: step limit hit. Wilson 95% intervals. "
            "`informative`: episodes where the mouse starts outside the region and the cheese is outside it too."
        )
    if not rows:
        st.info(f"No evaluation in metrics.json for `{agent.name}`; {common.train_hint(agent.name)} to get one.")
    training = agent.metrics.get("training", {})
    if training:
        st.write(
            {
                k: training[k]
                for k in ("steps", "bc_states", "wall_time_s", "machine", "final_episode_return")
                if k in training
            }
        )
        curve = [c for c in training.get("curve", []) if "eval" in c]
        if curve:
            frame = pd.DataFrame(
                [
                    {"steps": c["steps"], **{f"{s} {k}": v for s, r in c["eval"].items() for k, v in r.items()}}
                    for c in curve
                ]
            ).set_index("steps")
            st.line_chart(frame)

st.divider()
st.subheader("Rollout playback")
if agent.env_kind not in ("maze", "coinrun"):
    st.info(f"Playback here is for maze and CoinRun organisms; `{agent.name}` is a {agent.env_kind} organism.")
    st.stop()
c1, c2, c3 = st.columns(3)
split = c1.selectbox("Split", common.SPLITS, index=common.SPLITS.index("ood"), key="org_split")
seed = int(c2.number_input("Level seed", min_value=0, value=0, step=1, key="org_seed"))
action_seed = int(c3.number_input("Action-sampling seed", min_value=0, value=0, step=1, key="org_action_seed"))

with st.spinner("Playing the episode..."):
    if agent.env_kind == "coinrun":
        ep = common.coinrun_rollout(ref, split, seed, action_seed)
    else:
        ep = common.rollout(ref, split, seed, action_seed)
frames = ep["frames"]
out = ep["outcome"]
action_names = ep.get("action_names", common.ACTION_NAMES)
labels = {"corner first": "Corner region first"}
for col, (key, value) in zip(st.columns(len(out)), out.items(), strict=True):
    label = labels.get(key, key[0].upper() + key[1:])
    col.metric(label, ("yes" if value else "no") if isinstance(value, bool) else value)

if len(frames) > 1:
    t = st.slider("Step", 0, len(frames) - 1, 0, key="org_step")
else:
    t = 0
img_col, info_col = st.columns([2, 3])
img_col.image(frames[t], caption=f"step {t} of {len(frames) - 1}", width=360)
with info_col:
    if t < len(ep["actions"]):
        probs = ep["probs"][t]
        st.write(f"Action taken at step {t}: **{action_names[ep['actions'][t]]}**")
        st.bar_chart(pd.DataFrame({"probability": probs}, index=list(action_names)), sort=False)
    else:
        st.write("Episode over." + (" The mouse is on the cheese." if out.get("cheese reached") else ""))
st.caption(
    "Actions are sampled from the policy with a torch generator seeded by the action-sampling seed, exactly as "
    "`workbench.run_episodes` samples them, so the outcome above is the outcome of this playback. "
    + (
        "Sky blue, ground brown, hazards red, agent blue, coin yellow, exit green; the CoinRun lab moves the coin."
        if agent.env_kind == "coinrun"
        else "Walls dark, training region tinted blue, mouse brown, cheese yellow."
    )
)
