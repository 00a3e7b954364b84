"""Shared helpers for the app pages: cached loaders and the few computations every page draws from the public API.

Caching: `st.cache_resource` holds loaded agents (one live policy per artifact), `st.cache_data` holds computed
results keyed by plain arguments. Every key includes the artifact folder and its weights' modification time, so an
artifact that is (re)trained while the app runs is picked up on the next rerun instead of a stale policy.
Nothing here has logic of its own that the `workbench` API lacks; it only calls it.
"""

from __future__ import annotations

import os

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
from workbench.rl.agent import Agent, load_agent
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
    "SPLITS",
    "AgentRef",
    "agent",
    "agent_names",
    "build_level",
    "cheese_probe",
    "close_figure",
    "default_index",
    "field",
    "layer_cell",
    "layer_shapes",
    "missing_recipes",
    "pick_agent",
    "probe_episodes",
    "probe_heatmap",
    "rollout",
    "spatial_layers",
    "train_hint",
]

PROBE_EPISODES_ENV = "WORKBENCH_APP_PROBE_EPISODES"
AgentRef = tuple[str, float]  # (artifact folder, weights mtime): a plain, hashable cache key for one agent version


# ---------------------------------------------------------------------------------------------------- organisms
def train_hint(name: str) -> str:
    return f"train it with `workbench train agents/{name}.toml`"


def agent_names() -> list[str]:
    """Agent artifacts present now (complete folders only)."""
    return artifacts.available("agents")


def missing_recipes() -> list[str]:
    """Recipes in `agents/` whose artifact has not been trained (yet)."""
    folder = artifacts.repo_root() / "agents"
    have = set(agent_names())
    return sorted(p.stem for p in folder.glob("*.toml") if p.stem not in have) if folder.is_dir() else []


def _ref(name: str) -> AgentRef:
    folder = artifacts.resolve(name, "agents")
    weights = folder / artifacts.WEIGHTS
    return str(folder), weights.stat().st_mtime if weights.is_file() else 0.0


@st.cache_resource(show_spinner=False, max_entries=8)
def _load(path: str, mtime: float) -> Agent:
    return load_agent(path)


def agent(ref: AgentRef) -> Agent:
    return _load(*ref)


def pick_agent(key: str, label: str = "Organism") -> tuple[Agent, AgentRef] | None:
    """A selectbox over the present agents; warns (no traceback) and returns None when none can be loaded."""
    names = agent_names()
    if not names:
        recipes = missing_recipes() or ["NAME"]
        st.warning(
            f"No organisms found in `{artifacts.artifacts_root() / 'agents'}`. "
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


def close_figure(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)
