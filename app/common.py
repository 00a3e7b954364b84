"""Shared helpers for the app pages: cached loaders and the few computations every page draws from the public API.

Caching: `st.cache_resource` holds loaded agents (one live policy per artifact), `st.cache_data` holds computed
results keyed by plain arguments. Every key includes the artifact folder and its weights' modification time, so an
artifact that is (re)trained while the app runs is picked up on the next rerun instead of a stale policy.
Nothing here has logic of its own that the `workbench` API lacks; it only calls it.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import streamlit as st
import torch

import workbench
from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.hooks import hook_names, run_with_cache
from workbench.interventions import add_vector, clamp_channel
from workbench.probes import downsample_cells
from workbench.rl.agent import ENV_KINDS, Agent, load_agent
from workbench.rl.envs.maze import (
    ACTION_NAMES,
    SPLITS,
    MazeLevels,
    MazeVecEnv,
    generate_levels,
    observe,
    render,
)
from workbench.rl.rollout import run_episodes
from workbench.rl.steering import DEFAULT_LAYER, cheese_vectors
from workbench.rl.vector_field import VectorField, vector_field

matplotlib.use("Agg")  # figures are rendered to images for st.pyplot; never open a window

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_LAYER",
    "FIELD_CELL_PX",
    "FIG_DPI",
    "SPLITS",
    "AgentRef",
    "agent",
    "agent_names",
    "agent_ref",
    "artifact_card",
    "build_level",
    "cheese_probe",
    "close_figure",
    "default_index",
    "estimate_rows",
    "field",
    "layer_cell",
    "layer_shapes",
    "missing_recipes",
    "pick_agent",
    "present",
    "probe_episodes",
    "probe_heatmap",
    "rate_rows",
    "recipe_hint",
    "rel",
    "read_json",
    "rollout",
    "sae_names",
    "show_figure",
    "spatial_layers",
    "train_hint",
    "weight_shapes",
]

PROBE_EPISODES_ENV = "WORKBENCH_APP_PROBE_EPISODES"
# Maze lab figures are encoded at 120 dpi in one pass instead of st.pyplot's 200 dpi with a second, "tight" layout
# pass: PNG encoding is most of a cheese-move rerun (more than the policy's forward); see benchmarks/bench_app.py.
FIG_DPI = 120
FIELD_CELL_PX = 8  # the maze under the arrows is drawn at 8 px a cell: a smaller image to resample
AgentRef = tuple[str, float]  # (artifact folder, weights mtime): a plain, hashable cache key for one agent version


# ---------------------------------------------------------------------------------------------------- organisms
def train_hint(name: str) -> str:
    return f"train it with `workbench train agents/{name}.toml`"


def env_kind(name: str) -> str | None:
    """The env kind (`maze`, `coinrun`, ...) an agent artifact's config names; None when unreadable."""
    try:
        return artifacts.read_config(artifacts.resolve(name, "agents")).get("env", {}).get("kind")
    except WorkbenchError:
        return None


def agent_names(kind: str | None = None) -> list[str]:
    """Agent artifacts present now (complete folders only), optionally only those of one env kind."""
    names = artifacts.available("agents")
    return names if kind is None else [n for n in names if env_kind(n) == kind]


def recipe_hint(name: str) -> str:
    """How to get artifact `name`: its recipe's train command, also when the recipe has not landed in `agents/`."""
    recipe = artifacts.repo_root() / "agents" / f"{name}.toml"
    hint = train_hint(name)
    return hint if recipe.is_file() else f"{hint} (its recipe `agents/{name}.toml` has not landed yet)"


def rel(path: Path) -> str:
    """A path as people read it on the page: relative to the repository when inside it."""
    try:
        return str(Path(path).resolve().relative_to(artifacts.repo_root()))
    except ValueError:
        return str(path)


