"""Labelled activation datasets from RL agents: the start state of each level, or every state of a policy rollout.

Why here: labels come from the environment's true state (maze: positions, BFS distances, decision squares; CoinRun:
coin and exit offsets, planner distances) and each episode's outcome, so the collectors live with the RL code; the
dataset format and writers are `workbench.data`. Reach them through `workbench.collect(agent, hooks, ...)`, which
picks the subject kind's collector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.data.dataset import (
    DEFAULT_SHARD_SIZE,
    ActivationDataset,
    _check_hooks,
    _device,
    _open_writer,
    _Writer,
)
from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache
from workbench.policy import logits_of, policy_logits
from workbench.rl.agent import Agent
from workbench.rl.envs.maze import (
    SPLITS,
    MazeConfig,
    MazeLevels,
    MazeVecEnv,
    decision_squares,
    distances_to,
)
from workbench.rl.rollout import EpisodeRecords, EpisodeTracker

STATES = ("start", "rollout")
MAZE_LABEL_COLUMNS = (
    "level_seed",
    "episode",
    "step",
    "split",
    "maze_size",
    "mouse_row",
    "mouse_col",
    "cheese_row",
    "cheese_col",
    "cheese_cell",
    "corner_row",
    "corner_col",
    "cheese_in_region",
    "cheese_dx",
    "cheese_dy",
    "dist_to_cheese",
    "dist_to_corner",
    "decision_row",
    "decision_col",
    "at_decision_square",
    "outcome_cheese",
    "outcome_corner_first",
    "outcome_length",
)
"""The label columns `collect_maze` writes: ground truth from the env plus each episode's outcome."""


# ------------------------------------------------------------------------------------------------------ maze collect
class _MazeLabeller:
    """Ground-truth labels for rows (level index, step, mouse cell); per-level maps computed once per batch of levels.

    Cells are world (row, col) coordinates. `decision_row/col` is the level's decision square as seen from the start
    (a property of the maze, constant over the episode; -1 where there is none)."""

    def __init__(self, levels: MazeLevels, split: str) -> None:
        w = levels.world_size
        self.split = split
        self.seeds, self.size, self.cheese = levels.seeds, levels.size, levels.cheese
        self.has = levels.has_cheese()
        self.corner = levels.corner()
        self.in_region = levels.in_region(levels.cheese) & self.has
        self.cheese_cell = np.where(self.has, levels.cheese[:, 0] * w + levels.cheese[:, 1], -1)
        # A removed cheese (NO_CHEESE) has no free target cell, so its distances are -1 everywhere.
        self.d_cheese = distances_to(levels, levels.cheese).astype(np.int32)
        self.d_corner = distances_to(levels, self.corner).astype(np.int32)
        self.decision = decision_squares(levels, (self.d_cheese, self.d_corner))

    def rows(self, idx: np.ndarray, step: int, mouse: np.ndarray) -> dict[str, np.ndarray]:
        k = idx.size
        mr, mc = mouse[:, 0].astype(np.int64), mouse[:, 1].astype(np.int64)
        cheese, has, dec = self.cheese[idx], self.has[idx], self.decision[idx]
        return {
            "level_seed": self.seeds[idx].astype(np.int64),
            "episode": idx.astype(np.int64),
            "step": np.full(k, step, dtype=np.int64),
            "split": np.full(k, self.split, dtype=object),
            "maze_size": self.size[idx].astype(np.int64),
            "mouse_row": mr,
            "mouse_col": mc,
            "cheese_row": cheese[:, 0].astype(np.int64),
            "cheese_col": cheese[:, 1].astype(np.int64),
            "cheese_cell": self.cheese_cell[idx].astype(np.int64),
            "corner_row": self.corner[idx, 0].astype(np.int64),
            "corner_col": self.corner[idx, 1].astype(np.int64),
            "cheese_in_region": self.in_region[idx],
            "cheese_dx": np.where(has, cheese[:, 1] - mc, 0).astype(np.int64),
            "cheese_dy": np.where(has, cheese[:, 0] - mr, 0).astype(np.int64),
            "dist_to_cheese": self.d_cheese[idx, mr, mc].astype(np.int64),
            "dist_to_corner": self.d_corner[idx, mr, mc].astype(np.int64),
            "decision_row": dec[:, 0].astype(np.int64),
            "decision_col": dec[:, 1].astype(np.int64),
            "at_decision_square": (dec[:, 0] >= 0) & (dec[:, 0] == mr) & (dec[:, 1] == mc),
        }


