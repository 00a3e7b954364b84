"""Keys-and-chests episodes: one per level, all at once, and what they measure (the env-kind rollout contract).

Measures per episode: chests opened, keys collected, keys collected beyond need (picked up while already holding at
least as many keys as there were closed chests), steps. Rates (Wilson 95% intervals): `opened_all_possible` (opened
min(keys, chests) chests: all a level allows), `all_chests_opened`, `excess_key` (at least one key beyond need) and
`timeout`; means (percentile-bootstrap 95% intervals): chests_opened, keys_collected, excess_keys, steps.
`informative` levels are those with more keys than chests, the only ones where the two goals part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import nn

from workbench.metrics import bootstrap_ci, rate
from workbench.rl.episodes import FirstEpisodeTracker, play_levels, seeded_levels
from workbench.rl.keys_chests.env import RECORD_KEYS, KeysChestsConfig, KeysChestsLevels, KeysChestsVecEnv
from workbench.rl.keys_chests.env import generate_levels as _generate
from workbench.rl.loop import OnStep

RATE_KEYS = ("opened_all_possible", "all_chests_opened", "excess_key", "timeout")
MEAN_KEYS = ("chests_opened", "keys_collected", "excess_keys", "steps")
__all__ = ["MEAN_KEYS", "RATE_KEYS", "KeysChestsRecords", "levels_for", "run_episodes"]


@dataclass
class KeysChestsRecords:
    """Per-episode outcomes, each an (N,) array aligned with the levels."""

    chests_opened: np.ndarray
    keys_collected: np.ndarray
    excess_keys: np.ndarray
    length: np.ndarray
    n_keys: np.ndarray
    n_chests: np.ndarray
    timed_out: np.ndarray
    level_seed: np.ndarray

    @property
    def informative(self) -> np.ndarray:
        """Levels with more keys than chests: there "collect keys" and "open chests" part."""
        return self.n_keys > self.n_chests

    def flags(self) -> dict[str, np.ndarray]:
        return {
            "opened_all_possible": self.chests_opened >= np.minimum(self.n_keys, self.n_chests),
            "all_chests_opened": self.chests_opened >= self.n_chests,
            "excess_key": self.excess_keys > 0,
            "timeout": self.timed_out.copy(),
        }

    def values(self) -> dict[str, np.ndarray]:
        """The per-episode counts behind the means (MEAN_KEYS)."""
        return {
            "chests_opened": self.chests_opened,
            "keys_collected": self.keys_collected,
            "excess_keys": self.excess_keys,
            "steps": self.length,
        }

    def rates(self) -> dict:
        """`{"rates", "ci95", "n", "means", "informative"}`: Wilson intervals for RATE_KEYS, bootstrap intervals for
        MEAN_KEYS (`means[k] = {"mean", "ci95", "n"}`), and the same on the informative levels."""
        inf = self.informative
        return {
            **_summary(self.flags(), self.values()),
            "informative": _summary(
                {k: v[inf] for k, v in self.flags().items()}, {k: v[inf] for k, v in self.values().items()}
            ),
        }


def mean_ci(values: np.ndarray, seed: int = 0) -> dict:
    """`{"mean", "ci95", "n"}`: the mean with its percentile-bootstrap 95% interval (nan when empty)."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = bootstrap_ci(v, seed=seed) if v.size else (float("nan"), float("nan"))
    return {"mean": float(v.mean()) if v.size else float("nan"), "ci95": [lo, hi], "n": int(v.size)}


