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


def _toy_adapter() -> BatteryAdapter:
    """Logistic probe checks on one target, measured by `_flip`."""
    return BatteryAdapter(
        measure={"probe": _flip},
        metrics={"probe/logistic": ("score", "n_params")},
        choices={"target": ("goal_x",), "method": ("logistic",)},
    )


def _register(with_adapter: bool) -> None:
    maze = get_kind("maze")
    adapter = _toy_adapter()
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


# ---------------------------------------------------------------- a new family from Python; no names in battery.py
class _Reader:
    """A subject of a family battery.py has never heard of: no world, no policy, hook names of its own."""

    kind = "toy-text"
    hooks = ("layer.0", "layer.1")


def _dot(check, subject) -> dict:
    CALLS.append((check.name, check.hook, check.fit.split, check.position))
    return {"agreement": measurement(0.9, (0.85, 0.95), 40)}


def _position_rule(check, subject, where) -> None:
    if check.position != -1:
        raise WorkbenchError(f"{where}: toy-text probes read the last position only, got {check.position}")


def _register_text() -> None:
    register_kind(
        SubjectKind(
            name="toy-text",
            summary="a text model that is not a policy",
            load=lambda ref: _Reader(),
            battery=BatteryAdapter(
                measure={"probe": _dot},
                metrics={"probe/dot": ("agreement",)},
                choices=lambda s: {"hook": s.hooks, "split": ("a", "b"), "target": ("topic",), "method": ("dot",)},
                validate=_position_rule,
            ),
        )
    )
    register_subject("toy-reader", _Reader)


TEXT = """
[[check]]
name = "reader-probe"
kind = "probe"
subject = "toy-reader"
hook = "layer.1"
method = "dot"
target = "topic"
fit = { split = "a", episodes = 40, seed = 0 }
test = { split = "b", episodes = 20, seed = 1 }
data = { split = "a" }
expect = { agreement = ">= 0.8", "agreement.ci_low" = "> 0.8" }
"""


def test_new_family_is_validated_and_measured_through_its_adapter(tmp_path):
    """A kind registered from Python, with no world and hooks, splits and a rule of its own: battery.py validates a
    probe check against what the adapter says about this subject and measures it through the adapter."""
    _register_text()
    (check,) = load_checks([_write(tmp_path, TEXT)])
    CALLS.clear()
    result = run_check(check)
    assert CALLS == [("reader-probe", "layer.1", "a", -1)]
    assert result.passed and result.measured["agreement"] == {"value": 0.9, "ci_low": 0.85, "ci_high": 0.95, "n": 40}
    for edit, message in (
        (('hook = "layer.1"', 'hook = "layer.2"'), "unknown hook 'layer.2'"),  # the subject's hooks, not a policy's
        (('split = "b"', 'split = "ood"'), "[test]: unknown split 'ood'"),  # the adapter's splits
        (('target = "topic"', 'target = "topc"'), "did you mean: topic? (toy-text subject)"),
        (('method = "dot"', 'method = "logistic"'), "unknown method 'logistic'"),
        (('target = "topic"', 'target = "topic"\nposition = -2'), "last position only, got -2"),  # validate
        (("agreement = ", "agreemnt = "), "unknown metric 'agreemnt' for toy-text probe/dot checks"),
        (('kind = "probe"', 'kind = "behaviour"'), "unknown kind 'behaviour'"),  # no world: no rates to read
    ):
        bad = TEXT.replace(*edit)
        assert bad != TEXT
        with pytest.raises(WorkbenchError, match="toy.toml check 'reader-probe'") as err:
            load_checks([_write(tmp_path, bad)])
        assert message in str(err.value), str(err.value)
    assert len(CALLS) == 1  # nothing was measured for an invalid file


@pytest.mark.parametrize(("name", "family"), [("lm", "maze"), ("coinrun", "lm"), ("maze", "coinrun")])
def test_dispatch_reads_the_registry_never_a_name(tmp_path, name, family):
    """A kind registered under a built-in's name, whose world claims yet another family, is validated and measured by
    its own adapter alone: battery.py picks nothing by kind or family name."""
    maze = get_kind("maze")

    def world(config=None, where=None):
        return dataclasses.replace(NativeMazeWorld(config or SMALL), kind=name, family=family)

    adapter = _toy_adapter()
    register_kind(
        SubjectKind(
            name=name, summary="impostor", load=maze.load, verbs={**maze.verbs, "world": world}, battery=adapter
        )
    )
    register_subject("toy-agent", lambda: workbench.make_agent(tiny_cnn(), env=name, name="toy-agent"))
    (check,) = load_checks([_write(tmp_path, PROBE)])
    CALLS.clear()
    assert run_check(check).passed and CALLS == [("toy-probe", "goal_x")]
    (behaviour,) = load_checks([_write(tmp_path, BEHAVIOUR)])  # no behaviour measure: the world's own rates
    assert set(run_check(behaviour).measured) == set(NativeMazeWorld(SMALL).rate_keys)
    for bad in (
        PROBE.replace('method = "logistic"', 'method = "spatial"'),  # a maze method, not this adapter's
        PROBE.replace('kind = "probe"', 'kind = "retarget"'),  # a maze check kind
        PROBE.replace("score = ", "auroc = "),  # a built-in family's metric
    ):
        with pytest.raises(WorkbenchError, match=f"{name}"):
            load_checks([_write(tmp_path, bad)])


def test_battery_module_names_no_family():
    """workbench/battery.py, outside its docstrings, holds no kind or family name and imports no subject package."""
    import ast

    import workbench.battery as battery
    from workbench.subjects import kinds

    tree = ast.parse(Path(battery.__file__).read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    names = {*kinds(), "maze", "coinrun", "lm", "procgen", "population"}
    strings = [
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
        and id(n) not in docstrings
    ]  # fmt: skip
    assert [s for s in strings if s in names] == []
    assert [s for s in strings if any(f" {name} " in f" {s} " for name in names)] == []
    modules = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for a in n.names
    ]
    assert [m for m in modules if m and m.startswith(("workbench.rl", "workbench.lm"))] == []
