"""Labelled activation datasets from keys-and-chests agents (`workbench collect`), in `workbench.data`'s format.

One row per level start (`states="start"`) or per state of the agent's own rollout (`"rollout"`: one sampled
episode per level, exactly as `run_episodes` plays it). Labels: level_seed, episode, step, split, agent_row/col,
the state's ground truth (`rollout.state_labels`: inventory, has_key, key_needed, keys_left, chests_closed,
keys_visible) and the episode's outcome (outcome_excess_keys, outcome_chests_opened, outcome_keys_collected,
outcome_length).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.dataset import collect_arrays
from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache
from workbench.rl.keys_chests.rollout import levels_for, rollout_states, state_labels
from workbench.rl.world import check_split

STATES = ("start", "rollout")


def collect_keys_chests(
    agent,
    hooks: list[str],
    *,
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    states: str = "rollout",
    max_states_per_episode: int | None = None,
    out: Path | None = None,
    batch_size: int = 1024,
):
    """The `ActivationDataset` of the agent at `hooks` on `episodes` levels of `split` (seed); saved to `out`."""
    from workbench.hooks import hook_names

    check_split(agent.world, split)
    if states not in STATES:
        raise unknown("states", states, STATES)
    names = hook_names(agent.policy)
    hooks = list(hooks)
    if not hooks:
        raise WorkbenchError("collect needs at least one hook")
    for h in hooks:
        if h not in names:
            raise unknown("hook", h, names)
    if int(episodes) < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    cfg = agent.env_config
    levels = levels_for(split, int(episodes), seed, cfg)
    if states == "rollout":
        got = rollout_states(agent.policy, levels, cfg, seed=seed, max_per_episode=max_states_per_episode)
        rows, episode, step, records = got.states, got.episode, got.step, got.records
    else:
        records = agent.world.run(agent.policy, levels, seed=seed)
        rows, episode, step = levels, np.arange(len(levels)), np.zeros(len(levels), dtype=np.int64)
    acts: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    with torch.no_grad():
        for lo in range(0, len(rows), batch_size):
            obs = torch.as_tensor(rows.select(slice(lo, lo + batch_size)).observe())
            _, cache = run_with_cache(agent.policy, obs, names_filter=hooks)
            for h in hooks:
                acts[h].append(cache[h])
    labels: dict[str, Any] = {
        "level_seed": rows.seeds,
        "episode": episode,
        "step": step,
        "split": np.full(len(rows), split),
        "agent_row": rows.agent[:, 0],
        "agent_col": rows.agent[:, 1],
        **state_labels(rows),
        "outcome_excess_keys": records.excess_keys[episode],
        "outcome_chests_opened": records.chests_opened[episode],
        "outcome_keys_collected": records.keys_collected[episode],
        "outcome_length": records.length[episode],
    }
    source = {
        "kind": "keys-chests",
        "artifact": agent.name,
        "split": split,
        "states": states,
        "episodes": int(episodes),
    }
    ds = collect_arrays({h: torch.cat(v) for h, v in acts.items()}, labels, source=source, seed=seed)
    if out is not None:
        ds.save(out)
    return ds


def collect_verb(
    agent,
    *,
    hooks: list[str],
    split: str = "ood",
    episodes: int = 500,
    seed: int = 0,
    states: str = "rollout",
    out: Path | None = None,
    **options: Any,
):
    """`workbench collect`: labelled activations (the dataset rides in `.value`)."""
    from workbench.rl.verbs import _collected

    options.pop("progress", None)
    ds = collect_keys_chests(agent, hooks, split=split, episodes=episodes, seed=seed, states=states, out=out, **options)
    return _collected(agent, ds, out)
