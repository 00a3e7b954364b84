"""The coin vector for CoinRun agents: a difference-of-means direction from paired observations, and steering with it.

Why paired and why states along rollouts: the egocentric view shows the coin only when it is near, so the start
state (used for the maze's cheese vector) usually has no coin in view. We roll the policy out on `ood` levels, keep
every state where the coin is in view, and pair each with the *same* state with the coin removed (terrain, agent,
jump counter, exit all equal). The coin vector is the mean over pairs of act(coin) - act(no coin) at one hook.

Steering adds `coef * vector` on every forward pass during fresh `ood` rollouts and compares, on the same levels and
action seed, with the un-intervened run and a random Gaussian vector of equal norm
(`workbench.rl.steering.compare_interventions`): coin and exit rates with Wilson CIs, paired differences with
bootstrap CIs. The direction is fitted on levels disjoint from the evaluation levels.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.hooks import run_with_cache
from workbench.policy import policy_logits
from workbench.rl.agent import Agent
from workbench.rl.coinrun.physics import concat_levels  # noqa: F401 (moved; re-exported)
from workbench.rl.coinrun.rollout import RATE_KEYS, CoinRunTracker, CoinRunTrajectory, play_level
from workbench.rl.envs.coinrun import CoinRunConfig, CoinRunLevels, CoinRunVecEnv, observe

VECTORS = ("coin",)
FIT_SEED_OFFSET = 1_000_003  # direction levels: seed + this, disjoint from the evaluation levels


def coin_in_view(levels: CoinRunLevels, view: int) -> np.ndarray:
    """(N,) bool: the coin is present and inside the agent's (2v+1)^2 window."""
    rel = np.abs(levels.coin - levels.agent)
    return levels.has_coin() & np.all(rel <= view, axis=1)


def rollout_states(
    agent: Agent, levels: CoinRunLevels, seed: int, keep=None, max_states: int | None = None
) -> CoinRunLevels:
    """Snapshots of every state the policy visits (one sampled episode per level, as `run_episodes`) for which
    `keep(levels_now) -> (N,) bool` holds (default: all), recorded before each step's action."""
    cfg: CoinRunConfig = agent.env_config
    n = len(levels)
    env = CoinRunVecEnv(n, "train", CoinRunConfig(**{**cfg.__dict__, "random_coin_percent": 0.0}))
    obs, _ = env.reset(seed=seed, options={"levels": levels})
    gen = torch.Generator().manual_seed(seed)
    tracker = CoinRunTracker(levels)
    parts, total = [], 0
    with torch.no_grad():
        for _ in range(cfg.max_steps):
            assert env.levels is not None
            mask = ~tracker.done & (np.ones(n, dtype=bool) if keep is None else keep(env.levels))
            if mask.any():
                parts.append(env.levels.select(np.flatnonzero(mask)))
                total += int(mask.sum())
            if max_states is not None and total >= max_states:
                break
            probs = torch.softmax(policy_logits(agent.policy, torch.as_tensor(obs)), dim=-1)
            obs, _, _, _, info = env.step(torch.multinomial(probs, 1, generator=gen).squeeze(1).numpy())
            tracker.update(info)
            if tracker.done.all():
                break
    if not parts:
        raise WorkbenchError("no rollout state matched (e.g. the coin never came into view); use more episodes")
    out = concat_levels(parts)
    return out if max_states is None else out.select(slice(0, max_states))


def activations(agent: Agent, levels: CoinRunLevels, layer: str, batch: int = 1024) -> Tensor:
    """(N, ...) activations at `layer` for the levels' current states (only `layer` is cached)."""
    view = agent.env_config.view
    out = []
    with torch.no_grad():
        for lo in range(0, len(levels), batch):
            obs = torch.as_tensor(observe(levels.select(slice(lo, lo + batch)), view))
            _, cache = run_with_cache(agent.policy, obs, names_filter=layer)
            out.append(cache[layer])
    return torch.cat(out)


