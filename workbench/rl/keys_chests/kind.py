"""Keys and chests as a subject kind and a native env kind: its world, its verbs and its `EnvKind` entry.

Verbs: `eval` is the generic `evaluate_subject` plus the means it cannot know of (excess keys, chests opened, with
bootstrap intervals); `hooks` is generic; `probe`, `steer` and `collect` live in this package
(`probes.py`, `steering.py`, `collect.py`) and reuse the generic engines (the one rollout loop, `workbench.probes`,
`workbench.interventions`, `workbench.metrics`, `workbench.data`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from workbench.rl.env_kinds import EnvKind
from workbench.rl.keys_chests.env import OBS_CHANNELS, SPLITS, KeysChestsConfig
from workbench.rl.keys_chests.rollout import RATE_KEYS
from workbench.rl.native_kind import Lazy, RolloutWorld, load_folder, rl_verbs, world_for
from workbench.subjects import SubjectKind

NAME = "keys-chests"


@dataclass
class NativeKeysChestsWorld(RolloutWorld):
    """The numpy-batched keys-and-chests room (`workbench.rl.keys_chests.env`): (N, 5, W, W) planes, 4 actions."""

    config: KeysChestsConfig
    kind: str = NAME
    family: str = NAME
    splits: tuple[str, ...] = SPLITS
    rate_keys: tuple[str, ...] = RATE_KEYS
    rollout_states: bool = True
    rollout: ClassVar[str] = "workbench.rl.keys_chests.rollout"


def world(env_config: Any = None, where: Any = None) -> NativeKeysChestsWorld:
    """The world for an env config: a KeysChestsConfig, a dict of its fields (an artifact's env section), or None."""
    return world_for(NativeKeysChestsWorld, KeysChestsConfig, env_config, where)


def load(ref: str) -> Any:
    return load_folder(ref, world)


# ---------------------------------------------------------------------------------------------------------- verbs
def evaluate(agent: Any, *, split: str = "ood", episodes: int = 500, seed: int = 0) -> Any:
    """`evaluate_subject` (rates with Wilson intervals) plus `means`: chests opened, keys collected, excess keys and
    steps per episode with percentile-bootstrap 95% intervals (and the same on the informative levels)."""
    from workbench.rl import verbs

    result = verbs.evaluate_subject(agent, split=split, episodes=episodes, seed=seed)
    summary = agent.world.run(agent.policy, agent.world.levels(split, episodes, seed), seed=seed).rates()
    result.data["means"] = summary["means"]
    result.data["informative"]["means"] = summary["informative"]["means"]
    lines = [
        f"{'mean ' + k:>24}: {v['mean']:.3f}  [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"
        for k, v in summary["means"].items()
    ]
    return verbs.VerbResult(result.data, result.text + "\n" + "\n".join(lines))


def probe(agent: Any, **options: Any) -> Any:
    from workbench.rl.keys_chests.probes import probe_verb

    return probe_verb(agent, **options)


def steer(agent: Any, **options: Any) -> Any:
    from workbench.rl.keys_chests.steering import steer_verb

    return steer_verb(agent, **options)


def collect(agent: Any, **options: Any) -> Any:
    from workbench.rl.keys_chests.collect import collect_verb

    return collect_verb(agent, **options)


def _verbs() -> dict:
    return rl_verbs(world, {"eval": evaluate, "probe": probe, "steer": steer, "collect": collect})


def _battery():
    from workbench.rl.keys_chests.battery import adapter

    return adapter()


KIND = SubjectKind(
    name=NAME,
    summary="keys-and-chests agents (artifact folders; 5-plane room observations with an inventory strip, 4 actions)",
    load=load,
    verbs=_verbs(),
    battery=_battery(),
)


# -------------------------------------------------------------------------------------------------------- env kind
def _policy_shape(config: KeysChestsConfig) -> dict[str, int]:
    return {"in_channels": len(OBS_CHANNELS), "obs_size": config.world_size, "n_actions": 4}


def _describe(m: KeysChestsConfig, split: str) -> str:
    def span(lo_hi) -> str:
        return f"{lo_hi[0]}-{lo_hi[1]}"

    return (
        f"Environment: keys and chests, open {m.size}x{m.size} room, step limit {m.max_steps}; keys/chests per level: "
        f"train {span(m.train_keys)}/{span(m.train_chests)}, ood {span(m.ood_keys)}/{span(m.ood_chests)}, "
        f"mixed {span(m.mixed_keys)}/{span(m.mixed_chests)}; trained on split `{split}`."
    )


ENV = EnvKind(
    name=NAME,
    config=KeysChestsConfig,
    vec_env=Lazy("workbench.rl.keys_chests.env:KeysChestsVecEnv"),
    policy_shape=_policy_shape,
    rollout=NativeKeysChestsWorld.rollout,
    expert=Lazy("workbench.rl.keys_chests.expert:collect_expert_data"),
    expert_phrase="the nearest-useful-object expert (a key while one is needed, else a chest while holding a key)",
    describe=_describe,
    rate_notes="`opened_all_possible`: opened min(keys, chests) chests, all the level allows; `all_chests_opened`: "
    "opened every chest; `excess_key`: picked up at least one key while already holding as many keys as there were "
    "closed chests (the instrumental goal pursued as terminal); `timeout`: step limit hit. Brackets: Wilson 95% "
    "intervals. Mean excess keys and chests opened with bootstrap intervals: `workbench eval SUBJECT --json`.",
    splits=SPLITS,
    proxy=("excess_key", "ood.informative.excess_key"),
)
"""Keys and chests in the env-kind registry (`workbench.rl.env_kinds`): what recipe training needs."""
