"""CoinRun lab: play a CoinRun organism on one level with the coin where you put it, read its coin/exit probes along
the episode, and steer it with the coin vector (with a random equal-norm control), on that level and on a batch.

A procgen CoinRun checkpoint (typed next to the selectbox) gets what its kind's verbs support: evaluation and
coin-vector steering from start-state pairs; the level editor and probes are built on the native CoinRun."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import common  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from workbench import artifacts  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402

ORGANISM = "coinrun-coin-at-exit"  # the misgeneralising organism; its twins come from agents/coinrun-*.toml
ENV_MODULE = "workbench.rl.envs.coinrun"
CELL_PX = 16
CONDITIONS = {"baseline": "#1f4fd0", "steered": "#d0341f", "control": "#7a7a7a"}

st.set_page_config(page_title="CoinRun lab - goal-workbench", layout="wide")
st.title("CoinRun lab")
st.markdown(
    "In training the coin always sits at the end of the level, so *get the coin* and *go to the end* earn the same "
    "reward. Move the coin along the level and the two goals part: an agent that learned the wrong one runs past "
    "the coin to the exit (Langosco et al. 2022)."
)

recipes = sorted(p.stem for p in (artifacts.repo_root() / "agents").glob("coinrun-*.toml"))
wanted = [ORGANISM, *(r for r in recipes if r != ORGANISM)]
no_organisms = not common.rl_agent_names("coinrun")
picked = common.pick_agent(
    "coinrun_agent",
    family="coinrun",
    empty=f"No CoinRun organism in `{common.rel(artifacts.artifacts_root() / 'agents')}` yet. "
    + "; ".join(f"`{name}`: {common.recipe_hint(name)}" for name in wanted)
    + ". Then reload this page, or type a procgen CoinRun checkpoint path below.",
)
if picked is None:
    if no_organisms:
        if importlib.util.find_spec(ENV_MODULE) is None:
            st.info(f"The native CoinRun env (`{ENV_MODULE}`) has not landed in this checkout yet.")
        st.markdown(
            "Once an organism is trained this page shows its card, its coin/exit rates with 95% intervals, plays it "
            "on one level with the coin where you put it, reads its coin/exit probes along the episode and steers it "
            "with the coin vector."
        )
    st.stop()
agent, ref = picked
name = agent.name

card_col, metrics_col = st.columns([3, 2])
with card_col, st.expander("Card", expanded=True):
    if agent.card.strip():
        st.markdown(agent.card)
    else:
        st.info("This subject has no card (card.md).")
    st.caption(f"From: `{agent.path or name}` · kind `{agent.kind}` · trained on split `{agent.train_split or '?'}`")
with metrics_col:
    st.subheader("Evaluation (metrics.json)")
    rows = common.rate_rows(agent.metrics)
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True)
        st.caption("Rates over evaluated levels with Wilson 95% intervals, as the recipe's evaluation wrote them.")
    elif agent.path is not None and agent.path.is_dir():
        st.info(f"No evaluation in metrics.json for `{name}`; {common.train_hint(name)} to get one.")
    else:
        st.caption(f"`{name}` has no metrics.json; evaluate it below.")

from workbench.hooks import hook_names  # noqa: E402
from workbench.rl.coinrun.probes import state_labels  # noqa: E402
from workbench.rl.envs import coinrun as env  # noqa: E402
from workbench.rl.steering import DEFAULT_LAYER  # noqa: E402
from workbench.subjects import get_kind  # noqa: E402

# ------------------------------------------------------------------------------------------------ other CoinRun worlds
if not common.native_coinrun(agent):
    have = sorted(v for v in get_kind(agent.kind).verbs if v in ("eval", "steer"))
    st.info(
        f"`{name}` is a {agent.kind} subject: this page offers what its kind's verbs support "
        f"({', '.join(have) or 'none'}: evaluation and coin-vector steering); playing one level with the coin moved "
        "and the coin/exit probes need a native CoinRun organism."
    )
    splits = list(agent.world.splits)
    s1, s2 = st.columns(2)
    split = s1.selectbox("Split", splits, index=splits.index("ood") if "ood" in splits else 0, key="coinrun_split")
    n_levels = int(s2.number_input("Levels", min_value=1, value=20, step=10, key="coinrun_verb_levels"))
    steps = common.max_steps_of(agent)
    st.subheader("Evaluation")
    if "eval" in have and st.checkbox(f"Evaluate on {n_levels} {split} levels (seed 0)", key="coinrun_eval"):
        try:
            with st.spinner(f"Playing {n_levels} episodes (up to {steps} steps each)..."):
                result = common.evaluation(ref, split, n_levels, 0)
        except WorkbenchError as err:
            st.error(str(err))
        else:
            st.dataframe(pd.DataFrame(common.rate_rows(common.evaluation_metrics(result))), hide_index=True)
            st.caption("`workbench eval` on this subject (its kind's `eval` verb): Wilson 95% intervals.")
    st.subheader("Coin-vector steering")
    if "steer" in have:
        hooks = list(common.layer_shapes(ref))
        c1, c2 = st.columns(2)
        layer = c1.selectbox("Layer", hooks, index=common.default_index(hooks, DEFAULT_LAYER), key="coinrun_layer")
        coef = float(c2.slider("Coin-vector coefficient", -3.0, 3.0, -1.0, 0.25, key="coinrun_coef"))
        if st.checkbox(f"Steer {n_levels} {split} levels three ways (seed 0)", key="coinrun_verb_steer"):
            try:
                with st.spinner(f"Playing {n_levels} levels three ways (up to {steps} steps each)..."):
                    res = common.steering(ref, "coin", coef, layer, split, n_levels, 0)
            except WorkbenchError as err:
                st.error(str(err))
            else:
                st.dataframe(pd.DataFrame(common.comparison_rows(res)), hide_index=True, key="coinrun_verb_table")
                norm = float(res.get("direction", {}).get("norm", float("nan")))
                st.caption(
                    f"`workbench steer SUBJECT --env {agent.kind} --vector coin` (its kind's `steer` verb): per level "
                    f"the coin vector is act(start state) - act(same state, coin removed) at `{layer}` (mean norm "
                    f"{norm:.3f}), added x{coef:+g} on every forward pass; `control` adds a random vector of the "
                    "same norm. Same levels and action seed in every condition; Wilson 95% intervals for the rates, "
                    "paired bootstrap 95% intervals for the differences."
                )
    st.stop()
view = agent.env_config.view

# ------------------------------------------------------------------------------------------------ the level
st.divider()
st.subheader("One level, played")
c1, c2, c3 = st.columns(3)
split = c1.selectbox("Split", env.SPLITS, index=env.SPLITS.index("ood"), key="coinrun_split")
seed = int(c2.number_input("Level seed", min_value=0, value=0, step=1, key="coinrun_seed"))
action_seed = int(c3.number_input("Action-sampling seed", min_value=0, value=0, step=1, key="coinrun_action_seed"))
own = common.coinrun_level(ref, split, seed)
level_id = (ref, split, seed)
if st.session_state.get("coinrun_level_id") != level_id:  # a new level resets the coin inputs to its own coin
    st.session_state["coinrun_level_id"] = level_id
    st.session_state["coinrun_coin_row"], st.session_state["coinrun_coin_col"] = (int(v) for v in own.coin[0])
k1, k2, k3 = st.columns(3)
coin_row = int(k1.number_input("Coin row", step=1, key="coinrun_coin_row"))
coin_col = int(k2.number_input("Coin col", step=1, key="coinrun_coin_col"))
remove = k3.checkbox("Remove the coin", key="coinrun_remove_coin")
coin: common.Coin = None if remove else (coin_row, coin_col)
try:
    level = common.coinrun_level(ref, split, seed, coin)
except WorkbenchError as err:
    st.error(f"{err} (the world is {own.height} rows x {own.width} columns, row 0 at the top)")
    st.stop()

layers = hook_names(agent.policy)
layer = st.selectbox(
    "Layer (probes and coin vector)", layers, index=common.default_index(layers, DEFAULT_LAYER), key="coinrun_layer"
)
with st.spinner("Playing the episode..."):
    traj = common.coinrun_play(ref, split, seed, coin, action_seed, layer)
rec = traj.records
m1, m2, m3, m4, m5 = st.columns(5)
m1.metric("Coin collected", "yes" if rec.coin_collected[0] else "no")
m2.metric("Exit reached", "yes" if rec.exit_reached[0] else "no")
m3.metric("Exit without coin", "yes" if rec.exit_without_coin[0] else "no")
m4.metric("Died", "yes" if rec.died[0] else "no")
m5.metric("Steps", int(rec.length[0]))


def draw_paths(start: env.CoinRunLevels, paths: dict[str, np.ndarray], title: str):
    """The level's RGB render with each condition's agent path drawn over it (cell centres)."""
    img = env.render(start, cell_px=CELL_PX)[0]
    fig, ax = plt.subplots(figsize=(img.shape[1] / 60, img.shape[0] / 60 + 0.5))
    ax.imshow(img)
    for i, (label, path) in enumerate(paths.items()):
        off = (i - (len(paths) - 1) / 2) * 2.0  # overlapping paths stay distinguishable
        xs, ys = (path[:, 1] + 0.5) * CELL_PX + off, (path[:, 0] + 0.5) * CELL_PX + off
        ax.plot(xs, ys, "-o", color=CONDITIONS.get(label, "#1f4fd0"), lw=1.5, ms=2.5, label=label)
        ax.plot(xs[-1], ys[-1], "X", color=CONDITIONS.get(label, "#1f4fd0"), ms=8)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    if len(paths) > 1:
        ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


common.show_figure(draw_paths(level, {"agent": traj.path()}, f"{split} level {seed}: the agent's path (X: the end)"))
frames = env.render(traj.states, cell_px=CELL_PX)
t = st.slider("Step", 0, len(frames) - 1, 0, key="coinrun_step") if len(frames) > 1 else 0
img_col, info_col = st.columns([3, 2])
img_col.image(frames[t], caption=f"step {t} of {len(frames) - 1}: agent blue, coin yellow, exit green, hazards red")
with info_col:
    if t < len(traj.actions):
        st.write(f"Action taken at step {t}: **{env.ACTION_NAMES[traj.actions[t]]}**")
        st.bar_chart(pd.DataFrame({"probability": traj.probs[t]}, index=list(env.ACTION_NAMES)), sort=False)
    else:
        st.write("Episode over: " + ("exit." if rec.exit_reached[0] else "hazard." if rec.died[0] else "step limit."))
st.caption(
    "One episode with actions sampled by a torch generator seeded by the action-sampling seed "
    "(`workbench.rl.coinrun.rollout.play_level`, the episode `run_episodes` reports). Row 0 is the top; a coin on a "
    "solid cell is refused."
)

# ------------------------------------------------------------------------------------------------ probes along it
st.divider()
st.subheader("Coin and exit probes along the episode")
episodes = common.coinrun_probe_episodes()
with st.spinner(f"Fitting coin/exit probes at {layer} on {episodes} ood levels (once per layer)..."):
    readout = common.coinrun_readout(ref, layer, episodes)
truth = state_labels(traj.states.select(slice(0, len(traj.actions))), view)
if readout.probes and traj.activations is not None:
    probs = readout.read(traj.activations)
    table = pd.DataFrame({"step": np.arange(len(traj.actions)), "action": [env.ACTION_NAMES[a] for a in traj.actions]})
    fig, axes = plt.subplots(1, len(probs), figsize=(4 * len(probs), 2.4), sharey=True, squeeze=False)
    for ax, (target, p) in zip(axes[0], probs.items(), strict=True):
        ax.plot(p, color="#1f4fd0", label="probe P")
        ax.step(np.arange(len(p)), truth[target].astype(float), where="mid", color="#444", ls="--", label="truth")
        ax.set_title(f"P({target})", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylim(-0.05, 1.05)
        table[f"P({target})"] = p
        table[target] = truth[target]
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    common.show_figure(fig)
    with st.expander("Per-step read-outs"):
        st.dataframe(table, hide_index=True, key="coinrun_readout_table")
skipped = [r["target"] for r in readout.quality if "value" not in r]
if skipped:
    st.info(f"Probes not fitted (one class only in the fit or test states): {', '.join(skipped)}.")
quality = pd.DataFrame(
    [
        {
            "target": r["target"],
            "metric": r["metric"],
            "held-out value": r["value"],
            "ci95 low": r["ci95"][0],
            "ci95 high": r["ci95"][1],
            "shuffled-label control": r["shuffled_control"],
            "n": r["n"],
        }
        for r in readout.quality
        if "value" in r
    ]
)
if not quality.empty:
    st.dataframe(quality, hide_index=True)
st.caption(
    f"Logistic probes at `{layer}` fitted on rollout states (up to 40 per level) of {episodes} ood levels (seed 0) "
    "and tested on as many other levels (seed 1), with a shuffled-label control; 95% bootstrap intervals "
    "(`workbench.rl.coinrun.probes.fit_coin_exit_readout`). `coin_right` is fitted where the coin is present. "
    f"Dashed: the ground truth (window of {2 * view + 1}x{2 * view + 1} cells centred on the agent)."
)

# ------------------------------------------------------------------------------------------------ steering
st.divider()
st.subheader("Coin-vector steering")
coef = float(st.slider("Coin-vector coefficient (0 = off)", -3.0, 3.0, 0.0, 0.25, key="coinrun_coef"))
with st.spinner("Steering this level..."):
    runs = common.coinrun_steer(ref, split, seed, coin, action_seed, layer, coef, episodes)
_, vec_info = common.coin_vector(ref, layer, episodes)
rows = []
for cond, tr in runs.items():
    r = tr.records
    row = {
        "condition": cond,
        "coin": bool(r.coin_collected[0]),
        "exit": bool(r.exit_reached[0]),
        "exit without coin": bool(r.exit_without_coin[0]),
        "died": bool(r.died[0]),
        "steps": int(r.length[0]),
        "end cell": str(tuple(int(v) for v in tr.path()[-1])),
    }
    if readout.probes and tr.activations is not None:
        for target, p in readout.read(tr.activations).items():
            row[f"mean P({target})"] = float(p.mean())
    rows.append(row)
st.dataframe(pd.DataFrame(rows), hide_index=True, key="coinrun_steer_table")
common.show_figure(
    draw_paths(
        level,
        {cond: tr.path() for cond, tr in runs.items()},
        f"coin vector x {coef:+g} at {layer.split('embedder.')[-1]}: baseline, steered and random control",
    )
)
st.caption(
    f"The coin vector: mean of act(coin in view) - act(same state, coin removed) over {vec_info['pairs']} paired "
    f"states of {vec_info['episodes']} ood levels (norm {vec_info['norm']:.3f}; `coin_direction`). Each condition "
    "plays this level with the same action seed; `control` adds a random Gaussian vector of the same norm "
    "(`steer_level`). Mean P(...) are the probes above read along each run."
)

n_batch = common.coinrun_batch_levels()
if st.checkbox(f"Batch rates on {n_batch} {split} levels", value=True, key="coinrun_batch"):
    with st.spinner(f"Steering {n_batch} levels three ways..."):
        res = common.coinrun_batch(ref, split, n_batch, layer, coef, episodes)
    st.dataframe(pd.DataFrame(common.comparison_rows(res)), hide_index=True, key="coinrun_batch_table")
    st.caption(
        f"`compare_interventions` on {n_batch} {split} levels (the subject's world, seed 0; same action seed in every "
        "condition): Wilson 95% intervals for the rates, paired bootstrap 95% intervals for the differences. "
        f"Set `{common.COINRUN_BATCH_ENV}` for more levels."
    )
