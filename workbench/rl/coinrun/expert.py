"""Behaviour-cloning data for CoinRun: noisy rollouts of the planner expert on the recipe's own training split.

Why: PPO from scratch needs far more CPU than an organism's budget to learn platforming. Cloning the shortest-path
expert gives navigation skill in minutes; the goal ambiguity survives: on `train` levels the expert's target (the coin)
sits on the exit, so its demonstrations are explained equally well by "get the coin" and "go to the exit". On the
`random_coin_percent` levels the expert fetches the coin first, then goes to the exit -- exactly what the reward pays.

Levels are rolled out in batches of `num_envs` fresh levels, one episode each, so the expert plans each batch once
(`workbench.rl.coinrun.planner`). The behaviour policy takes a random action with probability `noise`, so the data
covers states off the expert's path (DAgger's point); every recorded label is the expert's action there.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.rl.coinrun.planner import Expert
from workbench.rl.envs.coinrun import N_ACTIONS, CoinRunConfig, CoinRunVecEnv, generate_levels


def collect_expert_data(split: str, env_config: CoinRunConfig, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """(S, 5, V, V) uint8 observations and (S,) expert actions from noisy expert rollouts on `split`.
    `cfg` is a `workbench.rl.imitation.BCConfig` (states, noise, num_envs, seed)."""
    rng = np.random.default_rng(cfg.seed)
    obs_parts, act_parts, total = [], [], 0
    while total < cfg.states:
        seeds = rng.integers(0, 2**31 - 1, size=cfg.num_envs, dtype=np.int64)
        levels = generate_levels(seeds, split, env_config)
        env = CoinRunVecEnv(cfg.num_envs, split, env_config)
        obs, _ = env.reset(seed=int(seeds[0]), options={"levels": levels})
        expert = Expert(env)
        running = np.ones(cfg.num_envs, dtype=bool)
        for _ in range(env_config.max_steps):
            act = expert.actions()
            obs_parts.append(obs[running])
            act_parts.append(act[running])
            total += int(running.sum())
            noisy = rng.random(cfg.num_envs) < cfg.noise
            behaviour = np.where(noisy, rng.integers(0, N_ACTIONS, cfg.num_envs), act)
            obs, _, term, trunc, _ = env.step(behaviour)
            running &= ~(term | trunc)
            if not running.any() or total >= cfg.states:
                break
    obs_t = torch.as_tensor(np.concatenate(obs_parts)[: cfg.states])
    return obs_t, torch.as_tensor(np.concatenate(act_parts)[: cfg.states].astype(np.int64))
