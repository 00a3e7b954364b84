"""Feature views: what an SAE latent looks like on one kind of subject, as data and figures, with no UI in it.

Why a per-kind adapter: the Features page (and a notebook) asks the same three questions of every SAE -- which
activations to encode (maze start states, CoinRun rollout states, persona dialogues), what a top-activating example
looks like (a maze render, a label table, tokens in context) and what steering with the latent does (vector fields,
goal rates, answers) -- but the answers differ per subject kind. Each kind brings its answers as a `FeatureViews`
registered with it (`SubjectKind(features=...)`, built in the subject's own package: `workbench/rl/maze/features.py`,
`workbench/rl/coinrun/features.py`, `workbench/lm/features.py`); an RL kind without one gets the generic RL views
(`rl_views()` below: rollout states, the dataset's labels, decoder-direction steering on the world's goal
rates against an equal-norm random direction). `views_for(subject)` is the one lookup; nothing branches on a kind.

The same views carry what the SAE builder (`workbench sae train`) needs from a kind, so `workbench/sae/` names no
kind: the card analyses beyond reconstruction and fidelity (`card`: the maze's cheese alignment and steering
comparison, CoinRun's coin alignment, the LM's persona tables), the per-token goal labels of goal alignment
(`goal_cells`), and fidelity's scalar score and mean-ablation activation (`score`, `ablation_mean`; the generic
choice when None).

Steering inputs are described, not drawn: `Control`s name a keyword of `steer` and the widget key the app keeps in
its session state, so the page lays out any kind's controls with one loop and Python callers pass the same keywords.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.sae.goal_cells import GoalCells, goal_cells_of  # noqa: F401 (re-exported)

SPLIT = "ood"
"""The split every view samples and steers on: where the intended and proxy goals come apart."""
SAMPLE_SEED = 0
"""The level / prompt seed of every sample, so the page, a notebook and a test encode the same states."""

WIDGETS = ("radio", "select", "slider", "int")
"""How a `Control` is drawn: a radio group or a selectbox over `options`, a float slider, an integer input."""


@dataclass(frozen=True)
class Control:
    """One steering input: a keyword of the views' `steer` and how the app draws it.

    Attributes:
        name: the keyword `steer` takes (`coef`, `mode`, `seed`, ...).
        key: the widget's session-state key in the app (stable: tests and saved sessions set it).
        label: the widget's label.
        widget: one of WIDGETS.
        default: the value `steer` gets when the caller does not say.
        options: the choices of a `radio` / `select` control (empty otherwise).
        low: the smallest value of a `slider` / `int` control (None: unbounded `int`).
        high: the largest value of a `slider` / `int` control (None: unbounded `int`).
        step: the slider's step (1 for `int`).
        help: a tooltip line.
    """

    name: str
    key: str
    label: str
    widget: str
    default: Any
    options: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    step: float | None = None
    help: str | None = None

    def __post_init__(self) -> None:
        if self.widget not in WIDGETS:
            raise unknown("control widget", self.widget, WIDGETS)
        if self.widget in ("radio", "select") and self.default not in self.options:
            raise WorkbenchError(f"control {self.name!r}: default {self.default!r} is not one of {list(self.options)}")
        if self.widget == "slider" and (self.low is None or self.high is None):
            raise WorkbenchError(f"control {self.name!r}: a slider needs low and high")

    def check(self, value: Any) -> Any:
        """`value` if this control can take it; otherwise one line naming what it takes."""
        if self.widget in ("radio", "select"):
            if value not in self.options:
                raise unknown(self.name, str(value), [str(o) for o in self.options])
            return value
        try:
            number = int(value) if self.widget == "int" else float(value)
        except (TypeError, ValueError):
            raise WorkbenchError(f"{self.name} must be a number, got {value!r}") from None
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise WorkbenchError(f"{self.name} must be in [{self.low}, {self.high}], got {value!r}")
        return number


@dataclass
class FeatureSample:
    """A subject's activations encoded by an SAE: what the latent statistics and top examples are computed on.

    Attributes:
        feats: latent activations, one row per token or example: (N, d_sae, H, W) for conv rows in the position
            layout, (N, d_sae) for flat rows, (tokens, d_sae) for an LM (every token of every text, concatenated).
        n: how many levels / texts were encoded.
        unit: what one of the `n` is (`levels`, `dialogues`), for messages.
        note: how the sample was drawn, one phrase for captions (`rollout states of 100 OOD levels, seed 0`).
        data: what `top_examples` reads besides `feats`: the `ActivationDataset` (RL) or (token strings, per-text
            latents) (LM).
    """

    feats: Tensor
    n: int
    unit: str
    note: str
    data: Any = None


@dataclass
class TopExamples:
    """Where a latent fires most.

    Attributes:
        table: one row per example (empty when the latent never fires on the sample).
        figure: a matplotlib figure of the examples, or None.
        caption: what the table / figure show, one or two sentences.
    """

    table: pd.DataFrame
    figure: Any = None
    caption: str = ""


@dataclass
class SteerResult:
    """What steering with one latent did, against its control.

    Attributes:
        latent: the latent steered with.
        settings: the `Control` values used (name -> value).
        figure: a matplotlib figure (vector fields before / after, rates with intervals), or None.
        table: conditions (un-intervened, steered, control) x outcomes with 95% intervals, or None.
        metrics: headline numbers as label -> formatted value (`Mean arrow change per cell`).
        prompt: the prompt the table answers (LM), or None.
        caption: how to read the result: what was added where, what the control is, n and seeds.
        data: the numbers behind the table (JSON-ready), for `to_json`.
    """

    latent: int
    settings: dict[str, Any]
    figure: Any = None
    table: pd.DataFrame | None = None
    metrics: dict[str, str] = field(default_factory=dict)
    prompt: str | None = None
    caption: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"latent": int(self.latent), "settings": dict(self.settings), "metrics": self.metrics}
        if self.table is not None:
            out["table"] = self.table.to_dict(orient="records")
        if self.prompt is not None:
            out["prompt"] = self.prompt
        return {**out, **self.data}


@dataclass
class CardAnalyses:
    """A kind's own analyses for an SAE's card, computed by `FeatureViews.card`.

    Attributes:
        metrics: entries merged into the SAE's metrics.json (`goal_alignment` is drawn by the card's generic goal
            table; anything else is kept for tests and the app).
        sections: markdown blocks appended to card.md after the goal table, in order.
        files: extra files written into the SAE folder (name -> text or bytes, e.g. a `top_latent.png`).
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    sections: tuple[str, ...] = ()
    files: dict[str, str | bytes] = field(default_factory=dict)


