"""Load and save trained RL agents as artifact folders (see `workbench.artifacts`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file, save_file

from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.rl.envs.coinrun import CoinRunConfig
from workbench.rl.envs.maze import MazeConfig
from workbench.rl.policies import ImpalaPolicy, PolicyConfig

ENV_CONFIGS: dict[str, type] = {"maze": MazeConfig, "coinrun": CoinRunConfig}
"""Env kind (an artifact's `env.kind`) -> its config dataclass; the one place a new env kind is registered."""
ENV_KINDS = tuple(ENV_CONFIGS)


@dataclass
class Agent:
    """A trained policy with the environment it was trained for. `train_split` is the split it was trained on."""

    name: str
    path: Path
    policy: ImpalaPolicy
    env_kind: str
    env_config: MazeConfig | CoinRunConfig
    train_split: str
    config: dict

    @property
    def card(self) -> str:
        card = self.path / artifacts.CARD
        return card.read_text() if card.is_file() else ""

    @property
    def metrics(self) -> dict:
        return artifacts.read_metrics(self.path)


def load_agent(name_or_path: str | Path) -> Agent:
    """Load an agent by registered name or folder path; weights via safetensors only."""
    folder = artifacts.resolve(name_or_path, "agents")
    cfg = artifacts.read_config(folder)
    if cfg.get("env", {}).get("kind") not in ENV_KINDS:
        raise WorkbenchError(f"{folder}: unsupported env kind {cfg.get('env', {}).get('kind')!r}")
    env_cfg = {k: v for k, v in cfg["env"].items() if k not in ("kind", "split")}
    policy = ImpalaPolicy(PolicyConfig(**cfg["policy"]))
    try:
        state = load_file(str(folder / artifacts.WEIGHTS))
    except (OSError, Exception) as err:  # safetensors raises its own error types for corrupt files
        raise WorkbenchError(f"{folder / artifacts.WEIGHTS}: unreadable weights ({err})") from None
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise WorkbenchError(
            f"{folder}: weights do not match the policy config (missing {missing}, unexpected {unexpected})"
        )
    policy.eval()
    return Agent(
        name=folder.name,
        path=folder,
        policy=policy,
        env_kind=cfg["env"]["kind"],
        env_config=ENV_CONFIGS[cfg["env"]["kind"]](**env_cfg),
        train_split=cfg["env"]["split"],
        config=cfg,
    )


def save_agent(folder: Path, policy: ImpalaPolicy, config: dict, card: str, metrics: dict) -> None:
    """Write an agent artifact atomically: weights, config, card and metrics appear together or not at all."""
    with artifacts.writing(folder) as tmp:
        save_file({k: v.detach().contiguous() for k, v in policy.state_dict().items()}, str(tmp / artifacts.WEIGHTS))
        artifacts.write_json(tmp / artifacts.CONFIG, config)
        artifacts.write_json(tmp / artifacts.METRICS, metrics)
        (tmp / artifacts.CARD).write_text(card)
