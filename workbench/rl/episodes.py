"""First-episode records and seeded level draws: the pieces every native kind's rollout module shares.

Why one module: every native env kind (maze, CoinRun, colour-shape, keys-chests) plays one episode per level through
the one loop (`workbench.rl.loop.play_until_done`), and each had written the same three things again: a tracker that
keeps each env's *first* finished episode from the env's masked `info` (later autoreset episodes are ignored, so a
level index keeps meaning one level), a `levels_for` that draws level seeds from `default_rng(seed)`, and the reset
before the loop. A kind now names only what differs: its record fields, its records class, its env.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from torch import nn

from workbench.rl.loop import OnStep, play_until_done


class FirstEpisodeTracker:
    """Records each env's first finished episode: `counts` (int64) and `flags` (bool) fields read from the masked
    `info` of the step that ended it, then `records(level_seed=..., **counts, **flags)` at the end.

    `source` maps a record field to the `info` key it is read from when the two names differ (keys-chests:
    `timed_out` from `timeout`). The loop reads `done` to know when every first episode has ended."""

    def __init__(
        self,
        levels: Any,
        records: Callable[..., Any],
        *,
        counts: Iterable[str] = (),
        flags: Iterable[str] = (),
        source: Mapping[str, str] | None = None,
    ) -> None:
        n = len(levels)
        self.seeds = levels.seeds.copy()
        self.done = np.zeros(n, dtype=bool)
        self.rec = {k: np.zeros(n, dtype=np.int64) for k in counts}
        self.flags = {k: np.zeros(n, dtype=bool) for k in flags}
        self._records = records
        self._source = {k: (source or {}).get(k, k) for k in (*self.rec, *self.flags)}

    def update(self, info: dict) -> None:
        if "length" not in info:
            return
        new = info["_length"] & ~self.done
        for store in (self.rec, self.flags):
            for key, arr in store.items():
                arr[new] = info[self._source[key]][new]
        self.done |= new

    def records(self) -> Any:
        return self._records(level_seed=self.seeds, **self.rec, **self.flags)


def seeded_levels(generate: Callable[..., Any], split: str, episodes: int, seed: int, config: Any) -> Any:
    """`generate(level_seeds, split, config)` on `episodes` level seeds drawn from `default_rng(seed)`: same seed, same
    layouts under every split (the split changes only what the kind's generator moves, e.g. the cheese)."""
    rng = np.random.default_rng(seed)
    return generate(rng.integers(0, 2**31 - 1, size=episodes, dtype=np.int64), split, config)


def play_levels(
    policy: nn.Module,
    env: Any,
    levels: Any,
    tracker: Any,
    *,
    max_steps: int,
    seed: int = 0,
    fwd_hooks: list | tuple = (),
    greedy: bool = False,
    on_step: OnStep | None = None,
    reset_seed: int | None = None,
) -> Any:
    """Reset `env` onto `levels` (with `reset_seed` when the kind's env takes one) and play the one loop until every
    level's first episode has ended; returns `tracker.records()`."""
    options = {"levels": levels}
    obs, _ = env.reset(options=options) if reset_seed is None else env.reset(seed=reset_seed, options=options)
    return play_until_done(policy, env, obs, tracker, max_steps, seed, fwd_hooks, greedy, on_step)
