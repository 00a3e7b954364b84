"""Behaviour-cloning warm start from the shortest-path expert, before PPO.

Why: PPO from scratch needs ~10M+ steps to navigate 15x15 mazes (procgen-scale budgets), far beyond an hour on two
CPU cores. Cloning an expert that walks the shortest path *to the cheese* gives the policy navigation skill in
minutes; PPO then fine-tunes on the reward. The goal ambiguity survives intact: on the `train` split the expert's
cheese is always in the top-right region, so its demonstrations are equally well explained by "go to the cheese"
and "go to the corner". Which one the network picks up is exactly what the organism is for.

States come from a noisy behaviour policy (expert action, replaced by a random one with probability `noise`), so the
data covers states off the shortest path, where the agent will find itself after its own mistakes (DAgger's point).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.rl.envs.maze import MazeConfig, MazeLevels, MazeVecEnv, distances_to, greedy_actions


@dataclass(frozen=True)
class BCConfig:
    states: int = 0  # expert-labelled states to collect (0: no warm start)
    epochs: int = 3
    batch_size: int = 512
    learning_rate: float = 1e-3
    noise: float = 0.3  # probability the behaviour policy acts randomly
    num_envs: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        """Every number checked before any expert data is collected (a bad [bc] table costs nothing)."""
        from workbench.validate import check_float, check_int, check_seed

        check_int("states", self.states, 0, MAX_STATES, why="the states are held in memory")
        check_int("epochs", self.epochs, 1, 1000)
        check_int("batch_size", self.batch_size, 1, 65_536)
        check_float("learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        check_float("noise", self.noise, 0.0, 1.0)
        check_int("num_envs", self.num_envs, 1, 4096)
        check_seed(self.seed)


MAX_STATES = 5_000_000
"""Most expert states a [bc] table may ask for: they are held in memory (a few GiB at this size)."""


def expert_actions(levels: MazeLevels) -> np.ndarray:
    """(N,) the first action of the shortest path from the mouse to the cheese."""
    a = greedy_actions(distances_to(levels, levels.cheese), levels.mouse)
    return np.where(a < 0, 0, a)


def collect_expert_data(split: str, env_config: MazeConfig, cfg: BCConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, C, H, W) uint8 observations and (S,) expert actions from noisy expert rollouts on `split`, by the expert
    of the env kind `env_config` belongs to (`workbench.rl.env_kinds`)."""
    from workbench.rl.env_kinds import env_kind_of

    return env_kind_of(env_config).expert(split, env_config, cfg)


def maze_expert_data(split: str, env_config: MazeConfig, cfg: BCConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 3, W, W) uint8 observations and (S,) shortest-path-to-cheese actions from noisy expert rollouts."""
    env = MazeVecEnv(cfg.num_envs, split, env_config)
    return noisy_expert_data(env, expert_actions, 4, cfg, draw="actions-first")


def noisy_expert_data(
    env, expert, n_actions: int, cfg: BCConfig, *, draw: str = "noise-first"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, C, H, W) uint8 observations and (S,) expert actions from `cfg.states` steps of noisy expert rollouts in a
    batched env of `cfg.num_envs` (autoreset episodes): at each step `expert(env.levels)` labels the state, and with
    probability `cfg.noise` a uniform random action is taken instead of it (seeded by `cfg.seed`).

    `draw` fixes the order of the two random draws per step (`"noise-first"`: the noise flags, then the random
    actions; `"actions-first"`: the reverse, the maze's order, which predates this helper), so every recipe's expert
    data, and hence its shipped weights, stay reproducible."""
    if draw not in ("noise-first", "actions-first"):
        raise WorkbenchError(f"draw must be noise-first or actions-first, got {draw!r}")
    obs, _ = env.reset(seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    steps = -(-cfg.states // cfg.num_envs)
    all_obs = np.empty((steps, cfg.num_envs, *obs.shape[1:]), dtype=np.uint8)
    all_act = np.empty((steps, cfg.num_envs), dtype=np.int64)
    for t in range(steps):
        assert env.levels is not None
        labels = expert(env.levels)
        all_obs[t], all_act[t] = obs, labels
        if draw == "noise-first":
            noisy = rng.random(cfg.num_envs) < cfg.noise
            random = rng.integers(0, n_actions, cfg.num_envs)
        else:
            random = rng.integers(0, n_actions, cfg.num_envs)
            noisy = rng.random(cfg.num_envs) < cfg.noise
        obs, *_ = env.step(np.where(noisy, random, labels))
    obs_t = torch.as_tensor(all_obs.reshape(-1, *obs.shape[1:])[: cfg.states])
    return obs_t, torch.as_tensor(all_act.reshape(-1)[: cfg.states])


def behaviour_clone(
    policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, cfg: BCConfig, progress: bool = True
) -> list[dict]:
    """Fit the policy head to the expert's actions (cross-entropy). Returns per-epoch loss and accuracy."""
    gen = torch.Generator().manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    history = []
    policy.train()
    for epoch in tqdm(range(cfg.epochs), desc="bc", unit="epoch", disable=not progress):
        perm = torch.randperm(len(obs), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(obs), cfg.batch_size):
            idx = perm[start : start + cfg.batch_size]
            logits, _ = policy(obs[idx])
            loss = nn.functional.cross_entropy(logits, actions[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(-1) == actions[idx]).sum().item()
            total += len(idx)
        history.append({"epoch": epoch + 1, "loss": loss_sum / total, "accuracy": correct / total})
    policy.eval()
    return history