CardFn = Callable[..., CardAnalyses]
"""`card(sae, subject, hook, *, align_episodes, steer_episodes, seed, progress) -> CardAnalyses`: `subject` is the
`workbench.sae.subjects` subject the SAE was trained on; `align_episodes` levels / prompts to rank latents on (half as
many held out), `steer_episodes` OOD levels / prompts for a steering comparison, `seed` the run's seed, `progress`
whether collections show progress bars. Returns an empty `CardAnalyses` where an analysis does not apply (e.g. a
flat-layout SAE on a conv hook)."""


@dataclass(frozen=True)
class FeatureViews:
    """How the Features page (or a notebook) reads SAE latents on one subject kind. All functions are free of UI code.

    Attributes:
        unit: what one sampled item is (`levels`, `dialogues`), for messages before the sample exists.
        sample: `sample(sae, subject, n) -> FeatureSample`: `n` levels / texts of the subject encoded by the SAE
            (seed 0, so the same call gives the same sample). `subject` is a `workbench.sae.subjects` subject.
        top_examples: `top_examples(sample, latent) -> TopExamples`.
        controls: the inputs `steer` takes beyond the latent, in the order the app lays them out.
        steer: `steer(sae, subject, latent, *, polarity=1, **settings) -> SteerResult`, settings named by `controls`
            (a missing one takes its default). `polarity` (+1 / -1) orients the latent towards label 1 when the SAE's
            goal-alignment ranking says it fires for label 0; kinds without a use for it ignore it. None: this kind
            has no steering view.
        card: the kind's own analyses for `workbench sae train`'s card (`CardFn`); None: reconstruction and
            fidelity only.
        goal_cells: the per-token goal labels `goal_alignment(kind=...)` uses for this kind; None: it has none.
        score: `score(records, gamma) -> (name, (episodes,) float array)`: the scalar per episode whose fraction
            recovered SAE fidelity reports (the maze: `return`, the discounted return of reaching the cheese); None:
            `first_goal_score`, the first goal flag of the world's records, named by it.
        ablation_mean: `ablation_mean(subject, levels, hook, *, split, seed) -> (1, ...)`: the activation fidelity's
            mean-ablated policy sees on `levels` of `split` (the native maze: the mean over exactly those levels'
            start states); None: `start_state_mean`, the mean over the start states the kind's collector records on
            the first 100 of the split's levels.
    """

    unit: str
    sample: Callable[[Any, Any, int], FeatureSample]
    top_examples: Callable[[FeatureSample, int], TopExamples]
    controls: tuple[Control, ...] = ()
    steer: Callable[..., SteerResult] | None = None
    card: CardFn | None = None
    goal_cells: GoalCells | None = None
    score: Callable[[Any, float], tuple[str, Any]] | None = None
    ablation_mean: Callable[..., Tensor] | None = None

    def settings(self, values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every control's value: `values[name]` (checked) or its default; an unknown name is one line naming those
        it takes."""
        values = dict(values or {})
        names = [c.name for c in self.controls]
        for name in values:
            if name not in names:
                raise unknown("steering setting", name, names)
        return {c.name: c.check(values[c.name]) if c.name in values else c.default for c in self.controls}

    def run_steer(self, sae: Any, subject: Any, latent: int, *, polarity: int = 1, **values: Any) -> SteerResult:
        """`steer` with every setting checked and defaulted; a kind without steering is one line saying so."""
        if self.steer is None:
            raise WorkbenchError(f"steering with SAE latents is not available for {kind_name(subject)} subjects")
        return self.steer(sae, subject, int(latent), polarity=int(polarity), **self.settings(values))


def registered_subject(subject: Any) -> Any:
    """The registry-level subject behind an SAE subject: a `PolicySubject`'s agent, else the subject itself."""
    return getattr(subject, "agent", None) or subject


def kind_name(subject: Any) -> str:
    return str(getattr(registered_subject(subject), "kind", type(subject).__name__))


def find_views(subject: Any) -> FeatureViews | None:
    """`views_for(subject)`, or None for a kind with neither its own views nor a world."""
    from workbench.subjects import kind_of

    kind = kind_of(registered_subject(subject))
    if kind.features is not None:
        return kind.features
    if getattr(registered_subject(subject), "world", None) is not None:
        return RL_VIEWS
    return None


def views_for(subject: Any) -> FeatureViews:
    """The feature views of a subject (a `workbench.sae.subjects` subject or a registry subject): its kind's own
    (`SubjectKind.features`), else the generic RL views for any subject with a world; otherwise one line saying how
    to add them."""
    from workbench.subjects import kind_of

    views = find_views(subject)
    if views is not None:
        return views
    kind = kind_of(registered_subject(subject))
    raise WorkbenchError(
        f"{kind.name} subjects have no feature views: register the kind with SubjectKind(features=FeatureViews(...))"
    )


# --------------------------------------------------------------------------------------------- generic RL views
def decoder_direction(sae: Any, latent: int) -> Tensor:
    """The latent's decoder row as a vector the activation takes: (C,) in the position layout (added at every cell),
    the activation's own shape in the flat layout."""
    from workbench.sae.train import sae_info

    info = sae_info(sae)
    d_sae = int(info["d_sae"])
    if not 0 <= int(latent) < d_sae:
        raise WorkbenchError(f"latent {latent} out of range for an SAE of width {d_sae} (0..{d_sae - 1})")
    row = sae.W_dec[int(latent)].detach().float().clone()
    if info["layout"] == "flat" and info["act_shape"]:
        return row.reshape(info["act_shape"])
    return row


def collect_states(
    sae: Any, subject: Any, n: int, *, states: str = "rollout", max_states_per_episode: int = 8, seed: int = SAMPLE_SEED
):
    """Labelled activations at the SAE's hook on `n` OOD levels (`seed`), through the kind's `collect` verb (the
    registry's collector, so every RL kind's own labels; a kind without one is one line naming its verbs). Rollout
    states fall back to start states in worlds without them (procgen)."""
    from workbench.sae.train import sae_info
    from workbench.subjects import verb

    agent = registered_subject(subject)
    world = getattr(agent, "world", None)
    if world is None:
        raise WorkbenchError(f"{kind_name(subject)} subjects have no world to collect states from")
    if int(n) < 1:
        raise WorkbenchError(f"need at least one level, got n={n}")
    hook = sae_info(sae)["hook"]
    got = states if states == "start" or world.rollout_states else "start"
    return verb(agent, "collect")(
        agent,
        hooks=[hook],
        split=SPLIT,
        episodes=int(n),
        seed=int(seed),
        states=got,
        max_states_per_episode=max_states_per_episode if got == "rollout" else None,
        progress=False,
    ).value


def _sample_rl(states: str, max_states_per_episode: int) -> Callable[[Any, Any, int], FeatureSample]:
    def sample(sae: Any, subject: Any, n: int) -> FeatureSample:
        from workbench.sae.analysis import latent_acts
        from workbench.sae.train import sae_info

        ds = collect_states(sae, subject, n, states=states, max_states_per_episode=max_states_per_episode)
        info = sae_info(sae)
        got = (ds.meta.get("source") or {}).get("states", states)
        note = f"{got} states of {n} {SPLIT} levels, seed {SAMPLE_SEED}"
        return FeatureSample(latent_acts(sae, ds[info["hook"]], info["layout"]), int(n), "levels", note, ds)

    return sample


TopFigure = Callable[[FeatureSample, int, int], tuple[Any, str]]
"""(sample, latent, n) -> (a figure of the top examples or None, its caption)."""


def _top_rl(label_columns: tuple[str, ...] | None, n: int, figure: TopFigure | None):
    def top_examples(sample: FeatureSample, latent: int) -> TopExamples:
        from workbench.sae.analysis import top_activating

        ds, feats = sample.data, sample.feats
        rows = top_activating(feats, int(latent), n=n)
        labels = ds.labels
        cols = [c for c in (label_columns or labels.columns) if c in labels.columns]
        peak = feats[rows, int(latent)].reshape(len(rows), -1).max(1).values.numpy()
        table = labels.iloc[rows][cols].assign(row=rows, max_activation=peak)
        caption = f"The {len(rows)} states of the sample ({sample.note}) where latent {latent} peaks, and their labels."
        fig = None
        if figure is not None:
            fig, extra = figure(sample, int(latent), n)
            caption = extra or caption
        return TopExamples(table.reset_index(drop=True), fig, caption)

    return top_examples


RL_CONTROLS = (
    Control(
        "coef",
        "feat_rl_coef",
        "Coefficient (x decoder direction)",
        "slider",
        1.0,
        low=-5.0,
        high=5.0,
        step=0.25,
        help="coef x the latent's decoder direction is added at the SAE's hook at every cell on every step; compare "
        "|coef| x its norm with the activation norm shown next to the result",
    ),
    Control("episodes", "feat_rl_episodes", "OOD episodes", "int", 100, low=4, high=2000, step=1),
    Control("seed", "feat_rl_seed", "Seed (levels and actions)", "int", 0, low=0, step=1),
)
"""The generic RL steering inputs: coefficient, how many OOD levels, and their seed."""


def activation_norm(agent: Any, levels: Any, hook: str, per_cell: bool) -> float:
    """Mean norm of the activation at `hook` on the levels' start states, per cell (the channel vector) or per
    example: the scale a steering vector at that hook is judged against."""
    import torch

    from workbench.hooks import run_with_cache

    with torch.no_grad():
        _, cache = run_with_cache(agent.policy, torch.as_tensor(agent.world.observe(levels)), names_filter=hook)
    act = cache[hook].float()
    return float(act.norm(dim=1).mean() if per_cell and act.ndim == 4 else act.flatten(1).norm(dim=1).mean())


def steer_rl(
    sae: Any, subject: Any, latent: int, *, polarity: int = 1, coef: float = 1.0, episodes: int = 100, seed: int = 0
) -> SteerResult:
    """Add `coef` x the latent's decoder direction at the SAE's hook on every step of `episodes` OOD levels and
    compare the world's goal rates with the un-intervened run and an equal-norm random direction on the same levels
    and action seed (`workbench.rl.steering.compare_interventions`: Wilson 95% intervals, paired bootstrap 95%
    intervals on the differences). `polarity` is not used: the coefficient's sign is the user's."""
    from workbench.rl.steering import compare_interventions
    from workbench.sae.train import sae_info

    agent = registered_subject(subject)
    hook = sae_info(sae)["hook"]
    if int(episodes) < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    direction = decoder_direction(sae, latent)
    levels = agent.world.levels(SPLIT, int(episodes), int(seed))
    res = compare_interventions(agent, levels, direction, float(coef), hook, per_level=False, seed=int(seed))
    table = comparison_table(res)
    added = abs(float(coef)) * float(direction.norm())
    scale = activation_norm(agent, levels, hook, per_cell=direction.ndim == 1)
    settings = {"coef": float(coef), "episodes": int(episodes), "seed": int(seed)}
    caption = (
        f"{coef:+g} x latent {latent}'s decoder direction (norm {float(direction.norm()):.3f}) added at `{hook}` "
        f"{'at every cell ' if direction.ndim == 1 else ''}on every step of {episodes} {SPLIT} levels (level and "
        f"action seed {seed}); control: an equal-norm random direction (seed {int(seed) + 1}). Rates with Wilson 95% "
        "intervals; differences vs the un-intervened run paired over levels, bootstrap 95% intervals."
    )
    return SteerResult(
        latent=int(latent),
        settings=settings,
        figure=rates_figure(table, f"latent {latent}, coef {coef:+g}, n={episodes}"),
        table=table,
        metrics={
            "Added norm": f"{added:.3f}",
            f"Activation norm ({'per cell, ' if direction.ndim == 1 else ''}start states)": f"{scale:.3f}",
            "Episodes": str(int(episodes)),
        },
        caption=caption,
        data={"hook": hook, "activation_norm": scale, "comparison": {k: v for k, v in res.items() if k != "ci95"}},
    )


def comparison_table(res: dict) -> pd.DataFrame:
    """`workbench.rl.steering.comparison_rows` as a DataFrame."""
    from workbench.rl.steering import comparison_rows

    return pd.DataFrame(comparison_rows(res))


def rates_figure(table: pd.DataFrame, title: str):
    """Grouped bars: each outcome's rate per condition with its Wilson 95% interval."""
    import matplotlib.pyplot as plt
    import numpy as np

    outcomes = list(dict.fromkeys(table["outcome"]))
    conds = list(dict.fromkeys(table["condition"]))
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(outcomes), 2.8))
    width = 0.8 / max(len(conds), 1)
    x = np.arange(len(outcomes))
    for i, cond in enumerate(conds):
        part = table[table["condition"] == cond].set_index("outcome").loc[outcomes]
        rate = part["rate"].to_numpy(dtype=float)
        err = np.stack([rate - part["ci95 low"].to_numpy(dtype=float), part["ci95 high"].to_numpy(dtype=float) - rate])
        ax.bar(x + (i - (len(conds) - 1) / 2) * width, rate, width, yerr=err, capsize=2, label=cond)
    ax.set_xticks(x, outcomes, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("rate")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def rl_views(
    *,
    states: str = "rollout",
    max_states_per_episode: int = 8,
    label_columns: tuple[str, ...] | None = None,
    top_n: int = 6,
    top_figure: TopFigure | None = None,
    controls: tuple[Control, ...] = RL_CONTROLS,
    steer: Callable[..., SteerResult] | None = steer_rl,
    card: CardFn | None = None,
    goal_cells: GoalCells | None = None,
    score: Callable[[Any, float], tuple[str, Any]] | None = None,
    ablation_mean: Callable[..., Tensor] | None = None,
) -> FeatureViews:
    """Feature views for an RL kind, generic parts filled in: `states` (`rollout` or `start`) of OOD levels through
    the kind's collector, a table of the top states' labels (`label_columns` present in the dataset, all labels when
    None) with an optional figure, and steering (default `steer_rl`: the decoder direction added, goal rates vs an
    equal-norm random direction). A kind's `features.py` overrides what differs, and brings its card analyses,
    goal cells and fidelity score where it has them (`FeatureViews`)."""
    if states not in ("rollout", "start"):
        raise unknown("states", states, ["rollout", "start"])
    return FeatureViews(
        unit="levels",
        sample=_sample_rl(states, max_states_per_episode),
        top_examples=_top_rl(label_columns, top_n, top_figure),
        controls=controls,
        steer=steer,
        card=card,
        goal_cells=goal_cells,
        score=score,
        ablation_mean=ablation_mean,
    )


def align_goal_cells(
    sae: Any,
    subject: Any,
    hook: str,
    goal: GoalCells,
    *,
    states: str,
    align_episodes: int,
    seed: int,
    progress: bool,
) -> tuple[dict, Any, Any] | None:
    """Goal alignment by position for a card (`workbench.sae.analysis.goal_alignment`): latents ranked on
    `align_episodes` OOD levels' `states` (seed + 300), re-measured on half as many (seed + 400). Returns (the
    result with its `directions`, fit dataset, test dataset), or None when the SAE is not a position-layout SAE on a
    conv (C, H, W) hook."""
    from workbench.sae.analysis import goal_alignment
    from workbench.sae.train import sae_info

    info = sae_info(sae)
    if len(info["act_shape"]) != 3 or info["layout"] != "position":
        return None
    fit = subject.collect([hook], n=align_episodes, seed=seed + 300, states=states, progress=progress)
    test = subject.collect([hook], n=max(align_episodes // 2, 1), seed=seed + 400, states=states, progress=progress)
    return goal_alignment(sae, fit, test, hook, seed=seed, goal=goal), fit, test


def first_goal_score(records: Any, gamma: float) -> tuple[str, Any]:
    """The generic fidelity score: the first goal flag of the world's records (CoinRun: `coin`), 0 / 1 per episode.
    `gamma` is not used."""
    import numpy as np

    flags = records.flags()
    first = next(iter(flags))
    return first, np.asarray(flags[first]).astype(np.float64)


def start_state_mean(subject: Any, levels: Any, hook: str, *, split: str, seed: int) -> Tensor:
    """The generic mean-ablation activation: (1, ...) mean at `hook` over the start states the kind's collector
    records on the first min(len(levels), 100) levels of `split` (`seed`)."""
    ds = subject.collect([hook], split=split, n=min(len(levels), 100), seed=seed, states="start", progress=False)
    return ds[hook].mean(0, keepdim=True)


RL_VIEWS = rl_views()
"""The views of an RL kind that registers none (keys-chests, colour-shape, a kind registered from Python)."""
