"""Feature views of CoinRun subjects (native and procgen CoinRun): the generic RL views with CoinRun's labels.

Why so little: a CoinRun latent is read on the states the agent visits (rollout states of OOD levels, where the coin
is away from the exit), its top states are named by where the coin is relative to the agent (`coin_visible`,
`coin_dx`, `coin_dy`), and steering with it is the generic RL comparison (`workbench.sae.views.steer_rl`): the
decoder direction added at every cell, coin / exit / exit-without-coin rates against the un-intervened run and an
equal-norm random direction, with Wilson and paired bootstrap intervals.
"""

from __future__ import annotations

from workbench.sae.views import rl_views

LABELS = ("level_seed", "step", "coin_visible", "coin_dx", "coin_dy", "exit_dx", "outcome_coin")
"""The label columns of the top-activating table (those the dataset has: procgen start states have fewer)."""

VIEWS = rl_views(states="rollout", label_columns=LABELS)
"""The views of every CoinRun kind (`coinrun`, `procgen-coinrun`)."""
