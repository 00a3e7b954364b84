"""Shared helpers for the app pages: cached loaders and the few computations every page draws from the public API.

Subjects: every RL page loads what it shows through `workbench.subjects.load_subject`, so a shipped organism, an
artifact folder, a published-format `.pth` checkpoint (with its env, `procgen-maze` / `procgen-coinrun`), a name
registered with `workbench.register_subject` and a `module:factory` entry point are all the same `Agent` here. Pages
reach the subject's world (`agent.world`: levels per split, observations, rollouts) and its kind's verbs
(`workbench.subjects.verb`), never an `if kind == ...` of their own.

Caching: `st.cache_resource` holds loaded subjects (one live policy per reference), `st.cache_data` holds computed
results keyed by plain arguments. Every key starts with a `SubjectRef` = (folder / checkpoint / registered name, the
weights' modification time, env), so an artifact or checkpoint that is rewritten while the app runs is picked up on
the next rerun instead of a stale policy. Nothing here has logic of its own that the `workbench` API lacks.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import streamlit as st
import torch

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.interventions import add_vector, clamp_channel
from workbench.probes import downsample_cells, fit_spatial_probe, layer_cell_index
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import ACTION_NAMES, MazeLevels
from workbench.rl.steering import DEFAULT_LAYER, activations_at, cheese_vectors
from workbench.rl.vector_field import VectorField, vector_field
from workbench.subjects import get_kind, kinds, load_subject, registered_subjects, verb

matplotlib.use("Agg")  # figures are rendered to images for st.pyplot; never open a window

__all__ = [
    "ACTION_NAMES",
    "DEFAULT_LAYER",
    "FIELD_CELL_PX",
    "FIG_DPI",
    "AgentRef",
    "SubjectRef",
    "agent",
    "agent_names",
    "agent_ref",
    "artifact_card",
    "base_level",
    "build_level",
    "checkpoint_envs",
    "cheese_probe",
    "close_figure",
    "comparison_rows",
    "default_index",
    "estimate_rows",
    "evaluation",
    "field",
    "kind_family",
    "layer_cell",
    "layer_shapes",
    "missing_recipes",
    "pick_agent",
    "playback",
    "present",
    "probe_episodes",
    "probe_heatmap",
    "rate_rows",
    "recipe_hint",
    "rel",
    "read_json",
    "sae_names",
    "show_figure",
    "spatial_layers",
    "steering",
    "subject_ref",
    "train_hint",
    "weight_shapes",
]

PROBE_EPISODES_ENV = "WORKBENCH_APP_PROBE_EPISODES"
# Maze lab figures are encoded at 120 dpi in one pass instead of st.pyplot's 200 dpi with a second, "tight" layout
# pass: PNG encoding is most of a cheese-move rerun (more than the policy's forward); see benchmarks/bench_app.py.
FIG_DPI = 120
FIELD_CELL_PX = 8  # the maze under the arrows is drawn at 8 px a cell: a smaller image to resample
SubjectRef = tuple[str, float, str]
"""(artifact folder, checkpoint file or registered name; its weights' mtime; env of a bare file or ""): a plain,
hashable cache key for one version of one subject."""
AgentRef = SubjectRef  # the name the pages used before checkpoints; the same key
# procgen's 15 actions (its key combos): moves 0-8 as (dx, dy) = (a // 3 - 1, a % 3 - 1), then the special keys
PROCGEN_ACTION_NAMES = (
    "left-down",
    "left",
    "left-up",
    "down",
    "noop",
    "up",
    "right-down",
    "right",
    "right-up",
    "D",
    "A",
    "W",
    "S",
    "Q",
    "E",
)


# ---------------------------------------------------------------------------------------------------- organisms
def train_hint(name: str) -> str:
    return f"train it with `workbench train agents/{name}.toml`"


def env_kind(name: str) -> str | None:
    """The subject kind (`maze`, `coinrun`, ...) an agent artifact's config names; None when unreadable."""
    try:
        return artifacts.read_config(artifacts.resolve(name, "agents")).get("env", {}).get("kind")
    except WorkbenchError:
        return None


@st.cache_data(show_spinner=False)
def kind_family(kind: str | None) -> str | None:
    """The world family (`maze` or `coinrun`) of an RL subject kind, from its registry entry (its default world);
    None for kinds without a world (language models) and unknown kinds."""
    if kind is None or kind not in kinds():
        return None
    try:
        make_world = get_kind(kind).verbs.get("world")
        return None if make_world is None else str(make_world(None).family)
    except WorkbenchError:
        return None


def checkpoint_envs(family: str | None = None) -> list[str]:
    """Kinds that load a bare file (`procgen-maze`, `procgen-coinrun`): what the env selectbox offers, those of
    `family` first."""
    found = [k for k in kinds() if get_kind(k).file_suffixes]
    return sorted(found, key=lambda k: (kind_family(k) != family, k))


def agent_names(kind: str | None = None) -> list[str]:
    """Agent artifacts present now (complete folders only), optionally only those of one kind."""
    names = artifacts.available("agents")
    return names if kind is None else [n for n in names if env_kind(n) == kind]


def rl_agent_names(family: str | None = None) -> list[str]:
    """Agent artifacts whose kind the registry can load as an RL subject (only the `family` world when given)."""
    out = []
    for name in artifacts.available("agents"):
        fam = kind_family(env_kind(name))
        if fam is not None and (family is None or fam == family):
            out.append(name)
    return out


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


# the lab page of each world family that has one; any other RL kind is served by Organisms and Features
LABS = {"maze": "Maze lab", "coinrun": "CoinRun lab"}


def comparison_rows(res: dict) -> list[dict]:
    """Baseline / steered / control rates with Wilson 95% intervals and paired differences vs the baseline with
    bootstrap 95% intervals, as table rows (`workbench.rl.steering.comparison_rows`), the difference's interval
    printed as one text column."""
    from workbench.rl.steering import comparison_rows as rows

    out = []
    for r in rows(res):
        lo, hi = r.pop("diff ci95 low"), r.pop("diff ci95 high")
        r.pop("n")
        has = r["condition"] != "baseline" and r["diff vs baseline"] == r["diff vs baseline"]
        out.append(
            {
                **r,
                "diff vs baseline": r["diff vs baseline"] if has else None,
                "diff ci95": f"[{lo:+.3f}, {hi:+.3f}]" if has else None,
            }
        )
    return out


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


def subject_ref(ref: str, env: str | None = None) -> SubjectRef:
    """The cache key of a subject reference now: a registered name as it is; a file (a published checkpoint) with
    its mtime and `env`; a shipped name or artifact folder as its folder and weights' mtime. Anything else (an entry
    point, a typo) is kept as typed, for `load_subject` to load or to name the nearest valid references."""
    ref = str(ref).strip()
    if ref in registered_subjects():
        return ref, 0.0, ""
    path = Path(ref).expanduser()
    if path.is_file():
        return str(path.resolve()), path.stat().st_mtime, env or ""
    try:
        folder = artifacts.resolve(ref, "agents")
    except WorkbenchError:
        return ref, 0.0, env or ""
    weights = folder / artifacts.WEIGHTS
    return str(folder), weights.stat().st_mtime if weights.is_file() else 0.0, ""


def agent_ref(name: str) -> SubjectRef:
    """The cache key of agent `name` (or any subject reference) now; see `subject_ref`."""
    return subject_ref(name)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load(path: str, mtime: float, env: str = "") -> Any:
    return load_subject(path, env=env or None)


def agent(ref: SubjectRef) -> Agent:
    """The live subject of a `SubjectRef` (loaded once per version); raises WorkbenchError."""
    return _load(*ref)


def pick_agent(
    key: str, label: str = "Organism", family: str | None = None, empty: str | None = None
) -> tuple[Agent, SubjectRef] | None:
    """A selectbox over the present agents the registry loads (only those of world `family`, `maze` or `coinrun`,
    when given) and, next to it, a text input for any other subject reference: a published checkpoint path with its
    env (`procgen-maze` / `procgen-coinrun`), an artifact folder, a registered name or `module:factory`. Returns the
    loaded agent and its cache key, or None after saying why on the page (no organisms: `empty` or the train
    commands; a load error: its one line; a subject of another family: one `st.info` line)."""
    names = rl_agent_names(family)
    typed = str(st.session_state.get(f"{key}_path") or "").strip()
    if names:
        if st.session_state.get(key) not in names:
            st.session_state.pop(key, None)
        name = st.selectbox(label, names, key=key, disabled=bool(typed))
    else:
        name = None
        if not typed:
            if empty is None:
                recipes = [r for r in missing_recipes() if family is None or r.startswith(family)] or ["NAME"]
                empty = (
                    f"No {family + ' ' if family else ''}organisms found in `{artifacts.artifacts_root() / 'agents'}`. "
                    + "; ".join(f"{n}: {train_hint(n)}" for n in recipes)
                    + "."
                )
            st.warning(empty)
    envs = checkpoint_envs(family)
    c1, c2 = st.columns([3, 2])
    typed = c1.text_input(
        "Checkpoint path (or subject reference)",
        key=f"{key}_path",
        placeholder="path/to/model.pth",
        help="A published-format .pth checkpoint (pick its env), an artifact folder, a name registered with "
        "workbench.register_subject, or module:factory. Clear it to go back to the organisms above.",
    ).strip()
    env = c2.selectbox("Checkpoint env", envs, key=f"{key}_env", help="the env a bare .pth file runs in")
    ref_text = typed or name
    if not ref_text:
        return None
    try:
        ref = subject_ref(ref_text, env)
        with st.spinner(f"Loading {ref_text}..."):
            subject = agent(ref)
    except (WorkbenchError, OSError) as err:
        if typed:
            st.error(f"`{typed}` could not be loaded: {err}")
        else:
            st.warning(f"Organism `{name}` could not be loaded ({err}); {train_hint(name)}.")
        return None
    if not isinstance(subject, Agent):
        st.info(
            f"`{ref_text}` is a {getattr(subject, 'kind', '?')} subject, not an RL agent: the Personas and Features "
            "pages serve language models."
        )
        return None
    if family is not None and subject.env_kind != family:
        st.info(
            f"`{subject.name}` is a {subject.kind} subject ({subject.env_kind} world): this page serves {family} "
            f"worlds; open it {f'in the {LABS[subject.env_kind]} or ' if subject.env_kind in LABS else ''}on Organisms."
        )
        return None
    return subject, ref


@st.cache_data(show_spinner=False, max_entries=16)
def layer_shapes(ref: SubjectRef) -> dict[str, tuple[int, ...]]:
    """Per-example activation shape of every hook on one `ood` observation (the kind's `hooks` verb)."""
    ag = agent(ref)
    rows = verb(ag, "hooks")(ag).to_json()["hooks"]
    return {r["hook"]: tuple(r["shape"]) for r in rows if r["shape"] is not None}


def spatial_layers(ref: SubjectRef) -> list[str]:
    """Hooks with (C, H, W) activations: where spatial probes and channel clamps apply."""
    return [name for name, shape in layer_shapes(ref).items() if len(shape) == 3]


def default_index(options: list[str], preferred: str = DEFAULT_LAYER) -> int:
    return options.index(preferred) if preferred in options else 0


@st.cache_data(show_spinner=False, max_entries=32)
def evaluation(ref: SubjectRef, split: str, episodes: int, seed: int = 0) -> dict:
    """The kind's `eval` verb: goal rates with Wilson 95% intervals on `episodes` levels of `split`."""
    ag = agent(ref)
    return verb(ag, "eval")(ag, split=split, episodes=episodes, seed=seed).to_json()


def evaluation_metrics(result: dict) -> dict:
    """An `eval` verb result in `metrics.json`'s layout, for `rate_rows`."""
    return {"eval": {result["split"]: {**result, "n": result["episodes"]}}}


@st.cache_data(show_spinner=False, max_entries=32)
def steering(ref: SubjectRef, vector: str, coef: float, layer: str, split: str, episodes: int, seed: int = 0) -> dict:
    """The kind's `steer` verb: baseline / steered / random-control rates on the same `episodes` levels."""
    ag = agent(ref)
    return verb(ag, "steer")(
        ag, vector=vector, coef=coef, layer=layer, split=split, episodes=episodes, seed=seed
    ).to_json()


# ---------------------------------------------------------------------------------------------------- levels
@st.cache_resource(show_spinner=False, max_entries=16)
def base_level(ref: SubjectRef, split: str, seed: int) -> Any:
    """Level `seed` of `split` as the subject's world draws it (`agent.world.levels(split, 1, seed)`: the level
    `workbench vector-field SUBJECT --seed S` draws). Shared and never edited in place (edits return copies)."""
    return agent(ref).world.levels(split, 1, seed)


def build_level(
    ref: SubjectRef, split: str, seed: int, cheese: tuple[int, int] | None, mouse: tuple[int, int] | None
) -> MazeLevels:
    """Maze `seed` of `split`, with the cheese moved (None: removed) and the mouse moved; raises WorkbenchError
    naming the cell for an edit onto a wall, outside the world, or (procgen) onto the cheese."""
    level = base_level(ref, split, seed)
    level = level.without_cheese() if cheese is None else level.with_cheese(np.array([cheese]))
    if mouse is not None:
        level = level.with_mouse(np.array([mouse]))
        if not np.all(level.free_cells(0) == np.asarray(mouse), axis=1).any():
            raise WorkbenchError(
                f"the mouse cannot start on the cheese's cell {tuple(mouse)} here (the episode would already be "
                "over); pick another free cell"
            )
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
    ref: SubjectRef,
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


def decision_square(level: MazeLevels, convention: str = "workbench") -> tuple[int, int] | None:
    """The maze's decision square under `convention` (`workbench.rl.maze_parity.CONVENTIONS`), None when none."""
    from workbench.rl.maze_parity import decision_squares_by

    ds = decision_squares_by(level, convention)[0]
    return (int(ds[0]), int(ds[1])) if ds[0] >= 0 else None


def layer_cell(ref: SubjectRef, layer: str, world_cell: tuple[int, int], level: MazeLevels) -> tuple[int, int]:
    """The cell of `layer`'s grid that covers a world cell of `level` (after the layer's maxpools; for pixel
    observations, the cell under the world cell's centre)."""
    grid = layer_shapes(ref)[layer][-1]
    rc = downsample_cells(np.array([world_cell], dtype=np.int64), level.world_size, grid, level.PIXELS)[0]
    return int(rc[0]), int(rc[1])


# ---------------------------------------------------------------------------------------------------- playback
class _Tape:
    """A one-env vector env seen through `play_until_done`: passes every step through and records the action taken
    and a frame of each state the episode reaches (`frame_after(before, obs, terminated, truncated)`; None: none)."""

    def __init__(self, env, frame_after: Callable[[Any, np.ndarray, bool, bool], np.ndarray | None], before=None):
        self.env, self.frame_after, self.before = env, frame_after, before
        self.actions: list[int] = []
        self.frames: list[np.ndarray] = []

    def step(self, actions: np.ndarray):
        before = None if self.before is None else self.before()
        obs, reward, terminated, truncated, info = self.env.step(actions)
        self.actions.append(int(np.asarray(actions).reshape(-1)[0]))
        frame = self.frame_after(before, obs, bool(terminated[0]), bool(truncated[0]))
        if frame is not None:
            self.frames.append(frame)
        return obs, reward, terminated, truncated, info


def _outcome(records: Any, steps: int) -> dict:
    """One episode's goal outcomes (the world's record flags, plus hazard deaths where recorded), whether it ended
    within the steps played (an episode cut short by the page's step limit records no outcome: all flags false) and
    the number of steps played."""
    out = {key: bool(flag[0]) for key, flag in records.flags().items()}
    if hasattr(records, "died"):
        out["died"] = bool(records.died[0])
    out["ended"] = bool(records.length[0] > 0)
    out["steps"] = int(steps)
    return out


def _play_native_maze(ag: Agent, level: MazeLevels, action_seed: int, max_steps: int, cell_px: int) -> dict:
    """`NativeMazeWorld.run`'s episode (the same env, tracker and loop), with its frames: the env resets itself in
    the step an episode ends, so the last frame is drawn from the level as it was, the mouse on the cheese when it
    got there."""
    from workbench.rl.envs.maze import MazeVecEnv, render
    from workbench.rl.loop import play_until_done
    from workbench.rl.rollout import EpisodeTracker

    env = MazeVecEnv(1, split="ood", config=ag.env_config)
    obs, _ = env.reset(options={"levels": level})

    def frame_after(before, _obs, terminated, truncated):
        if terminated:
            return render(before.with_mouse(before.cheese), cell_px=cell_px)[0]
        return None if truncated else render(env.levels, cell_px=cell_px)[0]

    tape = _Tape(env, frame_after, before=lambda: env.levels.copy())
    tape.frames.append(render(env.levels, cell_px=cell_px)[0])
    probs: list[np.ndarray] = []
    records = play_until_done(
        ag.policy,
        tape,
        obs,
        EpisodeTracker(level),
        max_steps,
        action_seed,
        on_step=lambda t, o, logits: probs.append(torch.softmax(logits, -1)[0].double().numpy()),
    )
    legend = "Walls dark, training region tinted blue, mouse brown, cheese yellow."
    return {
        "frames": tape.frames,
        "actions": tape.actions,
        "probs": probs,
        "records": records,
        "names": ACTION_NAMES,
        "legend": legend,
    }


def _play_procgen(ag: Agent, level: Any, action_seed: int, max_steps: int, cell_px: int) -> dict:
    """`ProcgenWorld.run`'s episode (the same env reset to the level's state, the same tracker and loop); the frames
    are procgen's own observations (the frame after the last step is the next level's when the episode ended, so it
    is not kept)."""
    from workbench.rl.coinrun.rollout import CoinRunTracker
    from workbench.rl.envs.procgen import ProcgenVecEnv
    from workbench.rl.loop import play_until_done
    from workbench.rl.procgen_run import procgen_records
    from workbench.rl.rollout import EpisodeTracker

    cfg = ag.env_config
    env = ProcgenVecEnv(1, "ood", cfg)
    try:
        obs, info = env.reset(seed=action_seed, options={"states": level.current_states()})
        seeds = _Seeds(info["level_seed"])
        tracker = EpisodeTracker(seeds) if cfg.game == "maze" else CoinRunTracker(seeds)
        tape = _Tape(env, lambda _b, o, term, trunc: None if term or trunc else o[0].transpose(1, 2, 0))
        tape.frames.append(obs[0].transpose(1, 2, 0))
        probs: list[np.ndarray] = []
        rec = play_until_done(
            ag.policy,
            tape,
            obs,
            tracker,
            max_steps,
            action_seed,
            on_step=lambda t, o, logits: probs.append(torch.softmax(logits, -1)[0].double().numpy()),
        )
    finally:
        env.close()
    records = procgen_records(cfg.game, rec)
    legend = "Frames are procgen's own 64x64 observations, as the policy sees them."
    return {
        "frames": tape.frames,
        "actions": tape.actions,
        "probs": probs,
        "records": records,
        "names": None,
        "legend": legend,
    }


class _Seeds:
    """What the episode trackers read from a level batch: its length and level seeds."""

    def __init__(self, seeds: np.ndarray) -> None:
        self.seeds = np.asarray(seeds, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.seeds)


def _play_native_coinrun(ag: Agent, level: Any, action_seed: int, max_steps: int, cell_px: int) -> dict:
    """`workbench.rl.coinrun.rollout.play_level`: the native CoinRun's trajectory (every state, action and action
    distribution) of the episode `run_episodes` reports, rendered."""
    from dataclasses import replace

    from workbench.rl.coinrun.rollout import play_level
    from workbench.rl.envs.coinrun import ACTION_NAMES as COINRUN_ACTIONS
    from workbench.rl.envs.coinrun import render as coinrun_render

    cfg = ag.env_config if max_steps >= ag.env_config.max_steps else replace(ag.env_config, max_steps=max_steps)
    tr = play_level(ag.policy, level, cfg, seed=action_seed)
    return {
        "frames": list(coinrun_render(tr.states, cell_px=cell_px)),
        "actions": tr.actions.tolist(),
        "probs": list(tr.probs),
        "records": tr.records,
        "names": COINRUN_ACTIONS,
        "legend": "Sky blue, ground brown, hazards red, agent blue, coin yellow, exit green; the CoinRun lab moves "
        "the coin.",
    }


def _playbacks() -> dict[type, Callable[..., dict]]:
    """World type -> how to play one episode of it back step by step: a registry, so a world the app does not know
    is one line on the page, not a traceback."""
    from workbench.rl.coinrun.kind import NativeCoinRunWorld
    from workbench.rl.maze.kind import NativeMazeWorld
    from workbench.rl.procgen.kind import ProcgenWorld

    return {NativeMazeWorld: _play_native_maze, ProcgenWorld: _play_procgen, NativeCoinRunWorld: _play_native_coinrun}


def has_playback(ag: Agent) -> bool:
    return type(ag.world) in _playbacks()


def max_steps_of(ag: Agent) -> int:
    """The world's step limit for one episode (what evaluation plays to)."""
    return int(getattr(ag.env_config, "max_steps", 1000))


@st.cache_data(show_spinner=False, max_entries=8)
def playback(
    ref: SubjectRef, split: str, seed: int, action_seed: int = 0, max_steps: int | None = None, cell_px: int = 12
) -> dict:
    """One episode on level `seed` of `split` (`agent.world.levels(split, 1, seed)`), played by the one rollout loop
    (`workbench.rl.loop.play_until_done`) with the world's own env and tracker: RGB frames, the actions and their
    probabilities, the action names and the outcome. Actions are sampled exactly as the world's `run` samples them
    (torch generator seeded by `action_seed`), so with the world's step limit (`max_steps` None) the outcome is the
    one evaluation reports for this level."""
    ag = agent(ref)
    play = _playbacks().get(type(ag.world))
    if play is None:
        raise WorkbenchError(f"step-by-step playback is not available for {ag.kind} subjects")
    limit = max_steps_of(ag) if max_steps is None else max(1, min(int(max_steps), max_steps_of(ag)))
    ep = play(ag, base_level(ref, split, seed), action_seed, limit, cell_px)
    n_actions = len(ep["probs"][0]) if ep["probs"] else 0
    names = ep["names"] or (PROCGEN_ACTION_NAMES if n_actions == len(PROCGEN_ACTION_NAMES) else None)
    return {
        "frames": np.stack(ep["frames"]),
        "actions": ep["actions"],
        "probs": np.stack(ep["probs"]) if ep["probs"] else np.zeros((0, n_actions)),
        "action_names": tuple(names) if names else tuple(str(a) for a in range(n_actions)),
        "outcome": _outcome(ep["records"], len(ep["actions"])),
        "level_seed": int(ep["records"].level_seed[0]),
        "legend": ep["legend"],
    }


# ---------------------------------------------------------------------------------------------------- probes
def probe_episodes() -> int:
    """Mazes the app's cheese probes are fitted on: `$WORKBENCH_APP_PROBE_EPISODES`, default 300."""
    raw = os.environ.get(PROBE_EPISODES_ENV, "300")
    try:
        return max(1, int(raw))
    except ValueError:
        return 300


@st.cache_resource(show_spinner=False, max_entries=32)
def cheese_probe(ref: SubjectRef, layer: str, episodes: int):
    """A spatial cheese-location probe at `layer`, fitted on the start states of `episodes` OOD mazes (seed 0):
    the subject's world draws the mazes, each maze's cheese cell is mapped onto the layer's grid
    (`layer_cell_index`, pixel-aware for procgen) and `fit_spatial_probe` fits the 1x1 probe."""
    ag = agent(ref)
    levels = ag.world.levels("ood", episodes, 0)
    acts = activations_at(ag, levels, layer)
    if acts.ndim != 4:
        raise WorkbenchError(f"{layer} is not a spatial (C, H, W) layer")
    w = levels.world_size
    cells = layer_cell_index(levels.cheese[:, 0] * w + levels.cheese[:, 1], w, acts.shape[-1], levels.PIXELS)
    return fit_spatial_probe(acts.double(), torch.as_tensor(cells))


def probe_heatmap(ref: SubjectRef, layer: str, level: MazeLevels, episodes: int) -> np.ndarray:
    """(W, W) the probe's softmax over its layer's cells for this maze, painted onto the world cells each covers."""
    probe = cheese_probe(ref, layer, episodes)
    acts = activations_at(agent(ref), level, layer)
    grid = acts.shape[-1]
    probs = torch.softmax(probe.logits(acts.double()), dim=-1)[0].numpy().reshape(grid, grid)
    w = level.world_size
    cells = np.argwhere(np.ones((w, w), dtype=bool))
    rc = downsample_cells(cells, w, grid, level.PIXELS)
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


def coinrun_level(ref: SubjectRef, split: str, seed: int, coin: Coin | str = "own"):
    """Native CoinRun level `seed` of `split` (`agent.world.levels(split, 1, seed)`, the level the Organisms page
    plays), with its coin kept ("own"), moved to a cell, or removed (None); raises WorkbenchError naming a solid or
    outside cell."""
    level = base_level(ref, split, seed)
    if isinstance(coin, str):
        return level
    return level.without_coin() if coin is None else level.with_coin(np.array([coin]))


@st.cache_data(show_spinner=False, max_entries=32)
def coinrun_play(ref: SubjectRef, split: str, seed: int, coin: Coin | str, action_seed: int, layer: str | None = None):
    """`workbench.rl.coinrun.rollout.play_level` on one (edited) level: the trajectory run_episodes would report."""
    from workbench.rl.coinrun.rollout import play_level

    ag = agent(ref)
    return play_level(ag.policy, coinrun_level(ref, split, seed, coin), ag.env_config, seed=action_seed, layer=layer)


@st.cache_resource(show_spinner=False, max_entries=8)
def coinrun_readout(ref: SubjectRef, layer: str, episodes: int):
    """Coin/exit logistic probes at `layer` (`fit_coin_exit_readout`: fitted on `episodes` ood levels, seed 0, tested
    on as many others), fitted once per agent version and layer."""
    from workbench.rl.coinrun.probes import fit_coin_exit_readout

    return fit_coin_exit_readout(agent(ref), layer, episodes=episodes, seed=0)


@st.cache_resource(show_spinner=False, max_entries=8)
def coin_vector(ref: SubjectRef, layer: str, episodes: int):
    """The coin vector at `layer` and its info (`coin_direction` on `episodes` ood levels, seed 1_000_003, disjoint
    from the levels the page steers on by default), computed once per agent version and layer."""
    from workbench.rl.coinrun.steering import FIT_SEED_OFFSET, coin_direction

    return coin_direction(agent(ref), layer, episodes=episodes, seed=FIT_SEED_OFFSET)


@st.cache_data(show_spinner=False, max_entries=32)
def coinrun_steer(
    ref: SubjectRef, split: str, seed: int, coin: Coin | str, action_seed: int, layer: str, coef: float, episodes: int
):
    """`steer_level`: baseline, coin-vector-steered and random-control trajectories of one (edited) level."""
    from workbench.rl.coinrun.steering import steer_level

    vec, _ = coin_vector(ref, layer, episodes)
    return steer_level(agent(ref), coinrun_level(ref, split, seed, coin), vec, coef, layer, seed=action_seed)


def native_coinrun(ag: Agent) -> bool:
    """Whether `ag` acts in the native CoinRun (`workbench.rl.envs.coinrun`): the CoinRun lab's level editor, probes
    and per-level steering are built on its levels and physics; other CoinRun worlds get the kind's verbs."""
    from workbench.rl.coinrun.kind import NativeCoinRunWorld

    return isinstance(ag.world, NativeCoinRunWorld)


def coinrun_batch_levels() -> int:
    """Levels of the CoinRun lab's batch steering rates: `$WORKBENCH_APP_COINRUN_LEVELS`, default 100."""
    try:
        return max(1, int(os.environ.get(COINRUN_BATCH_ENV, "100")))
    except ValueError:
        return 100


@st.cache_data(show_spinner=False, max_entries=32)
def coinrun_batch(ref: SubjectRef, split: str, levels: int, layer: str, coef: float, episodes: int) -> dict:
    """`compare_interventions` with the coin vector on `levels` levels of `split` (seed 0): baseline / steered /
    random-control rates with Wilson CIs and paired differences with bootstrap CIs."""
    from workbench.rl.steering import compare_interventions

    ag = agent(ref)
    vec, _ = coin_vector(ref, layer, episodes)
    batch = ag.world.levels(split, levels, 0)
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
