"""Personas: the persona language model (artifacts/lms/persona-lm): truth vs agreement with the user; and any
language model folder with any dataset file (the "Your model and dataset" tab, `workbench.lm.study` verbs)."""

from __future__ import annotations

import sys
from pathlib import Path

_APP = str(Path(__file__).resolve().parents[1])
if _APP not in sys.path:
    sys.path.insert(0, _APP)

import common  # noqa: E402
import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from workbench import artifacts  # noqa: E402
from workbench.errors import WorkbenchError  # noqa: E402
from workbench.lm.corpus import PERSONAS  # noqa: E402
from workbench.lm.directions import VECTORS  # noqa: E402
from workbench.lm.evaluate import corpus_config  # noqa: E402
from workbench.lm.tokenizer import WordTokenizer  # noqa: E402

ORGANISM = "persona-lm"
GROUPS = [*PERSONAS, "none", "mixed"]  # the corpus's ood groups, in its order
MODEL_KEYS = ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "n_ctx", "d_vocab", "act_fn")

st.set_page_config(page_title="Personas - goal-workbench", layout="wide")
st.title("Personas")
st.markdown(
    "A small language model trained where the user's stated answer always matched the truth: *answer truthfully* "
    "and *agree with the user* earned the same loss. When the user is wrong they part, and persona cues in the "
    "prompt may pick which one the model follows."
)

root = artifacts.artifacts_root() / "lms"
names = artifacts.available("lms")
if not names:
    st.warning(
        f"No persona language model in `{common.rel(root)}` yet (the LM track, issue #5). "
        f"`{ORGANISM}`: {common.recipe_hint(ORGANISM)}. Then reload this page. The *Your model and dataset* "
        "section below works on any model folder."
    )
    name = None
else:
    name = st.selectbox("Language model", names, index=names.index(ORGANISM) if ORGANISM in names else 0, key="lm_name")


# ------------------------------------------------------------------------------------------------ card and evaluation
def card_and_evaluation(name: str, folder: Path) -> None:
    """The artifact's card, model and training tables, and its evaluation estimates (metrics.json)."""
    config = artifacts.read_config(folder)
    card_col, metrics_col = st.columns([3, 2])
    with card_col:
        st.subheader("Card")
        card = common.artifact_card(folder)
        if card.strip():
            st.markdown(card)
        else:
            st.info("This artifact has no card.md.")
    with metrics_col:
        st.subheader("Model")
        model = config.get("model", config)
        shown = {k: model[k] for k in MODEL_KEYS if k in model}
        if shown:
            st.dataframe(pd.DataFrame({"value": [str(v) for v in shown.values()]}, index=list(shown)))
        st.subheader("Training")
        training = artifacts.read_metrics(folder).get("training", {})
        shown = {k: training[k] for k in ("steps", "seconds", "params", "d_vocab", "machine") if k in training}
        if shown:
            st.dataframe(pd.DataFrame({"value": [str(v) for v in shown.values()]}, index=list(shown)))

    st.subheader("Evaluation (metrics.json)")
    metrics = artifacts.read_metrics(folder)
    rows = common.rate_rows(metrics) or common.estimate_rows(metrics)
    if not rows:
        st.info(f"No evaluation in metrics.json for `{name}`.")
    else:
        table = pd.DataFrame(rows)
        column = "metric" if "metric" in table else "outcome"
        metric_names = list(dict.fromkeys(table[column]))
        chosen = st.multiselect("Metrics", metric_names, default=metric_names, key=f"lm_metrics_{name}")
        st.dataframe(table[table[column].isin(chosen)], hide_index=True)
        st.caption("Estimates with 95% intervals (Wilson for rates), as the recipe's evaluation wrote them.")


