"""Proximal Policy Optimisation, readable top to bottom (CleanRL's shape), every hyperparameter in `PPOConfig`.

Why our own and not a framework: the organisms are the objects of study, so their training must be short, seeded,
and easy to audit. One file: collect a rollout from a batched env, compute GAE advantages, run clipped-surrogate
epochs over minibatches, evaluate now and then, checkpoint so a run can resume.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm


@dataclass(frozen=True)
class PPOConfig:
    total_steps: int = 2_000_000
    num_envs: int = 64
    num_steps: int = 128  # rollout length per env; batch = num_envs * num_steps
    learning_rate: float = 5e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 8
    update_epochs: int = 3
    clip_coef: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    seed: int = 0
    eval_every: int = 20  # updates between evaluations (0: never)
    eval_episodes: int = 256
    checkpoint_every: int = 20  # updates between resumable checkpoints (0: only at the end)
    threads: int = 0  # torch intra-op threads (0: leave torch's default)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, math.ceil(self.total_steps / self.batch_size))


EvalFn = Callable[[nn.Module], dict]


def _save_checkpoint(
    path: Path, policy: nn.Module, optimizer: torch.optim.Optimizer, update: int, history: list
) -> None:
    """Policy + Adam state (safetensors) and a JSON sidecar; temp names then rename, so never half-written."""
    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"policy.{k}": v.detach().contiguous() for k, v in policy.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict = {"param_groups": opt_state["param_groups"], "state_steps": {}}
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"optim.{idx}.{key}"] = value.contiguous()
            else:
                scalars["state_steps"][f"{idx}.{key}"] = float(value)
    tmp_w, tmp_j = path / "checkpoint.safetensors.tmp", path / "checkpoint.json.tmp"
    save_file(tensors, str(tmp_w))
    tmp_j.write_text(json.dumps({"update": update, "optim": scalars, "history": history}))
    tmp_w.replace(path / "checkpoint.safetensors")
    tmp_j.replace(path / "checkpoint.json")


def _load_checkpoint(path: Path, policy: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, list]:
    tensors = load_file(str(path / "checkpoint.safetensors"))
    meta = json.loads((path / "checkpoint.json").read_text())
    policy.load_state_dict({k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")})
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["optim"]["state_steps"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optim"]["param_groups"]})
    return int(meta["update"]), list(meta["history"])


def train_ppo(
    make_env: Callable[[int], object],
    policy: nn.Module,
    cfg: PPOConfig,
    checkpoint_dir: Path | None = None,
    evaluate: EvalFn | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Train `policy` in place with PPO on `make_env(num_envs)` (a batched env with Gymnasium's vector API and
    same-step autoreset). Returns the history: one dict per evaluation/log point.

    Resuming restores the policy, the optimiser and the update counter from `checkpoint_dir`; episodes in flight
    are not saved, so a resumed run restarts its environments from a seed derived from the update index.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    start_update, history = 0, []
    if resume and checkpoint_dir is not None and (checkpoint_dir / "checkpoint.json").exists():
        start_update, history = _load_checkpoint(checkpoint_dir, policy, optimizer)

    env = make_env(cfg.num_envs)
    obs_np, _ = env.reset(seed=cfg.seed + 1_000_003 * start_update)
    obs = torch.as_tensor(obs_np)
    n, t_len = cfg.num_envs, cfg.num_steps
    buf_obs = torch.zeros((t_len, n, *obs.shape[1:]), dtype=obs.dtype)
    buf_act = torch.zeros((t_len, n), dtype=torch.long)
    buf_logp = torch.zeros((t_len, n))
    buf_rew = torch.zeros((t_len, n))
    buf_done = torch.zeros((t_len, n))
    buf_val = torch.zeros((t_len, n))
    gen = torch.Generator().manual_seed(cfg.seed + start_update)
    ep_returns, ep_lengths = [], []
    t0 = time.time()

    bar = tqdm(
        range(start_update, cfg.num_updates),
        desc="ppo",
        unit="update",
        disable=not progress,
        initial=start_update,
        total=cfg.num_updates,
    )
    for update in bar:
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.learning_rate * (1.0 - update / cfg.num_updates)

        # ---- rollout
        policy.eval()
        with torch.no_grad():
            for t in range(t_len):
                logits, value = policy(obs)
                action = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)
                buf_obs[t], buf_act[t], buf_val[t] = obs, action, value
                buf_logp[t] = torch.log_softmax(logits, -1).gather(1, action[:, None]).squeeze(1)
                obs_np, reward, term, trunc, info = env.step(action.numpy())
                buf_rew[t] = torch.as_tensor(reward)
                buf_done[t] = torch.as_tensor(term | trunc, dtype=torch.float32)
                obs = torch.as_tensor(obs_np)
                if "length" in info:
                    done_idx = np.flatnonzero(info["_length"])
                    ep_lengths.extend(info["length"][done_idx].tolist())
                    ep_returns.extend(reward[done_idx].tolist())
            _, next_value = policy(obs)

        # ---- generalised advantage estimation (a done at step t means step t+1 starts a new episode)
        adv = torch.zeros_like(buf_rew)
        last = torch.zeros(n)
        for t in reversed(range(t_len)):
            nxt = next_value if t == t_len - 1 else buf_val[t + 1]
            nonterminal = 1.0 - buf_done[t]
            delta = buf_rew[t] + cfg.gamma * nxt * nonterminal - buf_val[t]
            last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
            adv[t] = last
        returns = adv + buf_val

        # ---- clipped-surrogate updates
        policy.train()
        b_obs, b_act = buf_obs.reshape(-1, *obs.shape[1:]), buf_act.reshape(-1)
        b_logp, b_adv, b_ret = buf_logp.reshape(-1), adv.reshape(-1), returns.reshape(-1)
        mb = cfg.batch_size // cfg.num_minibatches
        stats = {}
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(cfg.batch_size, generator=gen)
            for start in range(0, cfg.batch_size, mb):
                idx = perm[start : start + mb]
                logits, value = policy(b_obs[idx])
                logp_all = torch.log_softmax(logits, -1)
                logp = logp_all.gather(1, b_act[idx, None]).squeeze(1)
                ratio = (logp - b_logp[idx]).exp()
                a = b_adv[idx]
                a = (a - a.mean()) / (a.std() + 1e-8)
                pg_loss = torch.max(-a * ratio, -a * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                v_loss = 0.5 * ((value - b_ret[idx]) ** 2).mean()
                entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                loss = pg_loss + cfg.vf_coef * v_loss - cfg.ent_coef * entropy
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                stats = {"pg_loss": pg_loss.item(), "v_loss": v_loss.item(), "entropy": entropy.item()}

        steps = (update + 1) * cfg.batch_size
        recent = slice(-200, None)
        log = {
            "update": update + 1,
            "steps": steps,
            "episode_return": float(np.mean(ep_returns[recent])) if ep_returns else float("nan"),
            "episode_length": float(np.mean(ep_lengths[recent])) if ep_lengths else float("nan"),
            "steps_per_s": (update + 1 - start_update) * cfg.batch_size / (time.time() - t0),
            **stats,
        }
        bar.set_postfix(ret=f"{log['episode_return']:.2f}", len=f"{log['episode_length']:.0f}")
        is_last = update + 1 == cfg.num_updates
        if evaluate is not None and ((cfg.eval_every and (update + 1) % cfg.eval_every == 0) or is_last):
            policy.eval()
            log["eval"] = evaluate(policy)
            policy.train()
            bar.write(json.dumps({k: v for k, v in log.items() if k in ("steps", "episode_return", "eval")}))
        history.append(log)
        if checkpoint_dir is not None and (
            (cfg.checkpoint_every and (update + 1) % cfg.checkpoint_every == 0) or is_last
        ):
            _save_checkpoint(checkpoint_dir, policy, optimizer, update + 1, history)
    policy.eval()
    return history