def present(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "none yet"


def artifact_card(folder: Path) -> str:
    card = folder / artifacts.CARD
    return card.read_text() if card.is_file() else ""


def sae_names() -> list[str]:
    """SAE folders in `artifacts/saes/`: SAELens's own layout (`cfg.json`) or a workbench artifact (`config.json`)."""
    folder = artifacts.artifacts_root() / "saes"
    if not folder.is_dir():
        return []
    marks = ("cfg.json", artifacts.CONFIG)
    return sorted(p.name for p in folder.iterdir() if any((p / m).is_file() for m in marks))


def read_json(path: Path) -> dict:
    """A JSON file as a dict; {} when it is missing or unreadable (the page says what is absent)."""
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def rate_rows(metrics: dict) -> list[dict]:
    """`metrics.json`'s evaluation rates with their Wilson 95% intervals as table rows, for any organism.

    The layout is the one every recipe writes: `eval -> split -> {rates, ci95, n}`, optionally with an
    `informative` block of the same shape (episodes where the two goals part)."""
    rows = []
    for split, block in metrics.get("eval", {}).items():
        for subset, part in (("all", block), ("informative", block.get("informative", {}))):
            for key, rate in part.get("rates", {}).items():
                lo, hi = part.get("ci95", {}).get(key, (float("nan"), float("nan")))
                n = part.get("n", part.get("episodes"))
                rows.append(
                    {
                        "split": split,
                        "episodes": subset,
                        "outcome": key,
                        "rate": rate,
                        "ci95 low": lo,
                        "ci95 high": hi,
                        "n": n if isinstance(n, int) else None,
                    }
                )
    return rows


def estimate_rows(tree: dict, skip: tuple[str, ...] = ("training",)) -> list[dict]:
    """Every estimate in a nested `metrics.json` (a dict holding `rate` or `mean` with `ci95` and `n`) as a table row:
    where it sits (the keys above it), its name, value, 95% interval and n. Keys in `skip` are not entered."""
    rows: list[dict] = []

    def walk(node: dict, path: list[str]) -> None:
        for key, value in node.items():
            if not isinstance(value, dict) or key in skip:
                continue
            est = value.get("rate", value.get("mean"))
            if isinstance(est, (int, float)) and "ci95" in value:
                lo, hi = value["ci95"]
                rows.append(
                    {
                        "where": " / ".join(path),
                        "metric": key,
                        "value": est,
                        "ci95 low": lo,
                        "ci95 high": hi,
                        "n": value.get("n"),
                    }
                )
            else:
                walk(value, [*path, key])

    walk(tree, [])
    return rows


def weight_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape of a safetensors file, read from its header (no weights loaded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}


def missing_recipes() -> list[str]:
    """Recipes in `agents/` whose artifact has not been trained (yet), of any kind (agents, LMs, SAEs)."""
    folder = artifacts.repo_root() / "agents"
    have = {name for kind in artifacts.KINDS for name in artifacts.available(kind)}
    return sorted(p.stem for p in folder.glob("*.toml") if p.stem not in have) if folder.is_dir() else []


def _ref(name: str) -> AgentRef:
    folder = artifacts.resolve(name, "agents")
    weights = folder / artifacts.WEIGHTS
    return str(folder), weights.stat().st_mtime if weights.is_file() else 0.0


def agent_ref(name: str) -> AgentRef:
    """The cache key of agent `name` now (its folder and weights' modification time); raises WorkbenchError."""
    return _ref(name)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load(path: str, mtime: float) -> Agent:
    return load_agent(path)


def agent(ref: AgentRef) -> Agent:
    return _load(*ref)


def pick_agent(key: str, label: str = "Organism", kind: str | None = None) -> tuple[Agent, AgentRef] | None:
    """A selectbox over the present agents whose env kind `load_agent` supports (only `kind` when given); warns (no
    traceback) and returns None when none can be loaded."""
    names = [n for n in agent_names() if env_kind(n) in ((kind,) if kind else ENV_KINDS)]  # loadable kinds only
    if not names:
        recipes = [r for r in missing_recipes() if kind is None or r.startswith(kind)] or ["NAME"]
        st.warning(
            f"No {kind + ' ' if kind else ''}organisms found in `{artifacts.artifacts_root() / 'agents'}`. "
            + "; ".join(f"{n}: {train_hint(n)}" for n in recipes)
            + "."
        )
        return None
    if st.session_state.get(key) not in names:
        st.session_state.pop(key, None)
    name = st.selectbox(label, names, key=key)
    try:
        ref = _ref(name)
        with st.spinner(f"Loading {name}..."):
            return agent(ref), ref
    except (WorkbenchError, OSError) as err:
        st.warning(f"Organism `{name}` could not be loaded ({err}); {train_hint(name)}.")
        return None


@st.cache_data(show_spinner=False, max_entries=16)
def layer_shapes(path: str, mtime: float) -> dict[str, tuple[int, ...]]:
    """Per-example activation shape of every hook, from one forward pass on one maze."""
    ag = _load(path, mtime)
    obs = torch.as_tensor(observe(generate_levels(np.array([0]), "ood", ag.env_config)))
    with torch.no_grad():
        _, cache = run_with_cache(ag.policy, obs, names_filter=hook_names(ag.policy))
    return {name: tuple(cache[name].shape[1:]) for name in hook_names(ag.policy) if name in cache}


def spatial_layers(ref: AgentRef) -> list[str]:
    """Hooks with (C, H, W) activations: where spatial probes and channel clamps apply."""
    return [name for name, shape in layer_shapes(*ref).items() if len(shape) == 3]


def default_index(options: list[str], preferred: str = DEFAULT_LAYER) -> int:
    return options.index(preferred) if preferred in options else 0


# ---------------------------------------------------------------------------------------------------- levels
def build_level(
    ref: AgentRef, split: str, seed: int, cheese: tuple[int, int] | None, mouse: tuple[int, int] | None
) -> MazeLevels:
    """Level `seed` of `split`, with the cheese moved (None: removed) and the mouse moved; raises WorkbenchError
    naming the cell for an edit onto a wall or outside the world."""
    level = generate_levels(np.array([seed]), split, agent(ref).env_config)
    level = level.without_cheese() if cheese is None else level.with_cheese(np.array([cheese]))
    if mouse is not None:
        level = level.with_mouse(np.array([mouse]))
    return level


def _hooks(
    ag: Agent, level: MazeLevels, cv: tuple[str, float] | None, clamp: tuple[str, int, float, tuple[int, int] | None]
) -> list:
    fwd = []
    if cv is not None:
        layer, coef = cv
        fwd.append((layer, add_vector(cheese_vectors(ag, level, layer)[0], coef)))
    if clamp is not None:
        layer, channel, value, cell = clamp
        fwd.append((layer, clamp_channel(channel, value, cell)))
    return fwd


@st.cache_data(show_spinner=False, max_entries=64)
def field(
    ref: AgentRef,
    split: str,
    seed: int,
    cheese: tuple[int, int] | None,
    mouse: tuple[int, int] | None,
    cv: tuple[str, float] | None = None,
    clamp: tuple[str, int, float, tuple[int, int] | None] | None = None,
) -> VectorField:
    """The vector field of one (edited) maze, under an optional cheese vector `(layer, coef)` and an optional channel
    clamp `(layer, channel, value, layer cell or None for everywhere)`."""
    ag = agent(ref)
    level = build_level(ref, split, seed, cheese, mouse)
    return vector_field(ag.policy, level, _hooks(ag, level, cv, clamp))


def layer_cell(ref: AgentRef, layer: str, world_cell: tuple[int, int]) -> tuple[int, int]:
    """The cell of `layer`'s grid that covers a world cell (after the layer's maxpools)."""
    grid = layer_shapes(*ref)[layer][-1]
    world = agent(ref).env_config.world_size
    rc = downsample_cells(np.array([world_cell], dtype=np.int64), world, grid)[0]
    return int(rc[0]), int(rc[1])


# ---------------------------------------------------------------------------------------------------- rollouts
@st.cache_data(show_spinner=False, max_entries=8)
def rollout(ref: AgentRef, split: str, seed: int, action_seed: int = 0, cell_px: int = 12) -> dict:
    """One episode on level `seed`: RGB frames (T+1, H, W, 3), actions and their probabilities, and the outcome.

    Actions are sampled exactly as `run_episodes` samples them (torch generator seeded by `action_seed`), so the
    frames replay the episode whose outcome `run_episodes` reports. The env resets itself in the step an episode
    ends, so the last frame is drawn from the level as it was, with the mouse on the cheese when it was reached."""
    ag = agent(ref)
    cfg = ag.env_config
    level = generate_levels(np.array([seed]), split, cfg)
    records = run_episodes(ag.policy, level, cfg, seed=action_seed)
    env = MazeVecEnv(1, split=split, config=cfg)
    obs, _ = env.reset(options={"levels": level})
    gen = torch.Generator().manual_seed(action_seed)
    frames, actions, probs = [render(env.levels, cell_px=cell_px)[0]], [], []
    with torch.no_grad():
        for _ in range(cfg.max_steps):
            p = torch.softmax(ag.policy(torch.as_tensor(obs))[0], dim=-1)
            action = torch.multinomial(p, 1, generator=gen).squeeze(1)
            before = env.levels.copy()
            obs, _, terminated, truncated, _ = env.step(action.numpy())
            actions.append(int(action[0]))
            probs.append(p[0].double().numpy())
            if terminated[0]:
                frames.append(render(before.with_mouse(before.cheese), cell_px=cell_px)[0])
                break
            if truncated[0]:
                break
            frames.append(render(env.levels, cell_px=cell_px)[0])
    return {
        "frames": np.stack(frames),
        "actions": actions,
        "probs": np.stack(probs) if probs else np.zeros((0, 4)),
        "outcome": {
            "cheese reached": bool(records.cheese_reached[0]),
            "corner first": bool(records.corner_first[0]),
            "steps": int(records.length[0]),
            "cheese in training region": bool(records.cheese_in_region[0]),
        },
    }


# ---------------------------------------------------------------------------------------------------- probes
def probe_episodes() -> int:
    """Mazes the app's cheese probes are fitted on: `$WORKBENCH_APP_PROBE_EPISODES`, default 300."""
    raw = os.environ.get(PROBE_EPISODES_ENV, "300")
    try:
        return max(1, int(raw))
    except ValueError:
        return 300


@st.cache_data(show_spinner=False, max_entries=32)
def cheese_probe(ref: AgentRef, layer: str, episodes: int):
    """A spatial cheese-location probe at `layer`, fitted on the start states of `episodes` OOD mazes (seed 0)."""
    ds = workbench.collect(agent(ref), [layer], split="ood", episodes=episodes, seed=0, progress=False)
    return workbench.fit_probe(ds, layer, "cheese_cell", method="spatial")


def probe_heatmap(ref: AgentRef, layer: str, level: MazeLevels, episodes: int) -> np.ndarray:
    """(W, W) the probe's softmax over its layer's cells for this maze, painted onto the world cells each covers."""
    fitted = cheese_probe(ref, layer, episodes)
    with torch.no_grad():
        _, cache = run_with_cache(agent(ref).policy, torch.as_tensor(observe(level)), names_filter=layer)
    acts = cache[layer]
    grid = acts.shape[-1]
    probs = torch.softmax(fitted.probe.logits(acts.double()), dim=-1)[0].numpy().reshape(grid, grid)
    w = level.world_size
    cells = np.argwhere(np.ones((w, w), dtype=bool))
    rc = downsample_cells(cells, w, grid)
    return probs[rc[:, 0], rc[:, 1]].reshape(w, w)


def show_figure(fig, dpi: int = FIG_DPI) -> None:
    """Show a matplotlib figure as a PNG at `dpi` (one render pass) and close it."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    close_figure(fig)
    st.image(buf.getvalue())


def close_figure(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- language models
LMRef = tuple[str, float]  # (LM artifact folder, weights mtime): the cache key of one LM version


def lm_ref(name: str) -> LMRef:
    """The cache key of LM artifact `name` now (its folder and weights' modification time); raises WorkbenchError."""
    folder = artifacts.resolve(name, "lms")
    weights = folder / artifacts.WEIGHTS
    return str(folder), weights.stat().st_mtime if weights.is_file() else 0.0


@st.cache_resource(show_spinner=False, max_entries=4)
def language_model(path: str, mtime: float):
    """`workbench.lm.model.load_lm` on an artifact folder (one live model per version)."""
    from workbench.lm.model import load_lm

    return load_lm(path)


@st.cache_resource(show_spinner=False, max_entries=16)
def lm_vector(ref: LMRef, name: str, n: int = 200, seed: int = 1000) -> torch.Tensor:
    """Named difference-of-means vector (`workbench.lm.directions.VECTORS`) at every layer: (n_layers, d_model).

    Seed 1000 and 200 prompts per side are what `workbench lm steer` uses by default (its seed 0 + 1000)."""
    from workbench.lm.directions import direction

    with torch.no_grad():
        return direction(language_model(*ref), name, n, seed)


def persona_prompt(ref: LMRef, a: int, b: int, claimed: int | None, header: str, style: str):
    """The corpus dialogue for one question, claim and persona cue (`workbench.lm.steering.custom_example`)."""
    from workbench.lm.evaluate import corpus_config
    from workbench.lm.steering import custom_example

    return custom_example(corpus_config(language_model(*ref)), a, b, claimed, header=header, style=style)


@st.cache_data(show_spinner=False, max_entries=64)
def persona_answers(
    ref: LMRef, vector: str, layer: int, coef: float, a: int, b: int, claimed: int | None, header: str, style: str
):
    """The prompt answered without a hook, steered (coef x vector at layer) and with an equal-norm random vector:
    `workbench.lm.steering.steer_prompt`'s three rows."""
    from workbench.lm.steering import steer_prompt

    example = persona_prompt(ref, a, b, claimed, header, style)
    return steer_prompt(language_model(*ref), example, lm_vector(ref, vector)[layer], layer, coef)


@st.cache_data(show_spinner=False, max_entries=64)
def token_projections(ref: LMRef, text: str, vector: str, layer: int) -> tuple[list[str], np.ndarray]:
    """Per-token projection of `text`'s residual stream at `layer` onto the unit vector `vector`."""
    from workbench.lm.directions import projection_per_token

    return projection_per_token(language_model(*ref), text, lm_vector(ref, vector), layer)


@st.cache_data(show_spinner=False, max_entries=16)
def attention_page(ref: LMRef, text: str, layer: int) -> str:
    """A self-contained circuitsvis view of `text`'s attention heads at `layer` (`workbench.viz.attention_html`)."""
    from workbench.lm.directions import token_strings
    from workbench.viz import attention_html

    model = language_model(*ref)
    tokens, _ = model.encode([text])
    return str(attention_html(model.model, token_strings(model, tokens[0]), tokens[0], layer=layer))


# ---------------------------------------------------------------------------------------------------- coinrun
COINRUN_BATCH_ENV = "WORKBENCH_APP_COINRUN_LEVELS"
Coin = tuple[int, int] | None  # a coin cell (row, col); None: the coin removed


def coinrun_level(ref: AgentRef, split: str, seed: int, coin: Coin | str = "own"):
    """CoinRun level `seed` of `split` (one level), with its coin kept ("own"), moved to a cell, or removed (None);
    raises WorkbenchError naming a solid or outside cell."""
    from workbench.rl.envs.coinrun import generate_levels as coinrun_levels

    level = coinrun_levels(np.array([seed]), split, agent(ref).env_config)
    if isinstance(coin, str):
        return level
    return level.without_coin() if coin is None else level.with_coin(np.array([coin]))


@st.cache_data(show_spinner=False, max_entries=32)
def coinrun_play(ref: AgentRef, split: str, seed: int, coin: Coin | str, action_seed: int, layer: str | None = None):
    """`workbench.rl.coinrun.rollout.play_level` on one (edited) level: the trajectory run_episodes would report."""
    from workbench.rl.coinrun.rollout import play_level

    ag = agent(ref)
    return play_level(ag.policy, coinrun_level(ref, split, seed, coin), ag.env_config, seed=action_seed, layer=layer)


def coinrun_rollout(ref: AgentRef, split: str, seed: int, action_seed: int = 0, cell_px: int = 12) -> dict:
    """The Organisms page's playback dict (frames, actions, probs, action_names, outcome) for a CoinRun agent."""
    from workbench.rl.envs.coinrun import ACTION_NAMES as COINRUN_ACTIONS
    from workbench.rl.envs.coinrun import render as coinrun_render

    tr = coinrun_play(ref, split, seed, "own", action_seed)
    rec = tr.records
    return {
        "frames": coinrun_render(tr.states, cell_px=cell_px),
        "actions": tr.actions.tolist(),
        "probs": tr.probs,
        "action_names": COINRUN_ACTIONS,
        "outcome": {
            "coin collected": bool(rec.coin_collected[0]),
            "exit reached": bool(rec.exit_reached[0]),
            "died": bool(rec.died[0]),
            "steps": int(rec.length[0]),
        },
    }


@st.cache_resource(show_spinner=False, max_entries=8)
def coinrun_readout(ref: AgentRef, layer: str, episodes: int):
    """Coin/exit logistic probes at `layer` (`fit_coin_exit_readout`: fitted on `episodes` ood levels, seed 0, tested
    on as many others), fitted once per agent version and layer."""
    from workbench.rl.coinrun.probes import fit_coin_exit_readout

    return fit_coin_exit_readout(agent(ref), layer, episodes=episodes, seed=0)


@st.cache_resource(show_spinner=False, max_entries=8)
def coin_vector(ref: AgentRef, layer: str, episodes: int):
    """The coin vector at `layer` and its info (`coin_direction` on `episodes` ood levels, seed 1_000_003, disjoint
    from the levels the page steers on by default), computed once per agent version and layer."""
    from workbench.rl.coinrun.steering import FIT_SEED_OFFSET, coin_direction

    return coin_direction(agent(ref), layer, episodes=episodes, seed=FIT_SEED_OFFSET)


@st.cache_data(show_spinner=False, max_entries=32)
def coinrun_steer(
    ref: AgentRef, split: str, seed: int, coin: Coin | str, action_seed: int, layer: str, coef: float, episodes: int
):
    """`steer_level`: baseline, coin-vector-steered and random-control trajectories of one (edited) level."""
    from workbench.rl.coinrun.steering import steer_level

    vec, _ = coin_vector(ref, layer, episodes)
    return steer_level(agent(ref), coinrun_level(ref, split, seed, coin), vec, coef, layer, seed=action_seed)


def coinrun_batch_levels() -> int:
    """Levels of the CoinRun lab's batch steering rates: `$WORKBENCH_APP_COINRUN_LEVELS`, default 100."""
    try:
        return max(1, int(os.environ.get(COINRUN_BATCH_ENV, "100")))
    except ValueError:
        return 100


@st.cache_data(show_spinner=False, max_entries=32)
def coinrun_batch(ref: AgentRef, split: str, levels: int, layer: str, coef: float, episodes: int) -> dict:
    """`compare_interventions` with the coin vector on `levels` levels of `split` (seed 0): baseline / steered /
    random-control rates with Wilson CIs and paired differences with bootstrap CIs."""
    from workbench.rl.coinrun.rollout import levels_for as coinrun_levels_for
    from workbench.rl.steering import compare_interventions

    ag = agent(ref)
    vec, _ = coin_vector(ref, layer, episodes)
    batch = coinrun_levels_for(split, levels, 0, ag.env_config)
    return compare_interventions(ag, batch, vec, coef, layer, per_level=False, seed=0)


def coinrun_probe_episodes() -> int:
    """Levels the CoinRun lab fits its probes and coin vector on: `$WORKBENCH_APP_PROBE_EPISODES`, default 100
    (CoinRun rows are rollout states, up to 40 a level, so 100 levels already give a few thousand)."""
    try:
        return max(1, int(os.environ.get(PROBE_EPISODES_ENV, "100")))
    except ValueError:
        return 100


def _threads_from_env() -> None:
    """`$WORKBENCH_THREADS` sets torch's CPU threads for the app, as for the CLI: on a loaded machine torch's default
    (one per core) made these tiny convs ~10x slower than one thread. Unset: torch's default."""
    raw = os.environ.get("WORKBENCH_THREADS")
    if raw and raw.isdigit() and int(raw) >= 1 and torch.get_num_threads() != int(raw):
        torch.set_num_threads(int(raw))


_threads_from_env()
