"""Procgen maze organisms from a recipe: behaviour cloning on real procgen frames, optional PPO, evaluation, card.

Why: the published goal-misgeneralization agents live on procgen's 64x64 pixels, so the workbench ships maze
organisms trained there too (`agents/procgen-maze-*.toml`, run by `workbench train`, which hands procgen recipes to
`train_procgen_recipe`). The network is the published IMPALA policy (`workbench.rl.published.published_config`), so
hook names mean what the papers mean and `save_published` exports the weights in the published checkpoint format.

How, on a shared CPU:
- Expert data: noisy shortest-path-to-cheese rollouts in `ProcgenVecEnv` on the recipe's split. The expert reads the
  parsed procgen state the env already tracks (walls, mouse, cheese); one BFS distance map per episode. A fraction
  `keep` of the visited frames is kept, so the same number of frames covers more mazes.
- Behaviour cloning runs the policy on channels-last inputs under bfloat16 autocast (`FastForward`): about 4x faster
  than plain float32 on this CPU; the weights stay float32. It checkpoints every `checkpoint_every` minibatches, and a
  resumed run is bit-identical (the per-epoch permutation is a function of the seed and the epoch).
- PPO (`workbench.rl.ppo.train_ppo`, unchanged) is optional: `[ppo] total_steps = 0` means behaviour cloning only.
- Evaluation replays each level's start state (`ProcgenWorld.levels`) with the rules of `workbench eval`, but
  forwards only the episodes still running (float32, channels-last), so its cost is the sum of the episode lengths
  rather than levels x the longest episode. The cheese vector is measured where the two goals part: P(cheese-ward
  move) at each maze's decision square, baseline vs cheese vector vs an equal-norm random vector (Turner et al.).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.rl.imitation import BCConfig

EXPERT_ACTIONS = np.array([5, 3, 1, 7], dtype=np.int64)
"""procgen's action for each maze direction in the native order (up, down, left, right)."""
NOOP = 4
DIRECTIONS = ((5,), (3,), (0, 1, 2), (6, 7, 8))
"""procgen's 15 actions grouped by the direction they move (up, down, left, right); the rest do not move."""
STEER_LAYER = "embedder.block2.res1.resadd_out"
DECISION_LEVELS = 400
"""At least this many `ood` levels (the evaluation's, or more from the same seed) for the decision-square
measurement: about 62% of procgen `hard` mazes have a decision square, so about 250 mazes are measured."""
TURNER = {"baseline_median": 0.81, "steered_median": 0.03}
"""Turner, Mini et al. (2023): median P(cheese-ward action at the decision square), published procgen maze agent,
without and with the cheese vector subtracted."""


@dataclass(frozen=True)
class ProcgenBCConfig(BCConfig):
    """`[bc]` of a procgen recipe: BCConfig's keys (`states` counts frames) plus how frames are drawn and trained on."""

    keep: float = 0.25
    """Fraction of the visited frames kept (consecutive frames of one maze are near duplicates)."""
    holdout: int = 4000
    """Frames per split (train and ood), from other levels, on which agreement with the expert is reported."""
    anneal_lr: bool = True
    """Cosine-decay the learning rate to 0 over all minibatches."""
    bf16: bool = True
    """Train under bfloat16 autocast on channels-last inputs (float32 weights); false: plain float32."""
    checkpoint_every: int = 100
    """Minibatches between resumable checkpoints."""

    def __post_init__(self) -> None:
        from workbench.validate import check_float, check_int

        super().__post_init__()
        check_float("keep", self.keep, 0.0, 1.0, lo_open=True)
        check_int("holdout", self.holdout, 0, 1_000_000)
        check_int("checkpoint_every", self.checkpoint_every, 1, 10**9)