def _collect_start(
    policy: nn.Module,
    levels: MazeLevels,
    labeller: _MazeLabeller,
    hooks: list[str],
    batch_size: int,
    writer: _Writer,
    bar: tqdm,
) -> list[np.ndarray]:
    device, episodes = _device(policy), []
    with torch.no_grad():
        for lo in range(0, len(levels), batch_size):
            idx = np.arange(lo, min(lo + batch_size, len(levels)))
            sub = levels.select(idx)
            _, cache = run_with_cache(policy, torch.as_tensor(sub.observe(), device=device), names_filter=hooks)
            writer.add({h: cache[h] for h in hooks}, labeller.rows(idx, 0, sub.mouse))
            episodes.append(idx)
            bar.update(idx.size)
    return episodes


def _collect_rollout(
    policy: nn.Module,
    levels: MazeLevels,
    labeller: _MazeLabeller,
    hooks: list[str],
    config: MazeConfig,
    seed: int,
    cap: int,
    batch_size: int,
    writer: _Writer,
    bar: tqdm,
) -> tuple[list[np.ndarray], EpisodeRecords]:
    """One episode per level, all levels stepping together as in `run_episodes` (same env, same seeded sampling, same
    bookkeeping); the forward pass runs in chunks of `batch_size` and caches the hooks only for chunks holding a state
    to record. The logits of that same forward pass choose the actions."""
    n, device = len(levels), _device(policy)
    env = MazeVecEnv(n, split="ood", config=config)
    obs, _ = env.reset(seed=seed, options={"levels": levels})  # seed: finished envs' replacement levels reproducible
    gen = torch.Generator().manual_seed(seed)
    outcomes = EpisodeTracker(levels)
    episodes: list[np.ndarray] = []
    with torch.no_grad():
        for t in range(config.max_steps):
            record = ~outcomes.done if t < cap else np.zeros(n, dtype=bool)
            logits = []
            for lo in range(0, n, batch_size):
                x = torch.as_tensor(obs[lo : lo + batch_size], device=device)
                rows = np.flatnonzero(record[lo : lo + batch_size])
                if rows.size:
                    out, cache = run_with_cache(policy, x, names_filter=hooks)
                    chunk_logits = logits_of(out, x.shape[0])
                    sel = torch.as_tensor(rows, device=x.device)
                    idx = lo + rows
                    writer.add({h: cache[h][sel] for h in hooks}, labeller.rows(idx, t, env.levels.mouse[idx]))
                    episodes.append(idx)
                else:
                    chunk_logits = policy_logits(policy, x)
                logits.append(chunk_logits.float().cpu())
            probs = torch.softmax(torch.cat(logits).cpu(), dim=-1)
            action = torch.multinomial(probs, 1, generator=gen).squeeze(1)
            obs, _, _, _, info = env.step(action.numpy())
            outcomes.update(info)
            bar.update(1)
            bar.set_postfix(rows=writer.rows, running=int((~outcomes.done).sum()))
            if outcomes.done.all():
                break
    return episodes, outcomes.records()


def _check_collect_args(
    policy: nn.Module,
    hooks: str | Sequence[str],
    split: str,
    states: str,
    episodes: int,
    batch_size: int,
    max_states_per_episode: int | None,
) -> list[str]:
    """Validate the arguments every agent collector shares; returns the checked hook list."""
    hooks = _check_hooks(policy, hooks)
    if split not in SPLITS:
        raise unknown("split", split, SPLITS)
    if states not in STATES:
        raise unknown("states", states, STATES)
    if int(episodes) < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    if int(batch_size) < 1:
        raise WorkbenchError(f"batch_size must be >= 1, got {batch_size}")
    if max_states_per_episode is not None and int(max_states_per_episode) < 1:
        raise WorkbenchError(
            f"max_states_per_episode must be >= 1 (or None for whole episodes), got {max_states_per_episode}"
        )
    return hooks


