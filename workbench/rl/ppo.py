"""Proximal Policy Optimisation, readable top to bottom (CleanRL's shape), every hyperparameter in `PPOConfig`.

Why our own and not a framework: the organisms are the objects of study, so their training must be short, seeded,
and easy to audit. One file: collect a rollout from a batched env, compute GAE advantages, run clipped-surrogate
epochs over minibatches, evaluate now and then, checkpoint so a run can resume.
"""

from __future__ import annotations

import dataclasses
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

MAX_BATCH = 1 << 21
"""Largest rollout batch (num_envs * num_steps): about 2M observations, several GiB of buffers."""


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

    def __post_init__(self) -> None:
        """Every number checked here, before any env is built: a recipe error costs nothing (see recipes.py)."""
        from workbench.errors import WorkbenchError
        from workbench.validate import MAX_EPISODES, check_float, check_int, check_seed

        check_int("total_steps", self.total_steps, 0, 10**10)
        check_int("num_envs", self.num_envs, 1, 4096)
        check_int("num_steps", self.num_steps, 1, 100_000)
        if self.num_envs * self.num_steps > MAX_BATCH:
            raise WorkbenchError(
                f"num_envs * num_steps = {self.num_envs * self.num_steps:,} exceeds {MAX_BATCH:,} (the rollout "
                "buffer would not fit in memory); lower num_envs or num_steps"
            )
        check_float("learning_rate", self.learning_rate, 0.0, 1.0, lo_open=True)
        check_float("gamma", self.gamma, 0.0, 1.0)
        check_float("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_int("num_minibatches", self.num_minibatches, 1, self.batch_size, why="at most num_envs * num_steps")
        if self.batch_size % self.num_minibatches:
            near = min(
                (d for d in range(1, self.batch_size + 1) if self.batch_size % d == 0),
                key=lambda d: (abs(d - self.num_minibatches), d),
            )
            raise WorkbenchError(
                f"num_minibatches = {self.num_minibatches} must divide num_envs * num_steps = {self.batch_size}; "
                f"nearest valid: {near}"
            )
        check_int("update_epochs", self.update_epochs, 1, 1000)
        check_float("clip_coef", self.clip_coef, 0.0, 10.0, lo_open=True)
        check_float("ent_coef", self.ent_coef, 0.0, 10.0)
        check_float("vf_coef", self.vf_coef, 0.0, 100.0)
        check_float("max_grad_norm", self.max_grad_norm, 0.0, 1e6, lo_open=True)
        check_seed(self.seed)
        check_int("eval_every", self.eval_every, 0, 10**9)
        check_int("eval_episodes", self.eval_episodes, 1, MAX_EPISODES)
        check_int("checkpoint_every", self.checkpoint_every, 0, 10**9)
        check_int("threads", self.threads, 0, 1024)

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_updates(self) -> int:
        return max(1, math.ceil(self.total_steps / self.batch_size))


EvalFn = Callable[[nn.Module], dict]


CHECKPOINT_WEIGHTS, CHECKPOINT_STATE = "checkpoint.safetensors", "checkpoint.json"


def _env_state(env: object) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Everything a batched env carries between steps, as tensors + JSON, or None if it holds state of a kind this
    does not know (then a resume re-seeds the envs instead; see `train_ppo`). Captured: numpy arrays, numpy
    Generators (their bit-generator state), dataclasses of arrays (the levels), and objects with
    `checkpoint_state()` / `restore_checkpoint_state(arrays, meta)` (the level queue); spaces, configs and plain
    scalars are rebuilt by `make_env` and skipped."""
    tensors: dict[str, torch.Tensor] = {}
    meta: dict = {"rng": {}, "fields": {}, "objects": {}}
    for name, value in vars(env).items():
        if hasattr(value, "checkpoint_state") and hasattr(value, "restore_checkpoint_state"):
            arrays, object_meta = value.checkpoint_state()  # an object that says what to keep (a level queue)
            for key, array in arrays.items():
                tensors[f"env.{name}.{key}"] = torch.from_numpy(np.ascontiguousarray(array).copy())
            meta["objects"][name] = {"arrays": sorted(arrays), "meta": object_meta}
        elif isinstance(value, np.ndarray):
            if value.dtype == object:
                return None
            tensors[f"env.{name}"] = torch.from_numpy(np.ascontiguousarray(value).copy())
        elif isinstance(value, np.random.Generator):
            meta["rng"][name] = value.bit_generator.state
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            if not any(isinstance(v, np.ndarray) for v in fields.values()):
                continue  # a frozen config, rebuilt by make_env
            for field_name, v in fields.items():
                if isinstance(v, np.ndarray):
                    tensors[f"env.{name}.{field_name}"] = torch.from_numpy(np.ascontiguousarray(v).copy())
                elif isinstance(v, int | float | str | bool) or v is None:
                    meta["fields"][f"{name}.{field_name}"] = v
                else:
                    return None
        elif isinstance(value, list | dict | set):
            return None  # unknown mutable state: cannot promise an exact resume
    return tensors, meta


def _restore_env_state(env: object, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    objects = meta.get("objects", {})
    for name, saved in objects.items():
        arrays = {key: tensors[f"env.{name}.{key}"].numpy() for key in saved["arrays"]}
        getattr(env, name).restore_checkpoint_state(arrays, saved["meta"])
    for key, value in tensors.items():
        if not key.startswith("env.") or key[len("env.") :].split(".")[0] in objects:
            continue
        parts = key[len("env.") :].split(".")
        array = value.numpy().copy()
        if len(parts) == 1:
            setattr(env, parts[0], array)
        else:
            setattr(getattr(env, parts[0]), parts[1], array)
    for key, value in meta["fields"].items():
        owner, field_name = key.split(".", 1)
        setattr(getattr(env, owner), field_name, value)
    for name, state in meta["rng"].items():
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        setattr(env, name, rng)


def _save_checkpoint(
    path: Path,
    policy: nn.Module,
    optimizer: torch.optim.Optimizer,
    update: int,
    history: list,
    *,
    env: object | None = None,
    obs: torch.Tensor | None = None,
    gen: torch.Generator | None = None,
    episodes: tuple[list, list] = ([], []),
) -> None:
    """Policy, Adam state, sampling generator, env state and current observation (safetensors) plus a JSON sidecar,
    written as one folder swapped into place atomically (`artifacts.writing`): never half-written, never mixed."""
    from workbench import artifacts

    tensors = {f"policy.{k}": v.detach().contiguous() for k, v in policy.state_dict().items()}
    opt_state = optimizer.state_dict()
    scalars: dict = {"param_groups": opt_state["param_groups"], "state_steps": {}}
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"optim.{idx}.{key}"] = value.contiguous()
            else:
                scalars["state_steps"][f"{idx}.{key}"] = float(value)
    meta: dict = {"update": update, "optim": scalars, "history": history, "exact": False}
    captured = _env_state(env) if env is not None and obs is not None and gen is not None else None
    if captured is not None:
        env_tensors, env_meta = captured
        tensors |= env_tensors
        tensors["rollout.obs"] = obs.contiguous()
        tensors["rollout.generator"] = gen.get_state()
        meta |= {
            "exact": True,
            "env": env_meta,
            "episode_returns": episodes[0][-200:],
            "episode_lengths": episodes[1][-200:],
        }
    with artifacts.writing(path) as tmp:
        save_file(tensors, str(tmp / CHECKPOINT_WEIGHTS))
        (tmp / CHECKPOINT_STATE).write_text(json.dumps(meta))


def _load_checkpoint(
    path: Path, policy: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list, dict[str, torch.Tensor], dict]:
    from workbench.errors import WorkbenchError

    try:
        tensors = load_file(str(path / CHECKPOINT_WEIGHTS))
        meta = json.loads((path / CHECKPOINT_STATE).read_text())
    except (OSError, ValueError, Exception) as err:  # safetensors has its own error types
        raise WorkbenchError(f"{path}: unreadable PPO checkpoint ({str(err).splitlines()[0]})") from None
    policy_state = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
    from workbench.rl.agent_checks import check_state_dict

    check_state_dict(policy, policy_state, path)
    policy.load_state_dict(policy_state)
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["optim"]["state_steps"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optim"]["param_groups"]})
    return int(meta["update"]), list(meta["history"]), tensors, meta


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

    `checkpoint_dir` is a folder this function owns (replaced atomically at each checkpoint). Resuming restores the
    policy, the optimiser, the update counter, the sampling generator, the episodes in flight (the env's arrays and
    RNG) and the current observation, so a resumed run is bit-identical to an uninterrupted one. Only for an env
    whose state cannot be captured (see `_env_state`) does a resumed run restart its environments from a seed
    derived from the update index (and then differs from an uninterrupted run).
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate, eps=1e-5)
    start_update, history, saved, meta = 0, [], {}, {"exact": False}
    if resume and checkpoint_dir is not None and (checkpoint_dir / CHECKPOINT_STATE).exists():
        start_update, history, saved, meta = _load_checkpoint(checkpoint_dir, policy, optimizer)

    env = make_env(cfg.num_envs)
    gen = torch.Generator().manual_seed(cfg.seed + start_update)
    ep_returns, ep_lengths = [], []
    if meta["exact"]:
        env.reset(seed=cfg.seed)  # allocates the env's arrays; then the saved ones replace them
        _restore_env_state(env, saved, meta["env"])
        obs = saved["rollout.obs"].clone()
        gen.set_state(saved["rollout.generator"])
        ep_returns, ep_lengths = list(meta["episode_returns"]), list(meta["episode_lengths"])
    else:
        obs_np, _ = env.reset(seed=cfg.seed + 1_000_003 * start_update)
        obs = torch.as_tensor(obs_np)
    n, t_len = cfg.num_envs, cfg.num_steps
    buf_obs = torch.zeros((t_len, n, *obs.shape[1:]), dtype=obs.dtype)
    buf_act = torch.zeros((t_len, n), dtype=torch.long)
    buf_logp = torch.zeros((t_len, n))
    buf_rew = torch.zeros((t_len, n))
    buf_done = torch.zeros((t_len, n))
    buf_val = torch.zeros((t_len, n))
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
            _save_checkpoint(
                checkpoint_dir,
                policy,
                optimizer,
                update + 1,
                history,
                env=env,
                obs=obs,
                gen=gen,
                episodes=(ep_returns, ep_lengths),
            )
    policy.eval()
    return history
