"""Procgen helpers below the subject kind: record types, state-level vector fields, and PPO on a chosen device.

Evaluation and every experiment on procgen go through the `procgen-maze` / `procgen-coinrun` subject kinds
(`workbench.rl.procgen.kind`), which replay parsed levels with the one rollout loop. The outputs are the same record
types (`EpisodeRecords` for maze, `CoinRunRecords` for CoinRun), so rate tables and the results store read them
unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from workbench.rl.envs.procgen import ProcgenConfig, ProcgenVecEnv, _make, _StateIO
from workbench.rl.procgen_state import MAZE_CHEESE, ProcgenState


def _coinrun_records_cls():
    from workbench.rl.coinrun.rollout import CoinRunRecords

    class ProcgenCoinRunRecords(CoinRunRecords):
        """CoinRun records where collecting the coin ends the episode (procgen's rule, unlike the native env), so a
        timeout is: no coin, no exit, no death within the step limit."""

        @property
        def timeout(self) -> np.ndarray:
            return ~self.exit_reached & ~self.died & ~self.coin_collected

    return ProcgenCoinRunRecords


def procgen_records(game: str, records):
    """Records of a procgen rollout: maze records as they are; CoinRun's with procgen's timeout rule."""
    if game == "maze":
        return records
    cls = _coinrun_records_cls()
    return cls(**{k: getattr(records, k) for k in records.__dataclass_fields__})


def pick_device(device: str | None = None) -> torch.device:
    """`device` if given, else CUDA when present, else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ----------------------------------------------------------------------------------------------------- vector field
@dataclass
class ProcgenVectorField:
    """`probs[k]` (4,) is P(up, down, left, right) (procgen's 15 actions summed by direction; the rest is NOOP)
    with the mouse at `cells[k]` (row, col, row 0 at the top) of `state`'s maze."""

    state: ProcgenState
    cells: np.ndarray  # (K, 2)
    probs: np.ndarray  # (K, 4)
    noop: np.ndarray  # (K,) probability of the actions that do not move

    def arrows(self) -> np.ndarray:
        """(K, 2) expected displacement (d_row, d_col)."""
        deltas = np.array([[-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.float64)
        return self.probs @ deltas


def render_states(states: list[ProcgenState], config: ProcgenConfig = ProcgenConfig()) -> np.ndarray:
    """(K, 3, 64, 64) uint8 procgen frames of (edited) states, without stepping them: procgen 0.10.7's set_state
    re-renders the env's observation, so the states are loaded into a fresh env of K games and observed."""
    if not states:
        return np.zeros((0, 3, 64, 64), dtype=np.uint8)
    env = _make(config, len(states), seed=0)
    _StateIO(env).set(range(len(states)), [s.to_bytes() for s in states])
    _, ob, _ = env.observe()
    return ob["rgb"].transpose(0, 3, 1, 2).copy()


def procgen_vector_field(
    policy: nn.Module,
    state: ProcgenState,
    fwd_hooks: list | tuple = (),
    device: str | torch.device | None = None,
) -> ProcgenVectorField:
    """The policy's action distribution with the mouse on every free cell of one procgen maze state (the cheese cell
    is left out: stepping onto it ends the episode). The state as a one-level `ProcgenMazeLevels` through
    `workbench.rl.vector_field.vector_field` (one batched render, one forward pass); `noop` is the probability of the
    actions that do not move."""
    from workbench.rl.procgen.levels import ProcgenMazeLevels
    from workbench.rl.vector_field import vector_field

    level = ProcgenMazeLevels.from_states([state], region=5, mode=_mode(state))
    if device is not None:
        policy = policy.to(pick_device(str(device)))
    field = vector_field(policy, level, fwd_hooks)
    return ProcgenVectorField(state=state, cells=field.cells, probs=field.probs, noop=1.0 - field.probs.sum(1))


def _mode(state: ProcgenState) -> str:
    return "hard" if state.head["options.distribution_mode"] == 1 else "easy"


def has_cheese(state: ProcgenState) -> bool:
    return bool((state.grid == MAZE_CHEESE).any())


# ------------------------------------------------------------------------------------------------------------- PPO
class OnDevice(nn.Module):
    """Runs `policy` on `device` while PPO keeps its buffers on the CPU: inputs go to the device, outputs come back.
    Lets `workbench.rl.ppo.train_ppo` (CPU buffers) use a GPU without changing PPO. Hook names are unchanged under
    `.policy`; pass the inner policy to hooks."""

    def __init__(self, policy: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.policy = policy.to(device)
        self.device = device

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, value = self.policy(obs.to(self.device, non_blocking=True))
        return logits.float().cpu(), value.float().cpu()


def train_procgen_ppo(policy: nn.Module, game: str, split: str, ppo_config, device: str | None = None, **kwargs):
    """PPO (`workbench.rl.ppo.train_ppo`, unchanged) on procgen `game`/`split`, the policy on `device` (GPU when
    present). Returns PPO's history; the trained weights are in `policy` (moved back to the CPU)."""
    from workbench.rl.ppo import train_ppo

    dev = pick_device(device)
    cfg = ProcgenConfig(game=game)
    wrapped = OnDevice(policy, dev)
    history = train_ppo(lambda n: ProcgenVecEnv(n, split, cfg), wrapped, ppo_config, **kwargs)
    policy.to("cpu")
    return history