def _agent_source(
    agent: Agent,
    kind: str,
    noun: str,
    split: str,
    states: str,
    episodes: int,
    seed: int,
    max_states_per_episode: int | None,
) -> dict:
    """The dataset's `source` record for an agent collection (what was collected, from which agent and env)."""
    return {
        "kind": kind,
        "description": f"{states} states of agent {agent.name!r} on {episodes} {split} {noun} (seed {seed})",
        "agent": agent.name,
        "agent_path": str(agent.path),
        "split": split,
        "states": states,
        "episodes": int(episodes),
        "max_states_per_episode": max_states_per_episode,
        "env_config": asdict(agent.env_config),
    }


def collect_maze(
    agent: Agent,
    hooks: str | Sequence[str],
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    states: str = "start",
    max_states_per_episode: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    out: str | Path | None = None,
    batch_size: int = 512,
    progress: bool = True,
    outcomes: bool = True,
) -> ActivationDataset:
    """Activations of a maze agent at `hooks` with ground-truth labels, one row per recorded state.

    Levels are `levels_for(split, episodes, seed, agent.env_config)` (episode i = level i).
    - `states="start"`: one row per level, the mouse at its start cell.
    - `states="rollout"`: the policy plays one episode per level (actions sampled with a torch generator seeded by
      `seed`, exactly as `run_episodes`); one row per step of each still-running episode (at most the first
      `max_states_per_episode` steps), recorded before that step's action. The terminal state is not a row.

    Labels (cells in world (row, col) coordinates; see `_MazeLabeller`): level_seed, episode, step, split,
    maze_size, mouse_row/col, cheese_row/col, cheese_cell (row * W + col), corner_row/col, cheese_in_region,
    cheese_dx/dy (cheese minus mouse, col/row), dist_to_cheese / dist_to_corner (BFS path lengths from the mouse),
    decision_row/col (-1: none), at_decision_square, and per-episode outcomes outcome_cheese, outcome_corner_first,
    outcome_length (for "start", from `run_episodes(policy, levels, config, seed=seed)`; for "rollout", from the
    recorded rollout itself). `outcomes=False` (start states only) skips the outcome rollouts and their three columns:
    a start-state dataset's activations and state labels need no rollout, and the rollouts are most of its cost.
    With `out` the dataset is streamed to that folder in shards of `shard_size` rows and returned loaded from it;
    otherwise it is built in memory. Same arguments, same dataset.
    """
    policy = agent.policy
    hooks = _check_collect_args(policy, hooks, split, states, episodes, batch_size, max_states_per_episode)
    if not outcomes and states != "start":
        raise WorkbenchError("outcomes=False applies to states='start' (a rollout's outcomes come free with it)")
    config: MazeConfig = agent.env_config
    cap = config.max_steps if max_states_per_episode is None else int(max_states_per_episode)
    levels = agent.world.levels(split, int(episodes), seed)
    if states == "rollout" and not agent.world.rollout_states:
        raise WorkbenchError(
            f"states='rollout' collection is implemented for the native maze; {agent.name!r} is a {agent.kind} "
            "subject: use states='start'"
        )
    source = _agent_source(agent, agent.kind, "mazes", split, states, episodes, seed, max_states_per_episode)
    source |= {"world_size": levels.world_size, "pixels": bool(levels.PIXELS)}  # how cells map onto layer grids
    writer = _open_writer(out, hooks, shard_size, source, seed)
    labeller = _MazeLabeller(levels, split)
    with writer:
        if states == "start":
            with tqdm(total=len(levels), desc="collect start", unit="level", disable=not progress) as bar:
                rows = _collect_start(policy, levels, labeller, hooks, int(batch_size), writer, bar)
            if not outcomes:
                return writer.close()
            records = agent.world.run(policy, levels, seed=seed)
        else:
            with tqdm(total=config.max_steps, desc="collect rollout", unit="step", disable=not progress) as bar:
                rows, records = _collect_rollout(
                    policy, levels, labeller, hooks, config, seed, cap, int(batch_size), writer, bar
                )
        episode = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        outcomes = {
            "outcome_cheese": records.cheese_reached[episode],
            "outcome_corner_first": records.corner_first[episode],
            "outcome_length": records.length[episode].astype(np.int64),
        }
        return writer.close(extra_labels=outcomes)