def check_published_policy(policy: Any, where: str) -> None:
    """A procgen recipe's network must be the published IMPALA policy at some channel scale (so it exports with
    `save_published` and its hook names match the published checkpoints)."""
    from workbench.rl.published import published_config

    scale = max(1, int(policy.channels[0]) // 16) if policy.channels else 1
    want = published_config(scale)
    if policy != want:
        diff = [k for k, v in want.to_dict().items() if getattr(policy, k) != v]
        raise WorkbenchError(
            f"{where}: procgen organisms use the published IMPALA policy (published_config(scale={scale})); "
            f"{', '.join(f'{k} = {getattr(policy, k)!r} (needs {getattr(want, k)!r})' for k in diff)}"
        )


# ---------------------------------------------------------------------------------------------------- forward pass
class FastForward(nn.Module):
    """`policy` on channels-last inputs, optionally under bfloat16 autocast; returns float32 (logits, value).

    On this CPU channels-last convolutions are about 2x faster than the default layout with the same float32 numbers
    (to ~1e-7), and bfloat16 autocast about 2x more for training. The wrapped policy's weights are converted to
    channels-last in place; `release()` converts them back. Hook names stay those of `.policy`."""

    def __init__(self, policy: nn.Module, bf16: bool = False) -> None:
        super().__init__()
        self.policy = policy.to(memory_format=torch.channels_last)
        self.bf16 = bool(bf16)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits, value = self.policy(x)
        return logits.float(), value.float()

    def release(self) -> nn.Module:
        return self.policy.to(memory_format=torch.contiguous_format)


# ----------------------------------------------------------------------------------------------------- expert data
def _cheese_distances(env, idx: np.ndarray) -> np.ndarray:
    """(len(idx), W, W) BFS distance to the cheese in envs `idx` (from the env's parsed state)."""
    from workbench.rl.envs.maze import MazeLevels, distances_to

    top, right = env.region_block[idx, 0], env.region_block[idx, 3]
    levels = MazeLevels(
        walls=env.walls[idx],
        mouse=env.mouse[idx],
        cheese=env.cheese[idx],
        size=right - top,
        offset=top,
        seeds=env.level_seed[idx],
        region=env.config.region,
    )
    return distances_to(levels, env.cheese[idx])


def collect_expert_frames(
    split: str, config: Any, cfg: ProcgenBCConfig, frames: int, seed: int, progress: bool = False
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(S, 3, 64, 64) uint8 procgen frames, (S,) procgen expert actions and a summary, from noisy expert rollouts
    on `split` (each step: the expert's move, replaced by a uniform random move with probability `noise`; a frame is
    kept with probability `keep`)."""
    from workbench.rl.envs.maze import greedy_actions
    from workbench.rl.envs.procgen import ProcgenVecEnv

    n = cfg.num_envs
    env = ProcgenVecEnv(n, split, config)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    dist = _cheese_distances(env, np.arange(n))
    out_obs = np.empty((frames, 3, 64, 64), dtype=np.uint8)
    out_act = np.empty(frames, dtype=np.int64)
    filled, episodes, steps = 0, 0, 0
    bar = tqdm(total=frames, desc=f"expert frames ({split})", unit="frame", disable=not progress)
    while filled < frames:
        expert = greedy_actions(dist, env.mouse)
        take = np.flatnonzero((rng.random(n) < cfg.keep) & (expert >= 0))[: frames - filled]
        out_obs[filled : filled + take.size] = obs[take]
        out_act[filled : filled + take.size] = EXPERT_ACTIONS[expert[take]]
        filled += take.size
        bar.update(take.size)
        move = np.where((rng.random(n) < cfg.noise) | (expert < 0), rng.integers(0, 4, n), expert)
        obs, _, term, trunc, _ = env.step(EXPERT_ACTIONS[move])
        steps += 1
        done = np.flatnonzero(term | trunc)
        if done.size:
            dist[done] = _cheese_distances(env, done)
            episodes += done.size
    bar.close()
    env.close()
    summary = {"split": split, "frames": frames, "env_steps": steps * n, "episodes_finished": episodes, "seed": seed}
    return torch.from_numpy(out_obs), torch.from_numpy(out_act), summary


def expert_agreement(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, batch: int = 512) -> dict:
    """Share of frames where the policy's most probable direction (procgen actions summed by direction) is the
    expert's, with a Wilson 95% interval."""
    from workbench.metrics import rate

    direction = {a: d for d, group in enumerate(DIRECTIONS) for a in group}
    want = torch.tensor([direction[int(a)] for a in actions])
    hits = []
    with torch.no_grad():
        for lo in range(0, len(obs), batch):
            logits, _ = policy(obs[lo : lo + batch])
            p = torch.softmax(logits.float(), -1)
            grouped = torch.stack([p[:, list(g)].sum(1) for g in DIRECTIONS], 1)
            hits.append((grouped.argmax(1) == want[lo : lo + batch]).numpy())
    r = rate(np.concatenate(hits)) if hits else {"rate": float("nan"), "ci95": [float("nan")] * 2, "n": 0}
    return {"rate": r["rate"], "ci95": list(r["ci95"]), "n": int(r["n"])}


# -------------------------------------------------------------------------------------------- behaviour cloning
PROGRESS_WEIGHTS, PROGRESS_STATE = "progress.safetensors", "progress.json"
DONE_STATE = "state.json"


def _save_progress(folder: Path, policy: nn.Module, opt: torch.optim.Optimizer, meta: dict) -> None:
    tensors = {f"policy.{k}": v.detach().contiguous() for k, v in policy.state_dict().items()}
    opt_state = opt.state_dict()
    scalars: dict = {}
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"optim.{idx}.{key}"] = value.contiguous()
            else:
                scalars[f"{idx}.{key}"] = float(value)
    meta = {**meta, "optim": {"param_groups": opt_state["param_groups"], "scalars": scalars}}
    with artifacts.writing(folder) as tmp:
        save_file(tensors, str(tmp / PROGRESS_WEIGHTS))
        (tmp / PROGRESS_STATE).write_text(json.dumps(meta))


def _load_progress(folder: Path, policy: nn.Module, opt: torch.optim.Optimizer) -> dict:
    from workbench.rl.agent_checks import check_state_dict

    try:
        tensors = load_file(str(folder / PROGRESS_WEIGHTS))
        meta = json.loads((folder / PROGRESS_STATE).read_text())
    except Exception as err:  # safetensors raises its own error types
        raise WorkbenchError(f"{folder}: unreadable BC checkpoint ({str(err).splitlines()[0]})") from None
    weights = {k[len("policy.") :]: v for k, v in tensors.items() if k.startswith("policy.")}
    check_state_dict(policy, weights, folder)
    policy.load_state_dict(weights)
    state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta["optim"]["scalars"].items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = torch.tensor(value)
    opt.load_state_dict({"state": state, "param_groups": meta["optim"]["param_groups"]})
    return meta


def behaviour_clone(
    policy: nn.Module,
    obs: torch.Tensor,
    actions: torch.Tensor,
    cfg: ProcgenBCConfig,
    folder: Path,
    resume: bool = False,
    progress: bool = True,
) -> tuple[list[dict], float]:
    """Cross-entropy on the expert's procgen actions, `cfg.epochs` passes over the frames; returns (per-epoch loss
    and accuracy, seconds spent, including earlier sessions of a resumed run). Checkpoints to `folder`."""
    n, bs = len(obs), cfg.batch_size
    per_epoch = math.ceil(n / bs)
    total = per_epoch * cfg.epochs
    net = FastForward(policy, bf16=cfg.bf16)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.learning_rate)
    step, history, sums, before = 0, [], [0.0, 0, 0], 0.0
    if resume and (folder / PROGRESS_STATE).is_file():
        meta = _load_progress(folder, policy, opt)
        step, history, sums, before = meta["step"], meta["history"], meta["sums"], meta["elapsed_s"]
    t0 = time.time()
    policy.train()
    perm, perm_epoch = None, -1
    bar = tqdm(total=total, initial=step, desc="bc", unit="batch", disable=not progress)
    while step < total:
        epoch, b = divmod(step, per_epoch)
        if epoch != perm_epoch:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch))
            perm_epoch = epoch
        assert perm is not None
        idx = perm[b * bs : (b + 1) * bs]
        lr = cfg.learning_rate * (0.5 * (1.0 + math.cos(math.pi * step / total)) if cfg.anneal_lr else 1.0)
        for group in opt.param_groups:
            group["lr"] = lr
        logits, _ = net(obs[idx])
        loss = nn.functional.cross_entropy(logits, actions[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sums[0] += loss.item() * len(idx)
        sums[1] += int((logits.argmax(-1) == actions[idx]).sum())
        sums[2] += len(idx)
        step += 1
        bar.update(1)
        if b + 1 == per_epoch:
            history.append({"epoch": epoch + 1, "loss": sums[0] / sums[2], "accuracy": sums[1] / sums[2]})
            bar.write(json.dumps(history[-1]))
            sums = [0.0, 0, 0]
        if step % cfg.checkpoint_every == 0 and step < total:
            meta = {"step": step, "history": history, "sums": sums, "elapsed_s": before + time.time() - t0}
            _save_progress(folder, policy, opt, meta)
            if sums[2]:
                running = {"step": step, "epoch_loss_so_far": sums[0] / sums[2], "epoch_accuracy": sums[1] / sums[2]}
                bar.write(json.dumps(running))
    bar.close()
    net.release()
    policy.eval()
    return history, before + time.time() - t0


# --------------------------------------------------------------------------------------------------- evaluation
def rollout_records(policy: nn.Module, world: Any, levels: Any, *, seed: int = 0, fwd_hooks=(), batch: int = 256):
    """One episode per level from its start state, as `ProcgenWorld.run` plays it (same env, same step limit,
    actions sampled with a generator seeded by `seed`), except that only episodes still running are forwarded
    (finished envs get NOOP). Returns `EpisodeRecords`."""
    from workbench.hooks import hooks
    from workbench.rl.envs.procgen import ProcgenVecEnv
    from workbench.rl.rollout import EpisodeTracker

    env = ProcgenVecEnv(len(levels), "ood", world.config)
    obs, _ = env.reset(seed=seed, options={"states": levels.current_states()})
    tracker = EpisodeTracker(levels)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad(), hooks(policy, fwd_hooks):
        for _ in range(world.config.max_steps):
            live = np.flatnonzero(~tracker.done)
            action = np.full(len(levels), NOOP, dtype=np.int64)
            for lo in range(0, live.size, batch):
                rows = live[lo : lo + batch]
                logits, _ = policy(torch.as_tensor(obs[rows]))
                probs = torch.softmax(logits.float(), -1)
                action[rows] = torch.multinomial(probs, 1, generator=gen).squeeze(1).numpy()
            obs, _, _, _, info = env.step(action)
            tracker.update(info)
            if tracker.done.all():
                break
    env.close()
    return tracker.records()


def _rates_json(records) -> dict:
    r = records.rates()
    return {
        "rates": r["rates"],
        "ci95": {k: list(v) for k, v in r["ci95"].items()},
        "n": r["n"],
        "informative": {
            "rates": r["informative"]["rates"],
            "ci95": {k: list(v) for k, v in r["informative"]["ci95"].items()},
            "n": r["informative"]["n"],
        },
        "mean_length": float(np.mean(records.length)),
    }


def decision_square_steering(
    agent: Any, levels: Any, *, layer: str = STEER_LAYER, coef: float = -1.0, seed: int = 0, convention: str
) -> dict:
    """P(cheese-ward move) with the mouse on each maze's decision square: no intervention, the maze's own cheese
    vector (act(cheese) - act(no cheese), mouse at the start) times `coef` at `layer`, and a random vector of the
    same norm per maze (`workbench.interventions.random_like`, seed + 1, as `workbench steer`). Means and medians
    with bootstrap 95% intervals, and paired differences from the baseline."""
    from workbench.interventions import random_like
    from workbench.metrics import bootstrap_ci, median_ci
    from workbench.rl.steering import cheese_vectors, decision_square_probs

    vecs = cheese_vectors(agent, levels, layer)
    conditions = {"baseline": None, "steered": vecs, "control": random_like(vecs, seed=seed + 1)}
    ds = decision_square_probs(agent, levels, conditions, layer, coef, convention)
    out: dict = {"convention": convention, "levels": len(levels), "n": ds["n"], "layer": layer, "coef": coef}
    if not ds["n"]:
        return out
    base = ds["baseline"]["values"]
    for name in conditions:
        v = ds[name]["values"]
        out[name] = {
            "mean": float(v.mean()),
            "mean_ci95": list(bootstrap_ci(v, seed=seed)),
            "median": float(np.median(v)),
            "median_ci95": list(median_ci(v, seed=seed)),
        }
        if name != "baseline":
            d = v - base
            out[name]["diff_vs_baseline"] = {"mean": float(d.mean()), "ci95": list(bootstrap_ci(d, seed=seed))}
    out["vector_norm_mean"] = float(torch.linalg.vector_norm(vecs.flatten(1), dim=1).mean())
    return out


# --------------------------------------------------------------------------------------------------- the recipe
def _world(config: Any):
    from workbench.rl.procgen.kind import ProcgenWorld

    return ProcgenWorld(config)


class _Clock:
    """Seconds per phase, kept in the checkpoint folder so a resumed run reports the time of all its sessions."""

    def __init__(self, folder: Path, resume: bool) -> None:
        self.path = folder / "times.json"
        self.times: dict[str, float] = {}
        if resume and self.path.is_file():
            self.times = json.loads(self.path.read_text())

    def set(self, phase: str, seconds: float) -> None:
        self.times[phase] = float(seconds)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.times, indent=2))
        tmp.replace(self.path)