# ------------------------------------------------------------------------------------------------ prompt playground
def playground(name: str, folder: Path) -> None:
    """Prompt, steer, and look inside the model: answers with and without a steering vector, per-token
    projections onto the vector, and the attention heads."""
    if not (folder / artifacts.WEIGHTS).is_file():
        st.info(f"The playground needs the model's weights: `{common.rel(folder / artifacts.WEIGHTS)}` is missing.")
        return
    try:
        ref = common.lm_ref(name)
        with st.spinner(f"Loading {name}..."):
            model = common.language_model(*ref)
    except (WorkbenchError, OSError) as err:
        st.info(f"The playground needs the model's weights: `{name}` could not be loaded ({err}).")
        return
    if not isinstance(model.tokenizer, WordTokenizer):
        st.info(f"`{name}` is not a persona-corpus model (no word tokenizer): the playground needs one.")
        return
    cfg = corpus_config(model)

    # Keep remembered numbers inside this model's ranges (another LM may have a smaller corpus).
    for key, top in (("persona_a", cfg.max_operand), ("persona_b", cfg.max_operand), ("persona_claim", cfg.max_answer)):
        if st.session_state.get(key, 0) > top:
            st.session_state[key] = top
    if st.session_state.get("persona_layer", 0) > model.n_layers - 1:
        st.session_state["persona_layer"] = model.n_layers - 1

    q_col, p_col, s_col = st.columns(3)
    with q_col:
        st.markdown("**Question**")
        n1, n2 = st.columns(2)
        a = int(
            n1.number_input("a", min_value=0, max_value=cfg.max_operand, value=min(3, cfg.max_operand), key="persona_a")
        )
        b = int(
            n2.number_input("b", min_value=0, max_value=cfg.max_operand, value=min(4, cfg.max_operand), key="persona_b")
        )
        has_claim = st.checkbox("The user states an answer", value=True, key="persona_has_claim")
        wrong = a + b + 1 if a + b + 1 <= cfg.max_answer else a + b - 1
        claim_value = int(
            st.number_input(
                f"User's claim (true sum: {a + b})",
                min_value=0,
                max_value=cfg.max_answer,
                value=wrong,
                step=1,
                key="persona_claim",
                disabled=not has_claim,
            )
        )
    claimed = claim_value if has_claim else None
    with p_col:
        st.markdown("**Persona cue**")
        group = st.selectbox("Persona", GROUPS, index=GROUPS.index("teacher"), key="persona_group")
        header = style = ""
        if group in PERSONAS:
            cue = st.radio("Cue", ["header", "style"], horizontal=True, key="persona_cue")
            header, style = (group, "") if cue == "header" else ("", group)
        elif group == "mixed":
            header = st.selectbox("Header persona", PERSONAS, index=0, key="persona_mixed_header")
            others = [p for p in PERSONAS if p != header]
            style = st.selectbox("Style of the earlier exchange", others, index=0, key=f"persona_mixed_style_{header}")
        st.caption(
            "`header`: a `[ persona ]` line; `style`: an earlier exchange (with a correct claim) in the persona's "
            "words. `none`: no cue; `mixed`: the header names one persona, the earlier exchange is in another's style."
        )
    with s_col:
        st.markdown("**Steering**")
        vector = st.selectbox("Vector", VECTORS, index=VECTORS.index("sycophancy"), key="persona_vector")
        layer = int(st.slider("Layer", 0, model.n_layers - 1, min(1, model.n_layers - 1), key="persona_layer"))
        coef = float(st.slider("Coefficient (0 = off)", -4.0, 4.0, -1.0, 0.25, key="persona_coef"))
        st.caption(
            "Adds coefficient x vector to the residual stream after block *layer*, at the positions from the final "
            "`assistant` on (`workbench.lm.steering.steer_hooks`). Vectors (`workbench.lm.directions.direction`, "
            "200 header-cued prompts a side, seed 1000): `sycophancy` = mean(sycophant) - mean(honest) on the same "
            "wrong-claim questions (+ pushes towards agreeing, - towards the truth); `claim-wrong` = mean(wrong "
            "claim) - mean(correct claim); a persona = mean(that persona) - mean(the other three)."
        )

    try:
        example = common.persona_prompt(ref, a, b, claimed, header, style)
        with st.spinner(f"Fitting the {vector} vector and answering..."):
            answers = common.persona_answers(ref, vector, layer, coef, a, b, claimed, header, style)
    except WorkbenchError as err:
        st.error(str(err))
        return

    st.markdown("**Prompt** (built by `workbench.lm.steering.custom_example` from the corpus's templates)")
    st.code(example.prompt, language=None, wrap_lines=True)
    norm = float(common.lm_vector(ref, vector)[layer].norm())
    labels = {"none": "No steering", "steered": f"Steered ({vector} x{coef:+g})", "random": "Random vector (control)"}
    for col, row in zip(st.columns(3), answers.itertuples(), strict=True):
        with col:
            st.metric(labels[row.condition], row.answer)
            st.markdown(f"`{row.reply}`")
            if not pd.isna(row.logit_diff):
                st.caption(f"logit(true) - logit(claim): {row.logit_diff:+.2f}; P(true) {row.p_true:.2f}")
    st.dataframe(answers.round(3), hide_index=True)
    st.caption(
        f"Greedy answers for one prompt. True sum: {example.answer}"
        + (f"; the user claimed {claimed}." if claimed is not None else "; no claim.")
        + f" The random vector has the same norm as the {vector} vector at layer {layer} ({norm:.2f}) and the same "
        "coefficient: an answer that changes under both is a push of that size, not this direction. One prompt is an "
        "anecdote; `workbench lm steer` measures rates with 95% intervals over hundreds."
    )

    st.subheader(f"Per-token projection onto the {vector} vector, layer {layer}")
    tokens, values = common.token_projections(ref, example.prompt, vector, layer)
    proj = pd.DataFrame({"token": [f"{i:02d} {t}" for i, t in enumerate(tokens)], "projection": values})
    st.bar_chart(proj, x="token", y="projection", sort=False, height=260)
    st.caption(
        "Residual stream after block *layer* at every prompt token, projected onto the unit vector (activation units; "
        "no steering). The vector was fitted at the last position (`:`), where the answer is decided."
    )

    st.subheader("Attention")
    attn_layer = int(
        st.selectbox("Attention layer", list(range(model.n_layers)), index=layer, key="persona_attn_layer")
    )
    with st.spinner("Rendering the attention view..."):
        st.iframe(common.attention_page(ref, example.prompt, attn_layer), height=1000)  # components.html: deprecated
    st.caption(
        "circuitsvis attention heads of the prompt above (no steering), its JavaScript inlined: nothing is fetched. "
        "Click a head to enlarge it; hover a token to see where it attends."
    )


