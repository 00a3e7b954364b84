"""The env-kind registry (`workbench.rl.env_kinds`): a native env registered from Python is trained, evaluated and
carded by `workbench train` with no other change, and unknown kinds or configs are one line naming the valid ones."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from workbench.errors import WorkbenchError
from workbench.rl import env_kinds
from workbench.rl.env_kinds import env_kind, env_kind_of, register_env_kind

TINY = Path(__file__).resolve().parent.parent / "agents" / "sweep" / "maze-tiny.toml"


@pytest.fixture()
def private_registry(monkeypatch):
    monkeypatch.setattr(env_kinds, "_KINDS", dict(env_kinds._KINDS))


def test_builtins_and_errors():
    from workbench.rl.envs.coinrun import CoinRunConfig
    from workbench.rl.envs.maze import MazeConfig

    assert env_kind_of(MazeConfig()).name == "maze" and env_kind_of(CoinRunConfig()).name == "coinrun"
    assert {"maze", "coinrun", "colour-shape", "keys-chests"} <= set(env_kinds.env_kind_names())
    for name in env_kinds.env_kind_names():  # every built-in is complete and self-consistent
        kind = env_kind(name)
        assert kind.name == name and kind.rate_keys and kind.splits
        shape = kind.policy_shape(kind.config())
        assert set(shape) == {"in_channels", "obs_size", "n_actions"}
    with pytest.raises(WorkbenchError, match="unknown env kind 'mazee'.*maze"):
        env_kind("mazee")
    with pytest.raises(WorkbenchError, match="not the config of a native env kind"):
        env_kind_of(object())
    with pytest.raises(WorkbenchError, match="EnvKind"):
        register_env_kind("maze")


def test_a_registered_kind_trains_through_the_recipe_path(private_registry, tmp_path, monkeypatch):
    """`my-maze`: the maze under another name and description; the recipe names it and nothing else changes."""
    from workbench.rl.train import train_recipe

    register_env_kind(
        dataclasses.replace(env_kind("maze"), name="my-maze", describe=lambda cfg, split: f"My maze, split {split}.")
    )
    recipe = tmp_path / "my-maze.toml"
    recipe.write_text(TINY.read_text().replace('kind = "maze"', 'kind = "my-maze"').replace('"maze-tiny"', '"my-tiny"'))
    monkeypatch.chdir(tmp_path)
    out = train_recipe(recipe, out=tmp_path / "my-tiny", progress=False, total_steps=0)
    config = json.loads((out / "config.json").read_text())
    assert config["env"]["kind"] == "my-maze"
    card = (out / "card.md").read_text()
    assert "My maze, split train." in card and "| ood |" in card
    bad = tmp_path / "bad.toml"
    bad.write_text(recipe.read_text().replace('kind = "my-maze"', 'kind = "my-mazes"'))
    with pytest.raises(WorkbenchError, match="my-maze"):
        train_recipe(bad, out=tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