# --------------------------------------------------------------------------------------------------- coinrun collect
COINRUN_LABEL_COLUMNS = (
    "level_seed",
    "episode",
    "step",
    "split",
    "agent_row",
    "agent_col",
    "rise",
    "coin_present",
    "coin_row",
    "coin_col",
    "coin_dx",
    "coin_dy",
    "coin_visible",
    "coin_right",
    "exit_dx",
    "exit_dy",
    "exit_visible",
    "coin_at_exit",
    "dist_to_coin",
    "dist_to_exit",
    "outcome_coin",
    "outcome_exit",
    "outcome_exit_without_coin",
    "outcome_length",
)
"""The label columns `collect_coinrun` writes: ground truth from the env and planner plus each episode's outcome."""


class _CoinRunLabeller:
    """Ground-truth labels for CoinRun rows (level index, step, live level state). Planner distance tables (fewest
    steps from each (cell, jump counter) state to the coin / to the exit) are computed once per batch of levels."""

    def __init__(self, levels: Any, split: str, config: Any) -> None:
        from workbench.rl.coinrun.planner import UNREACHABLE, distances, on_cells, transitions

        j = config.jump_height
        self.split, self.view, self.j, self.unreachable = split, config.view, j, UNREACHABLE
        self.seeds, self.coin_at_exit = levels.seeds, levels.coin_at_exit()
        nxt, dead = transitions(levels, j)
        self.d_exit = distances(nxt, dead, levels.exit, levels.width, j)
        self.d_coin = distances(nxt, dead | on_cells(levels, levels.exit, j), levels.coin, levels.width, j)
        self.d_coin[self.coin_at_exit] = self.d_exit[self.coin_at_exit]

    def rows(self, idx: np.ndarray, step: int, live: Any) -> dict[str, np.ndarray]:
        """Labels for levels `idx`, whose current state is the sub-batch `live` (agent, rise, coin as now)."""
        from workbench.rl.coinrun.planner import state_index

        k, v = idx.size, self.view
        agent, coin, exit_ = live.agent, live.coin, live.exit
        present = live.has_coin()
        dcoin = np.where(present[:, None], coin - agent, 0)
        dexit = exit_ - agent
        state = state_index(live, agent, live.rise, self.j)

        def dist(table: np.ndarray, ok: np.ndarray) -> np.ndarray:
            d = table[idx, state]
            return np.where(ok & (d < self.unreachable), d, -1).astype(np.int64)

        return {
            "level_seed": self.seeds[idx].astype(np.int64),
            "episode": idx.astype(np.int64),
            "step": np.full(k, step, dtype=np.int64),
            "split": np.full(k, self.split, dtype=object),
            "agent_row": agent[:, 0].astype(np.int64),
            "agent_col": agent[:, 1].astype(np.int64),
            "rise": live.rise.astype(np.int64),
            "coin_present": present,
            "coin_row": coin[:, 0].astype(np.int64),
            "coin_col": coin[:, 1].astype(np.int64),
            "coin_dx": dcoin[:, 1].astype(np.int64),
            "coin_dy": dcoin[:, 0].astype(np.int64),
            "coin_visible": present & np.all(np.abs(dcoin) <= v, axis=1),
            "coin_right": present & (dcoin[:, 1] > 0),
            "exit_dx": dexit[:, 1].astype(np.int64),
            "exit_dy": dexit[:, 0].astype(np.int64),
            "exit_visible": np.all(np.abs(dexit) <= v, axis=1),
            "coin_at_exit": self.coin_at_exit[idx],
            "dist_to_coin": dist(self.d_coin, present),
            "dist_to_exit": dist(self.d_exit, np.ones(k, dtype=bool)),
        }


