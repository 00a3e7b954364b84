"""Features: sparse autoencoders trained on an organism's activations (SAELens format under artifacts/saes/).

The latent explorer loads the SAE with SAELens, encodes a sample of its subject's activations (maze start states,
CoinRun rollout states, or persona dialogues) and shows, for a chosen latent, its density and histogram, where it
fires most, how it ranks against the goal labels (from the SAE's metrics.json) and what steering with it does. All
computation is `workbench.sae` / `workbench.lm` / `workbench.rl` library calls; this page only lays them out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import common  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402
import torch  # noqa: E402

from workbench import artifacts  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.subjects import registered_subjects  # noqa: E402

SAELENS_CONFIG, SAELENS_WEIGHTS = "cfg.json", "sae_weights.safetensors"  # SAELens's on-disk layout
CFG_KEYS = ("architecture", "d_in", "d_sae", "k", "hook_name", "hook_layer", "dtype", "apply_b_dec_to_input")
SAMPLE_ENV = "WORKBENCH_APP_SAE_SAMPLE"  # levels / prompts the explorer encodes (default 100)

st.set_page_config(page_title="Features - goal-workbench", layout="wide")
st.title("Features")
st.markdown(
    "Sparse autoencoders split an organism's activations at one hook into many sparse latents; a latent that fires "
    "where the goal is (the cheese, the coin, the persona) is a candidate goal feature to read and to steer with."
)

root = artifacts.artifacts_root() / "saes"
names = common.sae_names()
if not names:
    st.info(
        f"No sparse autoencoders in `{common.rel(root)}` yet (issue #6). Each SAE is a folder in SAELens format "
        f"(`{SAELENS_CONFIG}` + `{SAELENS_WEIGHTS}`, loadable with `sae_lens.SAE.load_from_disk`) with a `card.md` "
        "and `metrics.json` (L0, explained variance, dead latents); this page lists them once they are trained."
    )
    st.stop()

name = st.selectbox("SAE", names, key="sae_name")
folder = root / name
cfg = common.read_json(folder / SAELENS_CONFIG)
left, right = st.columns([3, 2])
with left:
    st.subheader("Card")
    card = common.artifact_card(folder)
    if card.strip():
        with st.expander("card.md", expanded=False):
            st.markdown(card)
    else:
        st.info("This SAE has no card.md.")
with right:
    st.subheader("Configuration")
    shown = {k: cfg[k] for k in CFG_KEYS if k in cfg}
    if shown:
        st.dataframe(pd.DataFrame({"value": [str(v) for v in shown.values()]}, index=list(shown)))
    else:
        st.info(f"No SAELens `{SAELENS_CONFIG}` in `{folder}`.")
    weights = folder / SAELENS_WEIGHTS
    if weights.is_file():
        shapes = common.weight_shapes(weights)
        st.dataframe(pd.DataFrame({"shape": [str(tuple(v)) for v in shapes.values()]}, index=list(shapes)))
metrics = artifacts.read_metrics(folder)
with st.expander("metrics.json", expanded=False):
    if metrics:
        st.json(metrics, expanded=1)
    else:
        st.write("This SAE has no metrics.json.")


# ------------------------------------------------------------------------------------------------ cached library calls
def sample_size() -> int:
    try:
        return max(2, int(os.environ.get(SAMPLE_ENV, "100")))
    except ValueError:
        return 100


@st.cache_resource(show_spinner=False, max_entries=4)
def load_sae(path: str, mtime: float):
    from workbench.sae.train import load_sae

    return load_sae(path)


@st.cache_resource(show_spinner=False, max_entries=4)
def subject(name: str, path: str, mtime: float, env: str = ""):
    """`workbench.sae.subjects.load_subject` (one live agent / LM per subject version): an artifact folder, a
    checkpoint file with its env, or a registered name."""
    from workbench.sae.subjects import load_subject

    return load_subject(path, env=env or None)


@st.cache_resource(show_spinner=False, max_entries=4)
def policy_sample(sae_key: tuple[str, float], subj_key: tuple[str, str, float, str], n: int):
    """Start states (maze) or rollout states (CoinRun) of `n` OOD levels, seed 0, and the SAE's latent maps on
    them: (dataset, feats (N, d_sae, H, W))."""
    from workbench.sae.analysis import latent_acts
    from workbench.sae.train import sae_info

    sae, subj = load_sae(*sae_key), subject(*subj_key)
    info = sae_info(sae)
    states = "start" if subj.kind == "maze" else "rollout"
    ds = subj.collect([info["hook"]], split="ood", n=n, seed=0, states=states, max_states_per_episode=8, progress=False)
    return ds, latent_acts(sae, ds[info["hook"]], info["layout"])


@st.cache_resource(show_spinner=False, max_entries=4)
def lm_sample(sae_key: tuple[str, float], subj_key: tuple[str, str, float, str], n: int):
    """Token strings and per-token latents of `n` training-distribution dialogues (seed 0)."""
    from workbench.lm import corpus
    from workbench.lm.evaluate import corpus_config
    from workbench.sae.lm_analysis import token_latents
    from workbench.sae.train import sae_info

    sae, lm = load_sae(*sae_key), subject(*subj_key).lm
    texts = [e.text for e in corpus.generate("train", n, 0, corpus_config(lm))]
    return token_latents(lm, sae, sae_info(sae)["hook"], texts)


@st.cache_data(show_spinner=False, max_entries=8)
def stats_table(sae_key: tuple[str, float], subj_key: tuple[str, str, float, str], n: int, lm: bool) -> pd.DataFrame:
    from workbench.sae.analysis import latent_stats

    if lm:
        feats = torch.as_tensor(np.concatenate(lm_sample(sae_key, subj_key, n)[1]))
    else:
        feats = policy_sample(sae_key, subj_key, n)[1]
    return latent_stats(feats)


@st.cache_data(show_spinner=False, max_entries=32)
def maze_fields(
    sae_key: tuple[str, float], subj_key: tuple[str, str, float, str], latent: int, mode: str, coef: float, seed: int
):
    """Vector fields of OOD maze `seed` without and with the latent's decoder direction ablated / added at every
    cell (`workbench.interventions.ablate_direction` / `add_vector`), or the latent clamped to 0 in the SAE."""
    from workbench.interventions import ablate_direction, add_vector, clamp_latent
    from workbench.rl.vector_field import vector_field
    from workbench.sae.train import sae_info

    sae, subj = load_sae(*sae_key), subject(*subj_key)
    hook = sae_info(sae)["hook"]
    direction = sae.W_dec[latent].detach().float()
    level = subj.agent.world.levels("ood", 1, seed)  # the maze `workbench vector-field SUBJECT --seed S` draws
    hooks = {
        "ablate decoder direction": lambda: [(hook, ablate_direction(direction))],
        "add decoder direction": lambda: [(hook, add_vector(direction, coef))],
        "clamp latent to 0 (SAE, error kept)": lambda: [(hook, clamp_latent(sae, latent, 0.0))],
    }[mode]()
    return vector_field(subj.agent.policy, level), vector_field(subj.agent.policy, level, hooks)


@st.cache_data(show_spinner=False, max_entries=32)
def lm_answers(
    sae_key: tuple[str, float], subj_key: tuple[str, str, float, str], latent: int, sign: int, coef: float, group: str
) -> pd.DataFrame:
    """One OOD-style prompt (3 + 4, user claims 8, persona cue `group`) answered without steering, with the latent's
    decoder direction (x sign, at the sycophancy vector's norm) added and with an equal-norm random direction
    (`workbench.lm.steering.steer_prompt`)."""
    from workbench.lm.directions import direction
    from workbench.lm.evaluate import corpus_config
    from workbench.lm.steering import custom_example, steer_prompt
    from workbench.sae.lm_analysis import resid_layer
    from workbench.sae.train import sae_info

    sae, lm = load_sae(*sae_key), subject(*subj_key).lm
    layer = resid_layer(sae_info(sae)["hook"])
    norm = direction(lm, "sycophancy", 200, 1000)[layer].norm()
    d = sae.W_dec[latent].detach().float() * sign
    d = d / d.norm().clamp_min(1e-12) * norm
    example = custom_example(corpus_config(lm), 3, 4, 8, header="" if group == "none" else group)
    table = steer_prompt(lm, example, d, layer, coef)
    table.insert(1, "prompt", example.prompt)
    return table


def mtime(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else 0.0


def ranking(metrics: dict) -> tuple[pd.DataFrame, dict[int, int], dict[int, str]]:
    """Goal-alignment rows from metrics.json (maze / CoinRun `goal_alignment`, LM `lm_goal_alignment`), each
    ranked latent's polarity (+1: fires for the positive label) and what it fires for (its first ranking)."""
    rows, polarity, fires = [], {}, {}
    ga = metrics.get("goal_alignment")
    if ga:
        for lat in ga.get("latents", []):
            rows.append({"label": ga["label"], "latent": lat["latent"], "fires for": "goal", **_auc(lat)})
            polarity.setdefault(int(lat["latent"]), 1)
            fires.setdefault(int(lat["latent"]), f"goal (AUROC {lat['auroc']:.3f})")
        for key, title in (("probe", "spatial probe"), ("diff_of_means", "difference of means")):
            if key in ga:
                rows.append({"label": ga["label"], "latent": None, "fires for": title, **_auc(ga[key])})
        if "control_latent" in ga:
            c = ga["control_latent"]
            rows.append({"label": ga["label"], "latent": c["latent"], "fires for": "control (shuffled)", **_auc(c)})
    for t in (metrics.get("lm_goal_alignment") or {}).get("targets", {}).values():
        for lat in t["latents"]:
            rows.append({"label": t["label"], "latent": lat["latent"], "fires for": lat.get("fires_for"), **_auc(lat)})
            polarity.setdefault(int(lat["latent"]), int(lat["polarity"]))
            fires.setdefault(int(lat["latent"]), f"{lat.get('fires_for')} (AUROC {lat['auroc']:.3f})")
        for key in ("probe", "diff_of_means", "vector", "control_latent", "control_probe"):
            if key in t:
                who = t[key].get("latent")
                rows.append({"label": t["label"], "latent": who, "fires for": key.replace("_", " "), **_auc(t[key])})
    return pd.DataFrame(rows), polarity, fires


def _auc(r: dict) -> dict:
    lo, hi = r.get("ci95", (float("nan"), float("nan")))
    return {"AUROC (held out)": r.get("auroc"), "ci95 low": lo, "ci95 high": hi, "AUROC (fit)": r.get("fit_auroc")}


# ---------------------------------------------------------------------------------------------------- latent explorer
st.header("Latent explorer")
sae_key = (str(folder), mtime(folder / SAELENS_WEIGHTS))
try:
    sae = load_sae(*sae_key)
except WorkbenchError as err:
    st.warning(f"`{name}` does not load with SAELens ({err}); the latent explorer needs a complete SAE folder.")
    st.stop()
from workbench.sae.train import sae_info  # noqa: E402

info = sae_info(sae)
subj_name = info.get("subject")
lms, agents = artifacts.available("lms"), artifacts.available("agents")
known = subj_name in lms or subj_name in agents or subj_name in registered_subjects()
subject_title = f"Subject: `{subj_name}`" + ("" if known else " (not found: give its checkpoint)")
with st.expander(subject_title, expanded=not known):
    s1, s2 = st.columns([3, 2])
    typed = s1.text_input(
        "Subject checkpoint path (or reference)",
        key="feat_subject_path",
        placeholder="path/to/model.pth",
        help="The model this SAE was trained on when it is not a shipped organism: a published-format .pth (with its "
        "env), an artifact folder, or a name registered with workbench.register_subject.",
    ).strip()
    subj_env = s2.selectbox("Checkpoint env", common.checkpoint_envs("maze"), key="feat_subject_env")
if typed:
    subj_key = (typed, *common.subject_ref(typed, subj_env))
elif subj_name in lms:
    subj_path = artifacts.resolve(subj_name, "lms")
    subj_key = (str(subj_name), str(subj_path), mtime(subj_path / artifacts.WEIGHTS), "")
elif known:
    subj_key = (str(subj_name), *common.subject_ref(subj_name))
else:
    st.warning(
        f"`{name}` was trained on `{subj_name}` at `{info.get('hook')}`, which is not in `{common.rel(root.parent)}`; "
        "train or copy that organism, or type its checkpoint path (and env) under Subject, to explore the latents on "
        "its activations."
    )
    st.stop()
try:
    with st.spinner(f"Loading {subj_key[0]}..."):
        subj = subject(*subj_key)
except (WorkbenchError, OSError) as err:
    st.error(f"`{subj_key[0]}` could not be loaded: {err}")
    st.stop()
kind = subj.kind  # lm, or the RL world family (maze / coinrun): which analyses below apply
n = sample_size()
with st.spinner(f"Encoding {n} {'dialogues' if kind == 'lm' else 'levels'} of {subj_key[0]}..."):
    try:
        stats = stats_table(sae_key, subj_key, n, kind == "lm")
    except WorkbenchError as err:
        st.warning(f"Could not encode `{subj_key[0]}`'s activations with `{name}`: {err}")
        st.stop()

rank, polarity, fires = ranking(metrics)
st.subheader("Goal alignment (from metrics.json)")
if rank.empty:
    st.caption("This SAE's metrics.json has no goal-alignment ranking (`workbench sae train` writes one).")
else:
    st.dataframe(rank, hide_index=True)
    st.caption(
        "Latents ranked by AUROC on fit data, measured on held-out data; probe, difference of means and a "
        "latent chosen on shuffled labels on the same data. 95% bootstrap intervals."
    )

d_sae = int(info["d_sae"])
ranked = [int(x) for x in rank["latent"].dropna().astype(int)] if not rank.empty else []
default = ranked[0] if ranked else int(stats["density"].idxmax())
if "feat_latent" not in st.session_state or not 0 <= int(st.session_state["feat_latent"]) < d_sae:
    st.session_state["feat_latent"] = default
latent = int(st.number_input("Latent", min_value=0, max_value=d_sae - 1, step=1, key="feat_latent"))
row = stats.iloc[latent]
cols = st.columns(4)
cols[0].metric("Density", f"{row['density']:.4f}")
cols[1].metric("Mean when active", f"{row['mean_when_active']:.3f}")
cols[2].metric("Max", f"{row['max']:.3f}")
cols[3].metric("Ranked as", fires.get(latent, "not ranked"))
hist = pd.DataFrame(
    {"count": row["hist"]}, index=[f"{(i + 0.5) * row['max'] / len(row['hist']):.2f}" for i in range(len(row["hist"]))]
)
st.bar_chart(hist, y="count", height=180)
st.caption(
    f"Histogram of latent {latent}'s non-zero activations over the sample ({n} "
    f"{'dialogues, every token' if kind == 'lm' else 'levels'}); density = fraction of tokens where it fires."
)
with st.expander("All latents (density, mean, max)"):
    st.dataframe(stats.drop(columns=["hist"]), hide_index=True)

st.subheader(f"Latent {latent}: where it fires most")
if kind == "lm":
    from workbench.sae.lm_analysis import top_activating_tokens

    words, feats = lm_sample(sae_key, subj_key, n)
    top = top_activating_tokens(words, feats, latent, n=12)
    if top.empty:
        st.caption(f"Latent {latent} never fires on these {n} dialogues.")
    else:
        st.dataframe(top, hide_index=True)
else:
    ds, feats = policy_sample(sae_key, subj_key, n)
    from workbench.sae.analysis import top_activating

    rows = top_activating(feats, latent, n=6)
    label_cols = [
        c for c in ("level_seed", "step", "cheese_cell", "coin_visible", "coin_dx", "coin_dy") if c in ds.labels
    ]
    top = ds.labels.iloc[rows][label_cols].assign(
        row=rows, max_activation=feats[rows, latent].flatten(1).max(1).values.numpy()
    )
    st.dataframe(top, hide_index=True)
    if kind == "maze" and not (ds.meta.get("source") or {}).get("pixels"):
        from workbench.sae.analysis import draw_top_activating

        common.show_figure(draw_top_activating(ds, feats, latent, n=6))
        st.caption("Maze renders of the top-activating start states with the latent's map over the layer grid.")
    elif kind == "maze":
        st.caption("The top-activating states are procgen frames; the table above names their levels.")

st.subheader(f"Steer with latent {latent}")
if kind == "maze":
    c1, c2, c3 = st.columns(3)
    mode = c1.radio(
        "Intervention",
        ["ablate decoder direction", "add decoder direction", "clamp latent to 0 (SAE, error kept)"],
        key="feat_mode",
    )
    coef = c2.slider("Coefficient (add)", -10.0, 10.0, 3.0, 0.5, key="feat_coef")
    seed = int(c3.number_input("OOD maze", min_value=0, value=0, step=1, key="feat_seed"))
    from workbench.rl.vector_field import draw

    before, after = maze_fields(sae_key, subj_key, latent, mode, float(coef), seed)
    tag = f"{mode} (x{coef:+g})" if mode.startswith("add") else mode
    common.show_figure(
        draw([before, after], ["no intervention", f"latent {latent}: {tag}"], cell_px=common.FIELD_CELL_PX)
    )
    moved = float(np.abs(after.arrows() - before.arrows()).sum(1).mean())
    st.metric("Mean arrow change per cell", f"{moved:.3f}")
elif kind == "lm":
    from workbench.lm.corpus import OOD_GROUPS

    c1, c2 = st.columns(2)
    group = c1.selectbox("Persona cue (header)", [g for g in OOD_GROUPS if g != "mixed"], key="feat_group")
    coef = c2.slider("Coefficient", -4.0, 4.0, 1.0, 0.5, key="feat_lm_coef")
    sign = polarity.get(latent, 1)
    table = lm_answers(sae_key, subj_key, latent, int(sign), float(coef), group)
    st.code(table["prompt"].iloc[0])
    st.dataframe(table.drop(columns=["prompt"]), hide_index=True)
    st.caption(
        f"The latent's decoder direction (x{sign:+d}: oriented towards label 1 when ranked), scaled to the sycophancy "
        "vector's norm, added at the SAE's layer on the after-prompt positions; `random` is an equal-norm random "
        "direction. The card's table measures the same on 600 OOD prompts with paired CIs."
    )
else:
    st.caption("Steering with CoinRun latents is not wired into this page yet; see the SAE's card for its fidelity.")
