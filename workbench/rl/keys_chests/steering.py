"""The key direction for keys-and-chests agents, and whether subtracting it stops keys being collected beyond need.

Directions (difference of means at one hook, fitted on the agent's own `ood` rollout states of levels disjoint from
the evaluation levels):
- `key`: mean over states with a key in the room of act(state) - act(same state with every key removed), the
  maze's cheese vector made a shared direction (pairs differ only in the keys);
- `key-needed`: mean act over states where a key is needed minus mean act over states where none is (key-seeking
  versus chest-seeking phases).

Steering adds `coef * direction` on every forward pass (coef = -1 subtracts it) during fresh rollouts and compares,
on the same levels and action seed, with the un-intervened run and a random Gaussian direction of equal norm: rates
with Wilson intervals, mean excess keys / chests opened / keys collected / steps with bootstrap intervals, and paired
differences against the baseline with paired-bootstrap intervals (`workbench.metrics.paired_diff_ci`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from workbench.errors import WorkbenchError, unknown
from workbench.interventions import add_vector, random_like
from workbench.metrics import paired_diff_ci
from workbench.rl.keys_chests.probes import DEFAULT_LAYER, activations, check_layer
from workbench.rl.keys_chests.rollout import levels_for, rollout_states
from workbench.rl.world import check_split

VECTORS = ("key", "key-needed")
FIT_SEED_OFFSET = 1_000_003
"""Direction levels are drawn with seed + this: disjoint from the evaluation levels."""


def key_direction(
    agent, *, vector: str = "key", layer: str = DEFAULT_LAYER, episodes: int = 300, seed: int = 0
) -> dict:
    """`{"vector": (C, H, W) tensor, "states": how many states it averages, "norm"}` fitted on `episodes` `ood`
    levels drawn with `seed + FIT_SEED_OFFSET`."""
    if vector not in VECTORS:
        raise unknown("vector", vector, VECTORS)
    check_layer(agent, layer)
    levels = levels_for("ood", episodes, seed + FIT_SEED_OFFSET, agent.env_config)
    states = rollout_states(agent.policy, levels, agent.env_config, seed=seed + FIT_SEED_OFFSET).states
    if vector == "key":
        with_keys = states.select(np.flatnonzero(states.keys_left() > 0))
        if len(with_keys) == 0:
            raise WorkbenchError("no rollout state had a key in the room; use more episodes")
        diff = activations(agent.policy, with_keys, layer) - activations(agent.policy, with_keys.without_keys(), layer)
        vec, n = diff.mean(0), len(with_keys)
    else:
        need = states.key_needed()
        if need.all() or not need.any():
            raise WorkbenchError("key-needed direction needs states with and without a needed key; use more episodes")
        acts = activations(agent.policy, states, layer)
        mask = torch.as_tensor(need)
        vec, n = acts[mask].mean(0) - acts[~mask].mean(0), len(states)
    return {"vector": vec, "states": int(n), "norm": float(torch.linalg.vector_norm(vec))}


def compare(agent, levels, vector: Tensor, *, coef: float, layer: str, seed: int = 0) -> dict:
    """Baseline / steered / equal-norm random control on the same levels and action seed (see the module
    docstring). `effect` and `control_effect` hold each condition's paired difference from the baseline, flat."""
    control = random_like(vector.unsqueeze(0), seed=seed + 1)[0]  # one shared direction: match its whole norm
    conditions = {"baseline": None, "steered": vector, "control": control}
    records = {
        name: agent.world.run(
            agent.policy, levels, seed=seed, fwd_hooks=[] if v is None else [(layer, add_vector(v, coef))]
        )
        for name, v in conditions.items()
    }
    out: dict = {name: rec.rates() for name, rec in records.items()}
    base = records["baseline"]
    series = {**base.flags(), **base.values()}
    effects: dict = {}
    for name in ("steered", "control"):
        other = {**records[name].flags(), **records[name].values()}
        effects[name] = {
            k: {
                key: val
                for key, val in paired_diff_ci(series[k].astype(float), other[k].astype(float), seed=seed).items()
                if key in ("diff", "ci95")
            }
            for k in series
        }
    out["effects"] = effects
    out["effect"], out["control_effect"] = effects["steered"], effects["control"]
    return out


def steer_verb(
    agent,
    *,
    vector: str = "key",
    coef: float = -1.0,
    layer: str = DEFAULT_LAYER,
    split: str = "ood",
    episodes: int = 200,
    seed: int = 0,
    probe_episodes: int = 300,
    **_: object,
):
    """`workbench steer`: add `coef` x the key direction (`--vector key` or `key-needed`; fitted on
    `probe_episodes` disjoint `ood` levels) on every forward pass over `episodes` levels of `split`, against the
    un-intervened run and an equal-norm random direction; excess keys and chests opened with intervals."""
    from workbench.rl.verbs import VerbResult

    vector = "key" if vector == "cheese" else vector  # the CLI's default names the maze's vector
    if vector not in VECTORS:
        raise unknown("vector", vector, VECTORS)
    check_split(agent.world, split)
    check_layer(agent, layer)
    if int(episodes) < 1 or int(probe_episodes) < 1:
        raise WorkbenchError(f"episodes and probe_episodes must be >= 1, got {episodes} and {probe_episodes}")
    direction = key_direction(agent, vector=vector, layer=layer, episodes=probe_episodes, seed=seed)
    levels = levels_for(split, episodes, seed, agent.env_config)
    result = {
        "artifact": agent.name,
        "subject_kind": agent.kind,
        "vector": vector,
        "coef": coef,
        "layer": layer,
        "split": split,
        "episodes": episodes,
        "seed": seed,
        "direction": {
            "kind": "paired keys present - keys removed" if vector == "key" else "key needed - not needed",
            "states": direction["states"],
            "episodes": probe_episodes,
            "seed": seed + FIT_SEED_OFFSET,
            "norm": direction["norm"],
        },
        **compare(agent, levels, direction["vector"], coef=coef, layer=layer, seed=seed),
    }
    return VerbResult(result, steering_text(result))


def steering_text(result: dict) -> str:
    """Per condition: mean excess keys, chests opened and the all-possible-chests rate; effects against baseline."""
    head = (
        f"{result['vector']} direction x {result['coef']:+g} at {result['layer']} on {result['episodes']} "
        f"{result['split']} levels (direction norm {result['direction']['norm']:.3f}, {result['direction']['states']} "
        "states)"
    )
    lines = [head, f"{'condition':>9} {'excess keys':>22} {'chests opened':>22} {'opened all possible':>24}"]
    for cond in ("baseline", "steered", "control"):
        r = result[cond]
        ex, ch = r["means"]["excess_keys"], r["means"]["chests_opened"]
        op, op_ci = r["rates"]["opened_all_possible"], r["ci95"]["opened_all_possible"]
        lines.append(
            f"{cond:>9} {ex['mean']:>7.3f} [{ex['ci95'][0]:.3f},{ex['ci95'][1]:.3f}] "
            f"{ch['mean']:>7.3f} [{ch['ci95'][0]:.3f},{ch['ci95'][1]:.3f}] {op:>9.3f} [{op_ci[0]:.3f},{op_ci[1]:.3f}]"
        )
    for cond in ("steered", "control"):
        e = result["effects"][cond]
        parts = [
            f"{k} {e[k]['diff']:+.3f} [{e[k]['ci95'][0]:+.3f},{e[k]['ci95'][1]:+.3f}]"
            for k in ("excess_keys", "chests_opened", "opened_all_possible")
        ]
        lines.append(f"{cond} - baseline (paired): " + "; ".join(parts))
    return "\n".join(lines)
