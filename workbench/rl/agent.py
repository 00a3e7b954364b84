"""RL subjects: a policy with hook points plus the world it acts in, loaded from or saved to artifact folders.

Why one `Agent` for every RL kind: the verbs (eval, steer, probe, vector fields, collection, SAEs) need the policy,
its world (`agent.world`: levels per split, observations, rollouts with goal-outcome records) and where it came
from. Shipped organisms, a user's own artifact folder, a published procgen checkpoint and a policy registered from
Python all become the same object; `agent.kind` names the registry entry (`workbench.subjects`) that serves it.

Artifact `config.json` layout (what `save_agent` writes and `load_agent` reads):
    {"kind": "rl-agent",
     "env": {"kind": "maze" | "coinrun", "split": "train", ...env config fields (MazeConfig / CoinRunConfig)},
     "policy": {...PolicyConfig fields}                       # our IMPALA net, or
     "policy": {"factory": "pkg.mod:build", "kwargs": {...}}  # any nn.Module built by an importable factory
     ...anything else (training record) is kept and ignored}
plus `weights.safetensors` (the policy's state dict), `card.md` and `metrics.json`.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from workbench import artifacts
from workbench.errors import WorkbenchError, closest
from workbench.rl.policies import ImpalaPolicy, PolicyConfig


def __getattr__(name: str) -> Any:
    """`ENV_CONFIGS` and `ENV_KINDS`, re-exported from `workbench.rl.agent_checks` (read from the env-kind registry
    when asked, not at import: the kinds' packages import this module)."""
    if name in ("ENV_CONFIGS", "ENV_KINDS"):
        from workbench.rl import agent_checks

        return getattr(agent_checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class Agent:
    """A policy with the world it acts in.

    Attributes:
        name: display name (artifact folder name, checkpoint file name, or the registered name).
        path: where it was loaded from (None for a policy built in Python).
        policy: the `nn.Module`; maps observations to logits or `(logits, value)` (see `workbench.policy`).
        kind: the registry kind (`maze`, `coinrun`, `procgen-maze`, `procgen-coinrun`, or a user's own).
        world: levels, observations and rollouts for this kind (`workbench.rl.world.World`).
        train_split: the split it was trained on (`train` for the shipped organisms; None when unknown).
        config: the artifact's config.json (empty for checkpoints and Python-built agents).
    """

    name: str
    path: Path | None
    policy: nn.Module
    kind: str
    world: Any
    train_split: str | None = "train"
    config: dict | None = None

    @property
    def env_config(self) -> Any:
        """The world's env config (MazeConfig, CoinRunConfig, ProcgenConfig)."""
        return self.world.config

    @property
    def env_kind(self) -> str:
        """The world family (`maze` or `coinrun`): native and procgen mazes share every maze analysis."""
        return self.world.family

    @property
    def card(self) -> str:
        if self.path is None or not self.path.is_dir():
            return ""
        card = self.path / artifacts.CARD
        return card.read_text() if card.is_file() else ""

    @property
    def metrics(self) -> dict:
        return artifacts.read_metrics(self.path) if self.path is not None and self.path.is_dir() else {}


def make_agent(
    policy: nn.Module,
    *,
    env: str = "maze",
    env_config: Any = None,
    name: str = "custom-policy",
    train_split: str | None = None,
    path: Path | None = None,
) -> Agent:
    """An `Agent` from any policy module and an env kind (`maze`, `coinrun`, `procgen-maze`, `procgen-coinrun`):
    what a `workbench.register_subject` factory returns. `env_config` defaults to the kind's default config."""
    if not isinstance(policy, nn.Module):
        raise WorkbenchError(f"make_agent needs an nn.Module policy, got {type(policy).__name__}")
    world = _world_factory(env)(env_config)
    policy.eval()
    return Agent(name=name, path=path, policy=policy, kind=env, world=world, train_split=train_split, config={})


def _world_factory(env: str):
    from workbench.subjects import get_kind

    fn = get_kind(env).verbs.get("world")
    if fn is None:
        raise WorkbenchError(
            f"{env} is not an RL env kind; make_agent takes maze, coinrun, procgen-maze, procgen-coinrun"
        )
    return fn


def _build_policy(spec: Any, folder: Path) -> nn.Module:
    """The policy module an artifact's `policy` section describes (IMPALA config or an importable factory)."""
    where = folder / artifacts.CONFIG
    if not isinstance(spec, dict):
        raise WorkbenchError(f"{where}: no 'policy' section (IMPALA config fields or {{'factory': 'module:callable'}})")
    if "factory" in spec:
        module, _, attr = str(spec["factory"]).partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise WorkbenchError(f"{where}: policy factory {spec['factory']!r} does not import ({err})") from None
        policy = factory(**spec.get("kwargs", {}))
        if not isinstance(policy, nn.Module):
            raise WorkbenchError(f"{where}: policy factory {spec['factory']!r} returned {type(policy).__name__}")
        return policy
    valid = [f.name for f in fields(PolicyConfig)]
    for key in spec:
        if key not in valid:
            hits = closest(key, valid)
            raise WorkbenchError(
                f"{where}: unknown policy key {key!r}" + (f"; did you mean {hits[0]}?" if hits else "")
            )
    try:
        return ImpalaPolicy(PolicyConfig(**spec))
    except TypeError as err:
        raise WorkbenchError(f"{where}: bad policy section ({err})") from None


def load_weights(policy: nn.Module, folder: Path) -> None:
    """Load `weights.safetensors` into `policy` after `check_state_dict` (missing/unexpected keys, shapes, dtypes,
    NaNs named in one line)."""
    from workbench.rl.agent_checks import check_state_dict

    try:
        state = load_file(str(folder / artifacts.WEIGHTS))
    except Exception as err:  # safetensors raises its own error types for corrupt or missing files
        raise WorkbenchError(f"{folder / artifacts.WEIGHTS}: unreadable weights ({err})") from None
    check_state_dict(policy, state, folder)
    policy.load_state_dict(state)


def load_agent(name_or_path: str | Path) -> Agent:
    """Load any RL subject reference (shipped name, artifact folder, registered name, `module:factory`); a
    published `.pth` needs its env, so use `workbench.load_subject(path, env="procgen-maze")` for those."""
    from workbench.subjects import load_subject

    agent = load_subject(name_or_path)
    if not isinstance(agent, Agent):
        raise WorkbenchError(
            f"{str(name_or_path)!r} is not an RL agent (it is a {getattr(agent, 'kind', '?')} subject)"
        )
    return agent


def load_agent_folder(folder: Path, world_for) -> Agent:
    """An agent artifact folder as an `Agent`; `world_for(env_section) -> World` builds the world of its kind."""
    from workbench.rl.agent_checks import check_agent_config

    cfg = artifacts.read_config(folder)
    check_agent_config(cfg, folder)  # env and policy sections, and that they fit each other, before building
    env = cfg["env"]
    policy = _build_policy(cfg.get("policy"), folder)
    load_weights(policy, folder)
    policy.eval()
    world = world_for({k: v for k, v in env.items() if k not in ("kind", "split")}, where=folder / artifacts.CONFIG)
    return Agent(
        name=folder.name,
        path=folder,
        policy=policy,
        kind=env["kind"],
        world=world,
        train_split=env.get("split"),
        config=cfg,
    )


def save_agent(
    folder: Path,
    policy: nn.Module,
    config: dict | None = None,
    card: str = "",
    metrics: dict | None = None,
    *,
    env: str | None = None,
    env_config: Any = None,
    factory: str | None = None,
    factory_kwargs: dict | None = None,
) -> Path:
    """Write an agent artifact atomically: weights, config, card and metrics appear together or not at all.

    Recipes pass a full `config`. Users pass `env=` ("maze" or "coinrun"; `env_config` defaults to the kind's
    default) and, for a policy that is not our IMPALA net, `factory="pkg.mod:build"` (+ `factory_kwargs`) so the
    folder can rebuild it; the result loads by folder in every verb."""
    folder = Path(folder)
    if config is None:
        if env is None:
            raise WorkbenchError("save_agent needs env= (maze or coinrun) when no full config is given")
        world = make_agent(policy, env=env, env_config=env_config).world
        if isinstance(policy, ImpalaPolicy):
            spec: dict = asdict(policy.config)
        elif factory:
            spec = {"factory": factory, "kwargs": dict(factory_kwargs or {})}
        else:
            raise WorkbenchError(
                f"save_agent: {type(policy).__name__} is not an ImpalaPolicy; pass factory='module:callable' so the "
                "folder can rebuild it"
            )
        config = {"kind": "rl-agent", "env": {"kind": env, "split": "train", **asdict(world.config)}, "policy": spec}
    with artifacts.writing(folder) as tmp:
        save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(tmp / artifacts.WEIGHTS))
        artifacts.write_json(tmp / artifacts.CONFIG, config)
        artifacts.write_json(tmp / artifacts.METRICS, metrics or {})
        (tmp / artifacts.CARD).write_text(card)
    return folder