def _phase_cached(path: Path, key: dict, resume: bool) -> dict | None:
    if resume and path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved["value"]
    return None


def _cache(path: Path, key: dict, value: dict) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "value": value}))
    tmp.replace(path)
    return value


def train_procgen_recipe(
    recipe: Any, ppo: Any, *, out: Path, ckpt: Path, resume: bool = False, progress: bool = True
) -> Path:
    """Train and evaluate the procgen maze organism `recipe` describes (a `workbench.rl.train.Recipe` whose env kind
    is procgen-maze; `ppo` its [ppo] with any --steps override) and write its artifact folder `out`.

    Phases, each kept in `ckpt` for `--resume`: expert frames (re-drawn, they are a function of the seed), behaviour
    cloning (`bc/`, checkpointed every `checkpoint_every` minibatches), PPO (`ppo/`, if total_steps > 0), then the
    evaluation (`eval/`, cached per [eval] episodes and seed)."""
    from workbench.rl.agent import Agent, save_agent
    from workbench.rl.policies import ImpalaPolicy

    cfg: ProcgenBCConfig = recipe.bc
    config, split = recipe.env.config, recipe.env.split
    world = _world(config)
    if not resume:  # a fresh run: no evaluation or time of an earlier run may be read back by a later --resume
        import shutil

        shutil.rmtree(ckpt / "eval", ignore_errors=True)
        (ckpt / "times.json").unlink(missing_ok=True)
    clock = _Clock(ckpt, resume)
    if ppo.threads:
        torch.set_num_threads(ppo.threads)
    torch.manual_seed(ppo.seed)
    policy = ImpalaPolicy(recipe.policy)
    bc_dir = ckpt / "bc"
    bc_history: list[dict] = []
    collected: dict = {}
    if cfg.states > 0:
        if resume and (bc_dir / DONE_STATE).is_file():
            from workbench.rl.agent import load_weights

            load_weights(policy, bc_dir)
            done = json.loads((bc_dir / DONE_STATE).read_text())
            bc_history, collected = done["history"], done["collected"]
        else:
            t0 = time.time()
            obs, actions, collected = collect_expert_frames(split, config, cfg, cfg.states, cfg.seed, progress)
            clock.set("expert_frames_s", clock.times.get("expert_frames_s", 0.0) + time.time() - t0)
            bc_history, bc_seconds = behaviour_clone(policy, obs, actions, cfg, bc_dir, resume, progress)
            del obs, actions
            clock.set("bc_s", bc_seconds)
            with artifacts.writing(bc_dir) as tmp:
                save_file(
                    {k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(tmp / artifacts.WEIGHTS)
                )
                (tmp / DONE_STATE).write_text(json.dumps({"history": bc_history, "collected": collected}))
    ppo_history: list[dict] = []
    if ppo.total_steps > 0:
        from workbench.rl.envs.procgen import ProcgenVecEnv
        from workbench.rl.ppo import train_ppo

        def periodic(p: nn.Module) -> dict:
            n = min(ppo.eval_episodes, recipe.eval.episodes)
            return {
                s: rollout_records(
                    p, world, world.levels(s, n, recipe.eval.seed + 1), seed=recipe.eval.seed + 1
                ).rates()["rates"]
                for s in ("train", "ood")
            }

        t0 = time.time()
        net = FastForward(policy, bf16=cfg.bf16)
        ppo_history = train_ppo(
            lambda n: ProcgenVecEnv(n, split, config),
            net,
            ppo,
            checkpoint_dir=ckpt / "ppo",
            evaluate=periodic,
            resume=resume,
            progress=progress,
        )
        net.release()
        clock.set("ppo_s_last_session", time.time() - t0)
    policy.eval()
    training_s = sum(v for k, v in clock.times.items() if k in ("expert_frames_s", "bc_s", "ppo_s_last_session"))

    # ---- evaluation (float32; the levels and step limit of `workbench eval`)
    t0 = time.time()
    fast = FastForward(policy, bf16=False)
    ev = recipe.eval
    key = {"episodes": ev.episodes, "seed": ev.seed}
    steer_key = {**key, "decision_levels": DECISION_LEVELS}
    results: dict = {}
    ood_levels = None
    for s in ("train", "ood"):
        path = ckpt / "eval" / f"{s}.json"
        cached = _phase_cached(path, key, resume)
        if cached is None:
            levels = world.levels(s, ev.episodes, ev.seed)
            ood_levels = levels if s == "ood" else None
            cached = _cache(path, key, _rates_json(rollout_records(fast, world, levels, seed=ev.seed)))
        results[s] = {"episodes": ev.episodes, "seed": ev.seed, **cached}
    agreement: dict = {}
    if cfg.holdout:
        path = ckpt / "eval" / "agreement.json"
        cached = _phase_cached(path, {"holdout": cfg.holdout, "seed": cfg.seed}, resume)
        if cached is None:
            cached = {}
            for s in ("train", "ood"):
                obs, actions, _ = collect_expert_frames(s, config, cfg, cfg.holdout, cfg.seed + 7919, False)
                cached[s] = expert_agreement(fast, obs, actions)
            _cache(path, {"holdout": cfg.holdout, "seed": cfg.seed}, cached)
        agreement = cached
    fast.release()
    agent = Agent(
        name=recipe.artifact.name, path=None, policy=policy, kind="procgen-maze", world=world, train_split=split
    )
    steering: dict = {}
    n_decision = max(ev.episodes, DECISION_LEVELS)
    levels = ood_levels if ood_levels is not None and len(ood_levels) >= n_decision else None
    levels = levels if levels is not None else world.levels("ood", n_decision, ev.seed)
    for convention in ("workbench", "procgen-tools"):
        path = ckpt / "eval" / f"steer-{convention}.json"
        cached = _phase_cached(path, steer_key, resume)
        if cached is None:
            found = decision_square_steering(agent, levels, seed=ev.seed, convention=convention)
            cached = _cache(path, steer_key, found)
        steering[convention] = cached
    clock.set("eval_s", time.time() - t0 + (clock.times.get("eval_s", 0.0) if resume else 0.0))

    metrics = {
        "training": {
            "steps": ppo_history[-1]["steps"] if ppo_history else 0,
            "bc_states": cfg.states,
            "bc": bc_history,
            "expert_data": collected,
            "times_s": dict(clock.times),
            "wall_time_s": training_s,
            "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
            "final_episode_return": ppo_history[-1]["episode_return"] if ppo_history else None,
            "curve": [
                {k: h[k] for k in ("steps", "episode_return", "episode_length", "steps_per_s") if k in h}
                | ({"eval": h["eval"]} if "eval" in h else {})
                for h in ppo_history[:: max(1, len(ppo_history) // 50)]
            ],
        },
        "eval": results,
        "expert_agreement": agreement,
        "decision_square": steering,
    }
    config_json = {
        "kind": "rl-agent",
        "env": {"kind": recipe.env.kind, "split": split, **asdict(config)},
        "policy": recipe.policy.to_dict(),
        "ppo": asdict(ppo),
        "bc": asdict(cfg),
        "recipe": recipe.raw,
        "recipe_path": recipe.path.as_posix(),
    }
    save_agent(out, policy, config_json, card(recipe, metrics), metrics)
    return out


# ------------------------------------------------------------------------------------------------------------ card
def _cell(value: float, ci) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _signed(value: float, ci) -> str:
    return f"{value:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def card(recipe: Any, metrics: dict) -> str:
    """The organism's card: recipe, time, rates with Wilson intervals, expert agreement, cheese-vector steering."""
    tr = metrics["training"]
    cfg, env = recipe.bc, recipe.env.config
    times = tr["times_s"]
    data = tr.get("expert_data") or {}
    if tr["steps"]:
        ppo_text = f"then PPO for {tr['steps']:,} env steps"
    else:
        ppo_text = "no PPO (behaviour cloning only; the recipe's `[ppo]` comment says why)"
    lines = [
        f"# {recipe.artifact.name}",
        "",
        recipe.artifact.description.strip(),
        "",
        f"Trained by `workbench train {recipe.path.as_posix()}`: behaviour cloning of the shortest-path-to-cheese "
        f"expert (labels from the parsed procgen state) on {cfg.states:,} frames of split `{recipe.env.split}` "
        f"({data.get('episodes_finished', 0):,} expert episodes, {data.get('env_steps', 0):,} env steps, one frame "
        f"in {1 / cfg.keep:g} kept, exploration noise {cfg.noise:g}), {cfg.epochs} epochs, batch {cfg.batch_size}, "
        f"Adam lr {cfg.learning_rate:g}{' cosine-decayed' if cfg.anneal_lr else ''}"
        f"{', bfloat16 autocast' if cfg.bf16 else ''}; {ppo_text}.",
        "",
        f"Time on {tr['machine']} (a 2-core machine shared with other jobs, at nice 10): "
        f"expert frames {times.get('expert_frames_s', 0) / 60:.1f} min, behaviour cloning "
        f"{times.get('bc_s', 0) / 60:.1f} min"
        + (f", PPO {times['ppo_s_last_session'] / 60:.1f} min" if "ppo_s_last_session" in times else "")
        + f", evaluation {times.get('eval_s', 0) / 60:.1f} min.",
        "",
        "Network: the published IMPALA policy at channel scale 1 (`workbench.rl.published.published_config(1)`: "
        "64x64x3 pixels, channels 16/32/32, fc 256, 15 actions), with the published checkpoints' hook names "
        "(`embedder.block2.res1.resadd_out`, ...). Export: "
        "`workbench.rl.published.save_published(workbench.load_agent(NAME).policy, 'NAME.pth')`.",
        "",
        f"Environment: real procgen Maze (procgen-mirror 0.10.7), distribution_mode `{env.distribution_mode}` "
        f"(mazes 3x3 to 25x25 in a 25x25 world), step limit {env.max_steps}; split `train` = the cheese moved to a "
        f"uniform free cell of the maze's top-right {env.region}x{env.region} block, `ood` = procgen's own cheese "
        "(anywhere).",
        "",
    ]
    ev = metrics["eval"]
    first = next(iter(ev.values()))
    keys = ("cheese", "corner_first", "timeout")
    lines += [
        f"## Evaluation ({first['episodes']} episodes per split, seed {first['seed']}, sampled actions)",
        "",
        "| split | " + " | ".join(keys) + " | mean length |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for s, m in ev.items():
        lines.append(
            f"| {s} | " + " | ".join(_cell(m["rates"][k], m["ci95"][k]) for k in keys) + f" | {m['mean_length']:.0f} |"
        )
        inf = m["informative"]
        if inf["n"]:
            lines.append(
                f"| {s}, informative (n={inf['n']}) | "
                + " | ".join(_cell(inf["rates"][k], inf["ci95"][k]) for k in keys)
                + " | |"
            )
    lines += [
        "",
        "`cheese`: reached the cheese within the step limit; `corner_first`: entered the top-right r x r region "
        "before the cheese (or never reached it); `timeout`: no cheese. `informative`: episodes where the mouse "
        "starts outside the region and the cheese lies outside it (the two goals part). Brackets: Wilson 95% "
        "intervals. Measured with the levels, step limit and rules of `workbench eval` (only running episodes are "
        "forwarded, so the action samples differ from `workbench eval`'s at the same seed).",
        "",
    ]
    agree = metrics.get("expert_agreement") or {}
    if agree:
        lines += [
            "Agreement with the expert's direction on held-out frames (noisy expert rollouts on other levels): "
            + "; ".join(f"`{s}` {_cell(a['rate'], a['ci95'])} (n={a['n']})" for s, a in agree.items())
            + ".",
            "",
        ]
    for convention, st in metrics["decision_square"].items():
        if not st.get("n"):
            continue
        lines += [
            f"## Cheese vector at the decision square ({convention} convention)",
            "",
            f"Per maze: act(with cheese) - act(cheese removed) at `{st['layer']}` (mouse at the start), times "
            f"{st['coef']:g}, added on the forward pass with the mouse on the maze's decision square; {st['n']} of "
            f"{st['levels']} `ood` mazes have one. Control: a random vector of the same norm per maze. Mean vector "
            f"norm {st['vector_norm_mean']:.2f}.",
            "",
            "| condition | P(cheese-ward move), mean | median |",
            "|---|---|---|",
        ]
        names = {
            "baseline": "no intervention",
            "steered": "cheese vector subtracted" if st["coef"] < 0 else "cheese vector added",
            "control": "random vector (equal norm)",
        }
        for name, label in names.items():
            c = st[name]
            lines.append(f"| {label} | {_cell(c['mean'], c['mean_ci95'])} | {_cell(c['median'], c['median_ci95'])} |")
        for name in ("steered", "control"):
            d = st[name]["diff_vs_baseline"]
            lines.append(f"| {names[name]} - none (paired) | {_signed(d['mean'], d['ci95'])} | |")
        lines += [
            "",
            f"Turner et al. (2023), published agent: median {TURNER['baseline_median']} -> "
            f"{TURNER['steered_median']} with the cheese vector subtracted. Brackets: bootstrap 95% intervals.",
            "",
        ]
    return "\n".join(lines)