# ------------------------------------------------------------------------------------------------ any model + dataset
def _mtime(path: str) -> float:
    """Modification time of a model folder's weights or a dataset file (0 when absent): part of every cache key."""
    p = Path(path)
    for f in (p / "model.safetensors", p / artifacts.WEIGHTS, p):
        if f.exists():
            return f.stat().st_mtime
    return 0.0


@st.cache_resource(show_spinner=False, max_entries=2)
def toolkit_model(ref: str, mtime: float):
    """`workbench.lm.model.load_lm` on a name or folder (one live model per version)."""
    from workbench.lm.model import load_lm

    return load_lm(ref)


@st.cache_data(show_spinner=False, max_entries=16)
def toolkit_directions(ref: str, mtime: float, dataset: str, dmtime: float, method: str, position: str) -> dict:
    from workbench.lm.datasets import load_dataset
    from workbench.lm.study import check_position, directions_study

    ds = load_dataset(dataset)
    return directions_study(toolkit_model(ref, mtime), ds, method, [check_position(position)], n_boot=300)


@st.cache_data(show_spinner=False, max_entries=16)
def toolkit_steer(
    ref: str, mtime: float, dataset: str, dmtime: float, method: str, position: str, layer: int, coef: float
) -> dict:
    from workbench.lm.datasets import load_dataset
    from workbench.lm.study import check_position, steer_study

    ds = load_dataset(dataset)
    return steer_study(toolkit_model(ref, mtime), ds, layer, (coef,), method=method, position=check_position(position))


@st.cache_data(show_spinner=False, max_entries=32)
def toolkit_generate(
    ref: str, mtime: float, dataset: str, dmtime: float, method: str, position: str, layer: int, coef: float, text: str
) -> pd.DataFrame:
    from workbench.interventions import random_like
    from workbench.lm.datasets import load_dataset
    from workbench.lm.interventions import add_spec
    from workbench.lm.study import direction_vectors
    from workbench.lm.toolkit import greedy

    lm = toolkit_model(ref, mtime)
    v = direction_vectors(lm, load_dataset(dataset), method, position)[layer]
    rows = []
    for condition, spec in (
        ("none", None),
        ("steered", add_spec(layer, v, coef)),
        ("random", add_spec(layer, random_like(v, 0), coef)),
    ):
        rows.append({"condition": condition, "continuation": greedy(lm, [text], 12, spec)[0]})
    return pd.DataFrame(rows)


