"""Probes & batteries: browse the results store (one row per measurement) and plot probe metrics per layer."""

from __future__ import annotations

import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import streamlit as st  # noqa: E402

from workbench.errors import WorkbenchError  # noqa: E402
from workbench.store import ResultStore, default_store_path  # noqa: E402

plt.switch_backend("Agg")  # figures are rendered to images for st.pyplot; never open a window
st.set_page_config(page_title="Probes & batteries - goal-workbench", layout="wide")
st.title("Probes & batteries")

HOW = "Run `workbench demo` or `workbench battery run probes/` to record results."
path_text = st.text_input("Results store", value=str(default_store_path()), key="store_path")
path = Path(path_text).expanduser()
if not path.is_file():
    st.info(f"No results store at `{path}` yet. {HOW}")
    st.stop()

try:
    with ResultStore(path, read_only=True) as store:
        results = store.query()
        runs = store.runs()
except WorkbenchError as err:
    st.warning(f"{err}. If a run is writing to it right now, wait for it to finish and reload.")
    st.stop()

if results.empty:
    st.info(f"The results store at `{path}` has no rows yet. {HOW}")
    st.stop()

f1, f2 = st.columns(2)
subjects = sorted(results["subject"].dropna().unique())
chosen = f1.multiselect("Subject", subjects, default=subjects, key="store_subjects")
contains = f2.text_input("Metric contains", value="", key="store_metric_contains")
shown = results[results["subject"].isin(chosen)]
if contains:
    shown = shown[shown["metric"].str.contains(contains, case=False, regex=False, na=False)]

st.subheader(f"Results ({len(shown)} of {len(results)} rows)")
st.dataframe(shown, hide_index=True)
st.subheader("Runs")
st.dataframe(runs[runs["run_id"].isin(shown["run_id"])], hide_index=True)

# ------------------------------------------------------------------------------------------------ probe metrics plot
probe_rows = shown[shown["metric"].str.startswith("probe.")].copy()
st.subheader("Probe metrics per layer")
if probe_rows.empty:
    st.info("No `probe.*` rows match the filters. `workbench demo` records cheese-location probes per layer.")
    st.stop()

# Metrics are named `probe.NAME.LAYER`, e.g. `probe.cheese_top1.embedder.block2.res1.resadd_out`.
parts = probe_rows["metric"].str.split(".", n=2)
probe_rows["probe"] = parts.str[1]
probe_rows["layer"] = parts.str[2].fillna("")
probe_runs = list(dict.fromkeys(probe_rows["run_id"]))
run = st.selectbox("Run", probe_runs[::-1], key="store_probe_run")
rows = probe_rows[probe_rows["run_id"] == run]
layers = list(dict.fromkeys(rows["layer"]))
x_of = {layer: i for i, layer in enumerate(layers)}

fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(layers)), 3.6))
groups = rows.groupby(["subject", "split", "probe"], sort=False, dropna=False)
for j, ((subject, split, probe), g) in enumerate(groups):
    x = np.array([x_of[layer] for layer in g["layer"]], dtype=float) + 0.08 * (j - (len(groups) - 1) / 2)
    y = g["value"].to_numpy(dtype=float)
    lo = g["ci_low"].to_numpy(dtype=float)
    hi = g["ci_high"].to_numpy(dtype=float)
    yerr = np.vstack([np.nan_to_num(y - lo, nan=0.0), np.nan_to_num(hi - y, nan=0.0)]).clip(min=0.0)
    ax.errorbar(x, y, yerr=yerr, marker="o", capsize=4, label=f"{subject} · {split} · {probe}")
ax.set_xticks(range(len(layers)), [layer.removeprefix("embedder.") for layer in layers], rotation=20, ha="right")
ax.set_ylabel("value (95% CI)")
ax.set_title(f"run {run}", fontsize=9)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
st.pyplot(fig)
plt.close(fig)