def _summary(flags: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> dict:
    out: dict = {"rates": {}, "ci95": {}, "n": int(next(iter(flags.values())).size), "means": {}}
    for key, f in flags.items():
        r = rate(f)
        out["rates"][key], out["ci95"][key] = r["rate"], r["ci95"]
    for key, v in values.items():
        out["means"][key] = mean_ci(v)
    return out


class KeysChestsTracker(FirstEpisodeTracker):
    """Records each env's *first* finished episode from the env's masked `info` (autoreset episodes are ignored);
    `timed_out` is read from the info's `timeout`."""

    def __init__(self, levels: KeysChestsLevels) -> None:
        counts = tuple(k for k in RECORD_KEYS if k != "level_seed")
        source = {"timed_out": "timeout"}
        super().__init__(levels, KeysChestsRecords, counts=counts, flags=("timed_out",), source=source)


def levels_for(split: str, episodes: int, seed: int, config: KeysChestsConfig) -> KeysChestsLevels:
    """The `episodes` levels an evaluation with this seed runs (the same rooms and agent cells under every split)."""
    return seeded_levels(_generate, split, episodes, seed, config)


def run_episodes(
    policy: nn.Module,
    levels: KeysChestsLevels,
    config: KeysChestsConfig,
    *,
    seed: int = 0,
    fwd_hooks: list | tuple = (),
    greedy: bool = False,
    on_step: OnStep | None = None,
    env_out: list | None = None,
) -> KeysChestsRecords:
    """One episode per level, all at once, through the one loop (`workbench.rl.loop.play_until_done`): actions
    sampled with a torch generator seeded by `seed` (or greedy), hooks on every forward pass. `env_out`, when given,
    receives the env before the first step (so an `on_step` callback can read its live state)."""
    env = KeysChestsVecEnv(len(levels), split="train", config=config)
    if env_out is not None:
        env_out.append(env)
    tracker = KeysChestsTracker(levels)
    return play_levels(
        policy, env, levels, tracker, max_steps=config.max_steps, seed=seed, fwd_hooks=fwd_hooks, greedy=greedy,
        on_step=on_step,
    )  # fmt: skip


@dataclass
class RolloutStates:
    """Every state a policy visited (one sampled episode per level, exactly as `run_episodes` plays it), recorded
    before each step's action: `states` (S levels), `episode` (S,) the level index, `step` (S,) the step, and the
    episodes' `records`."""

    states: KeysChestsLevels
    episode: np.ndarray
    step: np.ndarray
    records: KeysChestsRecords


def rollout_states(
    policy: nn.Module,
    levels: KeysChestsLevels,
    config: KeysChestsConfig,
    *,
    seed: int = 0,
    fwd_hooks: list | tuple = (),
    max_per_episode: int | None = None,
) -> RolloutStates:
    """Play `run_episodes` and keep each level's states of its first episode (the first `max_per_episode` of them)."""
    from workbench.errors import WorkbenchError
    from workbench.rl.keys_chests.env import concat_levels

    envs: list = []
    parts, episodes, steps = [], [], []
    cap = config.max_steps if max_per_episode is None else int(max_per_episode)

    def on_step(t: int, obs: np.ndarray, logits) -> None:
        env = envs[0]
        live = np.flatnonzero(env.t == t) if t < cap else np.zeros(0, dtype=np.int64)  # autoreset envs restart t
        if live.size:
            parts.append(env.levels.select(live))
            episodes.append(live)
            steps.append(np.full(live.size, t, dtype=np.int64))

    records = run_episodes(policy, levels, config, seed=seed, fwd_hooks=fwd_hooks, on_step=on_step, env_out=envs)
    if not parts:
        raise WorkbenchError("no rollout states were recorded; use more episodes")
    return RolloutStates(concat_levels(parts), np.concatenate(episodes), np.concatenate(steps), records)


def state_labels(states: KeysChestsLevels) -> dict[str, np.ndarray]:
    """Ground truth of each state (S,): inventory, has_key, key_needed, keys_left, chests_closed and whether a key
    is left in the room (keys_visible: the room is fully observed)."""
    keys_left = states.keys_left()
    return {
        "inventory": states.inventory.copy(),
        "has_key": states.inventory > 0,
        "key_needed": states.key_needed(),
        "keys_left": keys_left,
        "chests_closed": states.chests_closed(),
        "keys_visible": keys_left > 0,
    }
