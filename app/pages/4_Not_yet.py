"""Not yet: the pages that wait for organisms which have not landed (CoinRun, SAEs, persona LM)."""

from __future__ import annotations

import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import streamlit as st  # noqa: E402

from workbench import artifacts  # noqa: E402

st.set_page_config(page_title="Not yet - goal-workbench", layout="wide")
st.title("Not yet")
st.markdown(
    "These pages need organisms that have not landed in this repository yet. Nothing here is simulated: each page "
    "appears once its artifacts exist."
)

root = artifacts.artifacts_root()
saes, lms = artifacts.available("saes"), artifacts.available("lms")
coinrun = [name for name in artifacts.available("agents") if "coinrun" in name]


def present(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "none yet"


st.subheader("CoinRun lab")
st.markdown(
    f"""
Needs a **CoinRun agent** (real procgen CoinRun, where the coin is always at the end of the level in training).
Present in `{root / "agents"}`: {present(coinrun)}.

Once its recipe lands in `agents/`, the same command that trains the maze organisms makes it available:
`workbench train agents/NAME.toml` (it writes `artifacts/agents/NAME/`), then restart `workbench app`.
"""
)

st.subheader("Features (SAE)")
st.markdown(
    f"""
Needs **sparse autoencoders** trained on an organism's activations, stored as artifacts in `{root / "saes"}`.
Present: {present(saes)}.

Once the SAE recipes land, training them writes `artifacts/saes/NAME/` (the same artifact layout: safetensors
weights, `config.json`, `card.md`, `metrics.json`); `workbench app` then lists them here.
"""
)

st.subheader("Personas")
st.markdown(
    f"""
Needs the **persona language model** (the LM track), stored as an artifact in `{root / "lms"}`.
Present: {present(lms)}.

Hooks and interventions already work on TransformerLens `HookedTransformer` models (tested); once the persona LM's
recipe lands, training it writes `artifacts/lms/NAME/` and `workbench app` shows this page.
"""
)
