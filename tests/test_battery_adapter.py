"""Batteries on a kind battery.py has never heard of: a new subject kind brings its checks with a `BatteryAdapter`
(workbench.subjects), and generic behaviour checks work on any RL kind from its world's rollout rates."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

import workbench
from tests.test_subjects import SMALL, tiny_cnn
from workbench.battery import load_checks, measurement, run_check
from workbench.errors import WorkbenchError
from workbench.rl.maze.kind import NativeMazeWorld
from workbench.subjects import BatteryAdapter, SubjectKind, get_kind, register_kind, register_subject

CALLS: list[tuple[str, str]] = []


def _flip(check, subject) -> dict:
    """A measure that reads the check's own fields, so the test sees the check reached the adapter intact."""
    CALLS.append((check.name, check.target))
    return {
        "score": measurement(0.75, (0.7, 0.8), 10),
        "n_params": measurement(sum(p.numel() for p in subject.policy.parameters())),
    }


def _toy_world(config=None, where=None):
    return dataclasses.replace(NativeMazeWorld(config or SMALL), kind="toy-kind", family="toy")


@pytest.fixture(autouse=True)
def _private_registry(monkeypatch):
    """The toy kind and subject live in copies of the registries, gone after each test."""
    from workbench import subjects

    monkeypatch.setattr(subjects, "_KINDS", dict(subjects._KINDS))
    monkeypatch.setattr(subjects, "_SUBJECTS", dict(subjects._SUBJECTS))


def _register(with_adapter: bool) -> None:
    maze = get_kind("maze")
    adapter = BatteryAdapter(
        measure={"probe": _flip},
        metrics={"probe/logistic": ("score", "n_params")},
        choices={"target": ("goal_x",), "method": ("logistic",)},
    )
    register_kind(
        SubjectKind(
            name="toy-kind",
            summary="a maze world under another name",
            load=maze.load,
            verbs={**maze.verbs, "world": _toy_world},
            battery=adapter if with_adapter else None,
        )
    )
    register_subject("toy-agent", lambda: workbench.make_agent(tiny_cnn(), env="toy-kind", name="toy-agent"))


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(body)
    return path


PROBE = """
[[check]]
name = "toy-probe"
kind = "probe"
subject = "toy-agent"
hook = "1"
method = "logistic"
target = "goal_x"
expect = { score = ">= 0.7", "score.ci_high" = "<= 0.9" }
"""
BEHAVIOUR = """
[[check]]
name = "toy-behaviour"
kind = "behaviour"
subject = "toy-agent"
data = { split = "ood", episodes = 12, seed = 3 }
expect = { timeout = ">= 0.0", cheese = "<= 1.0" }
"""


def test_adapter_measures_and_validates(tmp_path):
    _register(with_adapter=True)
    (check,) = load_checks([_write(tmp_path, PROBE)])
    CALLS.clear()
    result = run_check(check)
    assert CALLS == [("toy-probe", "goal_x")]
    assert result.passed and result.measured["score"]["ci_low"] == 0.7
    assert result.measured["n_params"]["value"] == sum(p.numel() for p in tiny_cnn().parameters())
    for bad, what in (
        (PROBE.replace('target = "goal_x"', 'target = "goal_y"'), "target"),
        (PROBE.replace('hook = "1"', 'hook = "99"'), "hook"),
        (PROBE.replace("score = ", "scor = "), "metric"),
        (PROBE.replace('kind = "probe"', 'kind = "intervention"\nvector = "x"'), "kind"),
    ):
        with pytest.raises(WorkbenchError, match=what):
            load_checks([_write(tmp_path, bad)])


@pytest.mark.parametrize("with_adapter", [True, False])
def test_behaviour_from_world_rates(tmp_path, with_adapter):
    """No behaviour measure: a behaviour check reads `world.run(...).rates()`, its metrics the world's rate keys."""
    _register(with_adapter)
    (check,) = load_checks([_write(tmp_path, BEHAVIOUR)])
    result = run_check(check)
    agent = workbench.load_subject("toy-agent")
    rec = agent.world.run(agent.policy, agent.world.levels("ood", 12, 3), seed=3).rates()
    assert result.passed
    for key in ("cheese", "timeout"):
        assert math.isclose(result.measured[key]["value"], rec["rates"][key])
        assert result.measured[key]["n"] == 12
    with pytest.raises(WorkbenchError, match="metric"):
        load_checks([_write(tmp_path, BEHAVIOUR.replace("cheese = ", "coin = "))])
    if not with_adapter:  # nothing but behaviour without an adapter
        with pytest.raises(WorkbenchError, match="kind"):
            load_checks([_write(tmp_path, PROBE)])