def coin_direction(
    agent: Agent, layer: str, episodes: int = 300, seed: int = 0, max_pairs: int = 5000
) -> tuple[Tensor, dict]:
    """The coin vector (one example's activation shape) at `layer`: mean of act(coin in view) - act(same state, coin
    removed) over up to `max_pairs` rollout states of `episodes` `ood` levels drawn with `seed`. Also returns
    `{"pairs", "episodes", "seed", "norm"}`."""
    levels = agent.world.levels("ood", episodes, seed)
    view = agent.env_config.view
    states = rollout_states(agent, levels, seed, keep=lambda lv: coin_in_view(lv, view), max_states=max_pairs)
    diff = activations(agent, states, layer) - activations(agent, states.without_coin(), layer)
    vec = diff.mean(0)
    info = {"pairs": len(states), "episodes": episodes, "seed": seed, "norm": float(torch.linalg.vector_norm(vec))}
    return vec, info


def steer_coinrun(
    agent: Agent,
    vector: str = "coin",
    coef: float = -1.0,
    layer: str = "embedder.block2.res1.resadd_out",
    split: str = "ood",
    episodes: int = 200,
    seed: int = 0,
    direction_episodes: int = 300,
) -> dict:
    """Steer a CoinRun agent with the coin vector (fitted on levels disjoint from the evaluation's) on `episodes`
    levels of `split`; baseline / steered / random equal-norm control. Returns a JSON-ready summary."""
    from workbench.rl.steering import check_layer, compare_interventions

    if vector not in VECTORS:
        raise unknown("vector", vector, VECTORS)
    check_layer(agent, layer)
    if episodes < 1:
        raise WorkbenchError(f"episodes must be >= 1, got {episodes}")
    levels = agent.world.levels(split, episodes, seed)
    vec, info = coin_direction(agent, layer, direction_episodes, seed + FIT_SEED_OFFSET)
    result = {
        "artifact": agent.name,
        "vector": vector,
        "coef": coef,
        "layer": layer,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "direction": info,
    }
    return {**result, **compare_interventions(agent, levels, vec, coef, layer, per_level=False, seed=seed)}


def steering_text(result: dict) -> str:
    """A plain-text table of a `steer_coinrun` result: rates per condition and paired effects vs baseline."""
    lines = [
        f"{result['artifact']}: {result['vector']} vector x {result['coef']:+g} at {result['layer']} on "
        f"{result['episodes']} {result['split']} levels (seed {result['seed']}); direction from "
        f"{result['direction']['pairs']} paired states, norm {result['direction']['norm']:.3f}",
        f"{'condition':>10} " + " ".join(f"{k:>24}" for k in RATE_KEYS),
    ]
    for cond in ("baseline", "steered", "control"):
        r = result[cond]
        cells = [f"{r['rates'][k]:.3f} [{r['ci95'][k][0]:.3f},{r['ci95'][k][1]:.3f}]" for k in RATE_KEYS]
        lines.append(f"{cond:>10} " + " ".join(f"{c:>24}" for c in cells))
    for cond in ("steered", "control"):
        e = result["effects"][cond]
        cells = [f"{e[k]['diff']:+.3f} [{e[k]['ci95'][0]:+.3f},{e[k]['ci95'][1]:+.3f}]" for k in RATE_KEYS]
        lines.append(f"{'d ' + cond:>10} " + " ".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def steer_level(
    agent: Agent, level: CoinRunLevels, vector: Tensor, coef: float, layer: str, seed: int = 0
) -> dict[str, CoinRunTrajectory]:
    """One level played three ways on the same action seed: `baseline` (no hook), `steered` (coef * vector added at
    `layer` on every forward pass) and `control` (coef * a random vector of the vector's norm,
    `workbench.interventions.random_like(vector, seed + 1)`, as `compare_interventions` draws it). Each is a
    `play_level` trajectory with activations at `layer`. vector: one example's activation shape at `layer`."""
    from workbench.interventions import add_vector, random_like
    from workbench.rl.steering import check_layer

    check_layer(agent, layer)
    control = random_like(vector.unsqueeze(0), seed=seed + 1)[0]
    hooks = {
        "baseline": [],
        "steered": [(layer, add_vector(vector, coef))],
        "control": [(layer, add_vector(control, coef))],
    }
    return {
        name: play_level(agent.policy, level, agent.env_config, seed=seed, fwd_hooks=fwd, layer=layer)
        for name, fwd in hooks.items()
    }


__all__ = [
    "VECTORS",
    "coin_direction",
    "coin_in_view",
    "rollout_states",
    "steer_coinrun",
    "steer_level",
    "steering_text",
]