def collect_coinrun(
    agent: Agent,
    hooks: str | Sequence[str],
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    states: str = "rollout",
    max_states_per_episode: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    out: str | Path | None = None,
    batch_size: int = 512,
    progress: bool = True,
) -> ActivationDataset:
    """Activations of a CoinRun agent at `hooks` with ground-truth labels, one row per recorded state: the CoinRun
    counterpart of `collect_maze` (same arguments, same dataset format, same seeded sampling as `run_episodes`).

    Levels are `levels_for(split, episodes, seed, agent.env_config)`. `states="start"`: one row per level at its
    start (the coin is often out of view there); `"rollout"` (default): one row per step of each running episode,
    recorded before that step's action (a collected coin is gone from later rows). Labels (COINRUN_LABEL_COLUMNS):
    positions (row, col), the jump counter `rise`, coin_present, coin_dx/dy and exit_dx/dy (target minus agent,
    col/row), coin_visible / exit_visible (inside the egocentric window), coin_right (coin ahead), coin_at_exit,
    dist_to_coin / dist_to_exit (planner steps from this state; -1 unreachable or absent) and per-episode outcomes
    outcome_coin, outcome_exit, outcome_exit_without_coin, outcome_length."""
    from workbench.rl.coinrun.rollout import CoinRunTracker
    from workbench.rl.coinrun.rollout import levels_for as coinrun_levels
    from workbench.rl.coinrun.rollout import run_episodes as coinrun_episodes
    from workbench.rl.envs.coinrun import CoinRunConfig, CoinRunVecEnv
    from workbench.rl.envs.coinrun import observe as coinrun_observe

    policy = agent.policy
    hooks = _check_collect_args(policy, hooks, split, states, episodes, batch_size, max_states_per_episode)
    config = agent.env_config
    if not isinstance(config, CoinRunConfig):
        raise WorkbenchError(f"collect_coinrun needs a CoinRun agent; {agent.name!r} is a {agent.env_kind} agent")
    cap = config.max_steps if max_states_per_episode is None else int(max_states_per_episode)
    levels = coinrun_levels(split, int(episodes), seed, config)
    source = _agent_source(agent, "coinrun", "CoinRun levels", split, states, episodes, seed, max_states_per_episode)
    writer = _open_writer(out, hooks, shard_size, source, seed)
    labeller = _CoinRunLabeller(levels, split, config)
    device, n, rows = _device(policy), len(levels), []
    with writer:
        if states == "start":
            with torch.no_grad():
                for lo in range(0, n, int(batch_size)):
                    idx = np.arange(lo, min(lo + int(batch_size), n))
                    sub = levels.select(idx)
                    x = torch.as_tensor(coinrun_observe(sub, config.view), device=device)
                    _, cache = run_with_cache(policy, x, names_filter=hooks)
                    writer.add({h: cache[h] for h in hooks}, labeller.rows(idx, 0, sub))
                    rows.append(idx)
            records = coinrun_episodes(policy, levels, config, seed=seed)
        else:
            env = CoinRunVecEnv(n, "train", CoinRunConfig(**{**asdict(config), "random_coin_percent": 0.0}))
            obs, _ = env.reset(seed=seed, options={"levels": levels})
            gen = torch.Generator().manual_seed(seed)
            tracker = CoinRunTracker(levels)
            bar = tqdm(total=config.max_steps, desc="collect", unit="step", disable=not progress)
            with torch.no_grad(), bar:
                for t in range(config.max_steps):
                    record = ~tracker.done if t < cap else np.zeros(n, dtype=bool)
                    logits = []
                    for lo in range(0, n, int(batch_size)):
                        x = torch.as_tensor(obs[lo : lo + int(batch_size)], device=device)
                        sel = np.flatnonzero(record[lo : lo + int(batch_size)])
                        if sel.size:
                            out, cache = run_with_cache(policy, x, names_filter=hooks)
                            chunk = logits_of(out, x.shape[0])
                            idx = lo + sel
                            live = env.levels.select(idx)
                            pick = torch.as_tensor(sel, device=x.device)
                            writer.add({h: cache[h][pick] for h in hooks}, labeller.rows(idx, t, live))
                            rows.append(idx)
                        else:
                            chunk = policy_logits(policy, x)
                        logits.append(chunk)
                    probs = torch.softmax(torch.cat(logits).cpu(), dim=-1)
                    obs, _, _, _, info = env.step(torch.multinomial(probs, 1, generator=gen).squeeze(1).numpy())
                    tracker.update(info)
                    bar.update(1)
                    if tracker.done.all():
                        break
            records = tracker.records()
        episode = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
        outcomes = {
            "outcome_coin": records.coin_collected[episode],
            "outcome_exit": records.exit_reached[episode],
            "outcome_exit_without_coin": records.exit_without_coin[episode],
            "outcome_length": records.length[episode].astype(np.int64),
        }
        return writer.close(extra_labels=outcomes)