def your_model_and_dataset() -> None:
    """Directions, a steering check and free prompts on any model folder with any dataset file (JSONL formats of
    `workbench.lm.datasets`)."""
    st.markdown(
        "Any model `workbench.lm.model.load_lm` reads (a shipped name, an artifact folder, a Hugging Face folder) and "
        "any dataset file in the documented JSONL formats: contrast pairs `{positive, negative[, question, system]}`, "
        "A/B questions `{question, answer_matching_behavior, answer_not_matching_behavior}` or labelled prompts "
        "`{text, label}`. The CLI runs the same verbs: `workbench lm directions|steer|ablate|monitor MODEL --dataset "
        "FILE`."
    )
    m_col, d_col = st.columns(2)
    ref = m_col.text_input("Model (name or folder)", key="tk_model").strip()
    dataset = d_col.text_input("Dataset (JSONL file)", key="tk_dataset").strip()
    if not ref or not dataset:
        st.caption("Give a model and a dataset file to fit directions and steer.")
        return
    o1, o2, o3 = st.columns(3)
    method = o1.selectbox("Direction", ["mean-diff", "pca", "logistic"], key="tk_method")
    position = o2.selectbox("Read at", ["-1", "mean"], key="tk_position")
    try:
        with st.spinner(f"Loading {ref}..."):
            lm = toolkit_model(ref, _mtime(ref))
        from workbench.lm.datasets import load_dataset

        ds = load_dataset(dataset)
        key = (ref, _mtime(ref), dataset, _mtime(dataset), method, position)
        with st.spinner("Fitting a direction per layer..."):
            result = toolkit_directions(*key)
    except (WorkbenchError, OSError) as err:
        st.error(str(err))
        return
    o3.metric("Records", f"{len(ds)} ({ds.summary()['format']})")
    st.subheader("Directions: held-out AUROC per layer")
    table = pd.DataFrame(result["rows"])
    st.dataframe(table.round(3), hide_index=True)
    st.line_chart(table.set_index("layer")[["auroc", "control_auroc"]], height=220)
    st.caption(
        f"{method} direction of the residual stream after each block, fitted on half the records and scored on the "
        "other half; the control is the same method fitted on permuted labels. Brackets of the CLI are ci_low/ci_high."
    )
    if ds.kind not in ("ab", "contrast") or (ds.kind == "contrast" and not all(r.get("question") for r in ds.records)):
        st.info("Steering needs a behaviour: A/B questions or contrast pairs with a question (or the CLI's --scorer).")
        return
    s1, s2 = st.columns(2)
    layer = int(s1.slider("Steering layer", 0, lm.n_layers - 1, min(1, lm.n_layers - 1), key="tk_layer"))
    coef = float(s2.slider("Coefficient", -4.0, 4.0, 1.0, 0.5, key="tk_coef"))
    try:
        with st.spinner("Steering the held-out records..."):
            steer = toolkit_steer(*key, layer, coef)
    except WorkbenchError as err:
        st.error(str(err))
        return
    rows = [{"condition": "baseline", **_summary(steer["baseline"])}]
    for c in steer["conditions"]:
        rows.append({"condition": f"steered x{c['coef']:+g}", **_summary(c["steered"])})
        rows.append({"condition": f"random x{c['coef']:+g}", **_summary(c["control"])})
    st.subheader("Steering on the held-out records")
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.caption(
        f"Behaviour: {steer['behaviour']}. Δ are paired differences against the baseline (95% bootstrap CI); the "
        "random vector has the steering vector's norm. Cost: cross-entropy on neutral text "
        f"({steer['neutral']['source']}) and KL to the unsteered model."
    )
    text = st.text_input("Prompt to continue", value=result_prompt(ds, lm), key="tk_prompt")
    if text:
        try:
            st.dataframe(toolkit_generate(*key, layer, coef, text), hide_index=True)
        except WorkbenchError as err:
            st.error(str(err))


def _summary(cond: dict) -> dict:
    out = {
        "behaviour": round(cond["behaviour"]["mean"], 3),
        "trait rate": round(cond["trait_rate"]["rate"], 3),
        "CE": round(cond["ce"]["mean"], 3),
        "KL": round(cond["kl"]["mean"], 4),
    }
    if "minus_baseline" in cond:
        d = cond["minus_baseline"]["behaviour"]
        out["Δ behaviour [95% CI]"] = f"{d['diff']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
    return out


def result_prompt(ds, lm) -> str:
    from workbench.lm.datasets import prompts

    try:
        return prompts(lm, ds)[0]
    except (WorkbenchError, IndexError):
        return ""


if name is not None:
    folder = artifacts.resolve(name, "lms")
    play_tab, card_tab, tk_tab = st.tabs(["Prompt playground", "Card and evaluation", "Your model and dataset"])
    with play_tab:
        playground(name, folder)
    with card_tab:
        card_and_evaluation(name, folder)
    with tk_tab:
        your_model_and_dataset()
else:
    st.subheader("Your model and dataset")
    your_model_and_dataset()
