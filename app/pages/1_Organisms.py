"""Organisms: an agent's card, its evaluation rates with 95% intervals, and one episode played back step by step.

Any RL subject: a shipped organism, or a checkpoint path (a published-format `.pth` with its env) or other subject
reference typed next to the selectbox; everything below goes through the subject's world and its kind's verbs.
"""

from __future__ import annotations

import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import common  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from workbench.errors import WorkbenchError  # noqa: E402

OUTCOMES = {  # what each goal-outcome key a world records means
    "cheese": "`cheese`: reached the cheese within the step limit;",
    "corner_first": "`corner_first`: entered the top-right region before the cheese (or never reached it);",
    "coin": "`coin`: collected the coin;",
    "exit": "`exit`: reached the end of the level;",
    "exit_without_coin": "`exit_without_coin`: reached the end without the coin;",
    "timeout": "`timeout`: step limit hit.",
}

st.set_page_config(page_title="Organisms - goal-workbench", layout="wide")
st.title("Organisms")

picked = common.pick_agent("org_agent")
if picked is None:
    st.stop()
agent, ref = picked
splits = list(agent.world.splits)
default_split = splits.index("ood") if "ood" in splits else 0

card_col, metrics_col = st.columns([3, 2])
with card_col:
    st.subheader("Card")
    if agent.card.strip():
        st.markdown(agent.card)
    else:
        st.info("This subject has no card (card.md).")
    st.caption(
        f"{'Folder' if agent.path is not None and agent.path.is_dir() else 'From'}: `{agent.path or agent.name}` · "
        f"kind `{agent.kind}` · trained on split `{agent.train_split or 'unknown'}`"
    )

with metrics_col:
    st.subheader("Evaluation (metrics.json)")
    rows = common.rate_rows(agent.metrics)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
    else:
        st.caption(f"No evaluation in metrics.json for `{agent.name}`: evaluate it here.")
    if rows:
        st.caption(
            " ".join(OUTCOMES[k] for k in agent.world.rate_keys if k in OUTCOMES)
            + " Wilson 95% intervals. `informative`: episodes where the two goals part."
        )
    with st.expander("Evaluate now", expanded=not rows):
        e1, e2 = st.columns(2)
        eval_split = e1.selectbox("Split", splits, index=default_split, key="org_eval_split")
        eval_n = int(e2.number_input("Levels", min_value=1, value=50, step=10, key="org_eval_episodes"))
        if st.checkbox(f"Evaluate on {eval_n} {eval_split} levels (seed 0)", key="org_eval"):
            try:
                with st.spinner(f"Playing {eval_n} episodes..."):
                    result = common.evaluation(ref, eval_split, eval_n, 0)
            except WorkbenchError as err:
                st.error(str(err))
            else:
                st.dataframe(pd.DataFrame(common.rate_rows(common.evaluation_metrics(result))), hide_index=True)
                st.caption(
                    f"`workbench eval` on this subject (its kind's `eval` verb): {eval_n} `{eval_split}` levels, "
                    f"seed 0, up to {common.max_steps_of(agent)} steps each; Wilson 95% intervals."
                )
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
if not common.has_playback(agent):
    st.info(f"Step-by-step playback is not available for {agent.kind} subjects; the evaluation above is.")
    st.stop()
limit = common.max_steps_of(agent)
if st.session_state.get("org_ref") != ref:  # another subject: the step limit starts at its world's own
    if "org_ref" in st.session_state or "org_max_steps" not in st.session_state:
        st.session_state["org_max_steps"] = limit
    st.session_state["org_ref"] = ref
c1, c2, c3, c4 = st.columns(4)
split = c1.selectbox("Split", splits, index=default_split, key="org_split")
seed = int(c2.number_input("Level seed", min_value=0, value=0, step=1, key="org_seed"))
action_seed = int(c3.number_input("Action-sampling seed", min_value=0, value=0, step=1, key="org_action_seed"))
max_steps = int(c4.number_input("Step limit", min_value=1, step=50, key="org_max_steps"))
max_steps = min(max_steps, limit)

try:
    with st.spinner("Playing the episode..."):
        ep = common.playback(ref, split, seed, action_seed, None if max_steps >= limit else max_steps)
except WorkbenchError as err:
    st.error(str(err))
    st.stop()
frames = ep["frames"]
out = ep["outcome"]
action_names = ep["action_names"]
labels = {
    "cheese": "Cheese reached",
    "corner_first": "Corner region first",
    "coin": "Coin collected",
    "exit": "Exit reached",
    "exit_without_coin": "Exit without coin",
    "ended": "Episode ended",
}
for col, (key, value) in zip(st.columns(len(out)), out.items(), strict=True):
    label = labels.get(key, key.replace("_", " ")[0].upper() + key.replace("_", " ")[1:])
    col.metric(label, ("yes" if value else "no") if isinstance(value, bool) else value)

t = st.slider("Step", 0, len(frames) - 1, 0, key="org_step") if len(frames) > 1 else 0
img_col, info_col = st.columns([2, 3])
img_col.image(frames[t], caption=f"step {t} of {len(frames) - 1}", width=360)
with info_col:
    if t < len(ep["actions"]):
        probs = ep["probs"][t]
        st.write(f"Action taken at step {t}: **{action_names[ep['actions'][t]]}**")
        st.bar_chart(pd.DataFrame({"probability": probs}, index=list(action_names)), sort=False)
    else:
        st.write("Episode over." + (" The mouse is on the cheese." if out.get("cheese") else ""))
truncated = max_steps < limit
st.caption(
    f"Level seed {ep['level_seed']} (level {seed} of `{split}` as the subject's world draws it, as "
    "`workbench eval` / `vector-field --seed` do). Actions are sampled from the policy with a torch generator seeded "
    "by the action-sampling seed, exactly as the world's evaluation samples them, so "
    + (
        f"the outcome above is evaluation's for this level only with the full step limit ({limit}); "
        f"this playback stops after {max_steps}. "
        if truncated
        else "the outcome above is the outcome of this playback. "
    )
    + ep["legend"]
)
