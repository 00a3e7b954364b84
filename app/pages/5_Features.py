"""Features: sparse autoencoders trained on an organism's activations (SAELens format under artifacts/saes/).

The latent explorer loads the SAE with SAELens, encodes a sample of its subject's activations and shows, for a chosen
latent, its density and histogram, where it fires most, how it ranks against the goal labels (from the SAE's
metrics.json) and what steering with it does. What is sampled, how a top example looks and how steering works are the
subject kind's feature views (`workbench.sae.views.views_for`: maze start states and vector fields, CoinRun and any
other RL kind's rollout states and goal rates, persona dialogues and answers); this page lays out whatever they
return, for any kind, and draws their steering controls from their descriptions.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import common  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from workbench import artifacts  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.sae.views import Control, FeatureSample, FeatureViews, SteerResult, views_for  # noqa: E402
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


def views(subj_key: tuple[str, str, float, str]) -> FeatureViews:
    """The subject kind's feature views (`workbench.sae.views.views_for`: its own, or the generic RL ones)."""
    return views_for(subject(*subj_key))


@st.cache_resource(show_spinner=False, max_entries=4)
def feature_sample(sae_key: tuple[str, float], subj_key: tuple[str, str, float, str], n: int) -> FeatureSample:
    """The kind's sample (`FeatureViews.sample`, seed 0): `n` levels or dialogues encoded by the SAE."""
    return views(subj_key).sample(load_sae(*sae_key), subject(*subj_key), n)


@st.cache_data(show_spinner=False, max_entries=8)
def stats_table(sae_key: tuple[str, float], subj_key: tuple[str, str, float, str], n: int) -> pd.DataFrame:
    from workbench.sae.analysis import latent_stats

    return latent_stats(feature_sample(sae_key, subj_key, n).feats)


def figure_png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=common.FIG_DPI)
    common.close_figure(fig)
    return buf.getvalue()


@st.cache_data(show_spinner=False, max_entries=32)
def steered(
    sae_key: tuple[str, float],
    subj_key: tuple[str, str, float, str],
    latent: int,
    polarity: int,
    settings: tuple[tuple[str, object], ...],
) -> tuple[SteerResult, bytes | None]:
    """`FeatureViews.run_steer` with these settings; the figure comes back as a PNG (cached, drawn once)."""
    result = views(subj_key).run_steer(
        load_sae(*sae_key), subject(*subj_key), latent, polarity=polarity, **dict(settings)
    )
    png = None if result.figure is None else figure_png(result.figure)
    return replace(result, figure=None), png


def control_widget(control: Control, where):
    """Draw one steering `Control` (its key and default kept in the session state) and return its value."""
    if control.widget == "radio":
        options = list(control.options)
        return where.radio(control.label, options, index=options.index(control.default), key=control.key)
    if control.widget == "select":
        options = list(control.options)
        return where.selectbox(control.label, options, index=options.index(control.default), key=control.key)
    if control.widget == "slider":
        return where.slider(
            control.label,
            float(control.low),
            float(control.high),
            float(control.default),
            float(control.step or 0.5),
            key=control.key,
            help=control.help,
        )
    return int(
        where.number_input(
            control.label,
            min_value=None if control.low is None else int(control.low),
            max_value=None if control.high is None else int(control.high),
            value=int(control.default),
            step=1,
            key=control.key,
            help=control.help,
        )
    )


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


# ------------------------------------------------------------------------------------------------------ latent explorer
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
n = sample_size()
try:
    fv = views(subj_key)  # the subject kind's feature views: what is sampled, shown and steered below
    with st.spinner(f"Encoding {n} {fv.unit} of {subj_key[0]}..."):
        stats = stats_table(sae_key, subj_key, n)
        sample = feature_sample(sae_key, subj_key, n)
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
    f"Histogram of latent {latent}'s non-zero activations over the sample ({sample.note}); density = fraction of "
    "tokens where it fires."
)
with st.expander("All latents (density, mean, max)"):
    st.dataframe(stats.drop(columns=["hist"]), hide_index=True)

st.subheader(f"Latent {latent}: where it fires most")
top = fv.top_examples(sample, latent)
if not top.table.empty:
    st.dataframe(top.table, hide_index=True)
if top.figure is not None:
    common.show_figure(top.figure)
if top.caption:
    st.caption(top.caption)

st.subheader(f"Steer with latent {latent}")
if fv.steer is None:
    st.caption(f"Steering with latents is not available for {subj.kind} subjects; see the SAE's card for its fidelity.")
    st.stop()
cols = st.columns(max(len(fv.controls), 1))
settings = tuple((c.name, control_widget(c, cols[i])) for i, c in enumerate(fv.controls))
try:
    with st.spinner(f"Steering with latent {latent}..."):
        result, png = steered(sae_key, subj_key, latent, int(polarity.get(latent, 1)), settings)
except WorkbenchError as err:
    st.error(f"Steering with latent {latent} failed: {err}")
    st.stop()
if result.prompt is not None:
    st.code(result.prompt)
if png is not None:
    st.image(png)
if result.metrics:
    for col, (label, value) in zip(st.columns(len(result.metrics)), result.metrics.items(), strict=True):
        col.metric(label, value)
if result.table is not None:
    st.dataframe(result.table, hide_index=True)
if result.caption:
    st.caption(result.caption)
