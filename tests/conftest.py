"""Shared fixtures: a tiny agent artifact in a temporary registry, and a CLI runner that sees exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from workbench.rl.agent import save_agent
from workbench.rl.envs.maze import MazeConfig
from workbench.rl.policies import ImpalaPolicy, PolicyConfig

TINY_POLICY = PolicyConfig(channels=(4, 8, 8), pool=(False, True, True), hidden=16)
TINY_ENV = MazeConfig(max_steps=40)


def make_tiny_agent(folder: Path, seed: int = 0) -> ImpalaPolicy:
    torch.manual_seed(seed)
    policy = ImpalaPolicy(TINY_POLICY)
    config = {
        "kind": "rl-agent",
        "env": {"kind": "maze", "split": "train", **TINY_ENV.__dict__},
        "policy": TINY_POLICY.to_dict(),
    }
    save_agent(folder, policy, config, card="# tiny\n", metrics={})
    return policy


@pytest.fixture()
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary artifacts root holding `agents/tiny-maze` (random weights, 40-step episodes)."""
    root = tmp_path / "artifacts"
    make_tiny_agent(root / "agents" / "tiny-maze")
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(root))
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "results.duckdb"))
    return root


@pytest.fixture()
def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Run `workbench ARGS...` in-process through the real entry point; returns (exit code, stdout, stderr)."""
    from workbench.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["workbench", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


TINY_COINRUN_POLICY = PolicyConfig(
    in_channels=5, obs_size=13, channels=(4, 8, 8), pool=(True, True, True), hidden=16, n_actions=6
)


def make_tiny_coinrun_agent(folder: Path, seed: int = 0) -> ImpalaPolicy:
    """A random-weight CoinRun agent artifact (40-step episodes, short levels) for fast pipeline tests."""
    from workbench.rl.envs.coinrun import CoinRunConfig

    torch.manual_seed(seed)
    policy = ImpalaPolicy(TINY_COINRUN_POLICY)
    env = CoinRunConfig(min_length=16, max_length=20, max_steps=40)
    config = {
        "kind": "rl-agent",
        "env": {"kind": "coinrun", "split": "train", **env.__dict__},
        "policy": TINY_COINRUN_POLICY.to_dict(),
    }
    save_agent(folder, policy, config, card="# tiny coinrun\n", metrics={})
    return policy


@pytest.fixture()
def coinrun_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary artifacts root holding `agents/tiny-coinrun` (random weights, 40-step episodes)."""
    root = tmp_path / "artifacts"
    make_tiny_coinrun_agent(root / "agents" / "tiny-coinrun")
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(root))
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "results.duckdb"))
    return root
