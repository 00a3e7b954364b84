"""Atomic artifacts for real: a writer killed mid-write leaves a hidden folder that is never an artifact and is removed
by the next write; agent configs and weights are checked against each other, each mismatch in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_ENV, TINY_POLICY, make_tiny_agent
from workbench import artifacts
from workbench.errors import WorkbenchError
from workbench.rl import agent_checks
from workbench.rl.policies import ImpalaPolicy, PolicyConfig

ROOT = Path(__file__).resolve().parent.parent

KILLED_WRITER = r"""
import sys, time
from pathlib import Path
from workbench import artifacts
with artifacts.writing(Path(sys.argv[1])) as tmp:
    artifacts.write_json(tmp / artifacts.CONFIG, {"kind": "rl-agent"})
    (tmp / artifacts.WEIGHTS).write_bytes(b"half")
    print("writing", flush=True)
    time.sleep(60)  # SIGKILL arrives here
"""


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_kill_during_write_is_invisible_and_cleaned_on_next_write(tmp_path, monkeypatch):
    root = tmp_path / "artifacts"
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(root))
    make_tiny_agent(root / "agents" / "maze-good")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(root / "agents" / "maze-cheese")],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    leftovers = [p for p in (root / "agents").iterdir() if p.name.startswith(".maze-cheese.")]
    assert len(leftovers) == 1 and (leftovers[0] / artifacts.CONFIG).is_file()
    hidden = leftovers[0]

    assert artifacts.available("agents") == ["maze-good"]  # never listed
    with pytest.raises(WorkbenchError) as err:
        artifacts.resolve("maze-cheese")
    assert ".maze-cheese." not in str(err.value) and "maze-good" in str(err.value)  # never suggested
    for ref in (hidden, hidden.name, str(hidden)):
        with pytest.raises(WorkbenchError, match="temporary folder left by an interrupted artifact write") as err:
            artifacts.resolve(ref)
        assert "\n" not in str(err.value)
    from workbench.rl.agent import load_agent

    with pytest.raises(WorkbenchError):
        load_agent(hidden)  # never loads

    make_tiny_agent(root / "agents" / "another")  # the next write into the folder cleans up
    assert not hidden.exists()
    assert artifacts.available("agents") == ["another", "maze-good"]


def test_live_writer_is_left_alone_and_legacy_leftovers_age_out(tmp_path):
    parent = tmp_path / "agents"
    parent.mkdir()
    live = parent / ".busy.abcdefgh"
    live.mkdir()
    (live / artifacts.WRITER_MARKER).write_text(json.dumps({"pid": os.getpid(), "host": os.uname().nodename}))
    fresh_legacy = parent / ".fresh.abcd1234"
    fresh_legacy.mkdir()
    old_legacy = parent / ".old.abcd_234"
    old_legacy.mkdir()
    os.utime(old_legacy, (time.time() - 7200, time.time() - 7200))
    user_dir = parent / ".git"
    user_dir.mkdir()
    removed = artifacts.clean_stale(parent)
    assert removed == [old_legacy]
    assert live.exists() and fresh_legacy.exists() and user_dir.exists()


def test_replace_is_atomic_and_failures_leave_the_old_artifact(tmp_path, monkeypatch):
    folder = tmp_path / "agents" / "x"
    with artifacts.writing(folder) as tmp:
        (tmp / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with artifacts.writing(folder) as tmp:
            (tmp / "v").write_text("2")
            raise RuntimeError("crash inside the write")
    assert (folder / "v").read_text() == "1"
    with artifacts.writing(folder) as tmp:
        (tmp / "v").write_text("3")
    assert (folder / "v").read_text() == "3"
    assert _listing(tmp_path / "agents") == ["x", "x/v"]  # no temporary, .old or marker left
    # an interrupted two-rename swap (non-Linux fallback): the old artifact is put back by the next write
    monkeypatch.setattr(artifacts, "_SWAP_SETTLE_S", 0.0)
    folder.rename(folder.with_name(".x.old"))
    (folder.with_name(".x.old") / artifacts.CONFIG).write_text("{}")
    with artifacts.writing(tmp_path / "agents" / "y") as tmp:
        (tmp / "v").write_text("y")
    assert (folder / "v").read_text() == "3" and not folder.with_name(".x.old").exists()


def _config(**changes) -> dict:
    cfg = {
        "kind": "rl-agent",
        "env": {"kind": "maze", "split": "train", **TINY_ENV.__dict__},
        "policy": TINY_POLICY.to_dict(),
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            if value is None:
                cfg[section].pop(field)
            else:
                cfg[section][field] = value
        elif value is None:
            cfg.pop(section)
        else:
            cfg[section] = value
    return cfg


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"policy": None}, "missing 'policy'"),
        ({"env": None}, "missing 'env'"),
        ({"env": "maze"}, "'env' must be an object"),
        ({"env__kind": "mazee"}, "unknown env kind 'mazee'; did you mean: maze"),
        ({"env__kind": None}, r"\[env\] missing 'kind'"),
        ({"env__split": "tran"}, "did you mean: train"),
        ({"env__world_sise": 15}, r"\[env\]: unknown key 'world_sise'; did you mean: world_size"),
        ({"env__max_steps": -3}, "max_steps must be >= 1"),
        ({"env__max_steps": "many"}, "key 'max_steps' must be int"),
        ({"policy__hiden": 16}, r"\[policy\]: unknown key 'hiden'; did you mean: hidden"),
        ({"policy__hidden": 0}, "hidden must be in 1..16384"),
        ({"policy__channels": [4, 8]}, "must have the same length"),
        ({"policy__n_actions": 6}, r"\[policy\].n_actions = 6 does not fit the maze env, which needs 4"),
        ({"policy__input_scale": float("nan")}, "must be a finite number"),
        ({"policy": {"factory": "nocolon"}}, r"\[policy\].factory must be 'module:callable'"),
        ({"policy": {"factory": "m:f", "kwarg": {}}}, "unknown key 'kwarg' next to 'factory'"),
    ],
)
def test_check_agent_config_names_the_problem(tmp_path, changes, message):
    with pytest.raises(WorkbenchError, match=message) as err:
        agent_checks.check_agent_config(_config(**changes), tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path / "config.json") in str(err.value)


def test_check_agent_config_accepts_shipped_and_tiny_configs(tmp_path):
    env, policy = agent_checks.check_agent_config(_config(), tmp_path)
    assert policy == TINY_POLICY and env == TINY_ENV
    for name in ("maze-cheese-corner", "coinrun-coin-at-exit"):
        folder = ROOT / "artifacts" / "agents" / name
        if folder.is_dir():
            agent_checks.check_agent_config(artifacts.read_config(folder), folder)
    with pytest.raises(WorkbenchError, match="expected a JSON object"):
        agent_checks.check_agent_config([1, 2], tmp_path)


def test_check_state_dict_names_the_mismatch(tmp_path):
    policy = ImpalaPolicy(TINY_POLICY)
    good = policy.state_dict()
    agent_checks.check_state_dict(policy, good, tmp_path)  # fine
    other = ImpalaPolicy(PolicyConfig(channels=(8, 8, 8), pool=(False, True, True), hidden=16)).state_dict()
    with pytest.raises(WorkbenchError, match=r"weights of another architecture: embedder.block1.conv.weight is "
                       r"\(8, 3, 3, 3\) in the file but \(4, 3, 3, 3\)") as err:  # fmt: skip
        agent_checks.check_state_dict(policy, other, tmp_path)
    assert "channels=[4, 8, 8]" in str(err.value) and "\n" not in str(err.value)
    deeper = ImpalaPolicy(PolicyConfig(channels=(4, 8, 8, 8), pool=(False, True, True, True), hidden=16))
    with pytest.raises(WorkbenchError, match="unexpected embedder.block4"):
        agent_checks.check_state_dict(policy, deeper.state_dict(), tmp_path)
    missing = {k: v for k, v in good.items() if k != "fc_value.bias"}
    with pytest.raises(WorkbenchError, match="missing fc_value.bias"):
        agent_checks.check_state_dict(policy, missing, tmp_path)
    bad = dict(good, **{"fc_value.bias": torch.tensor([float("nan")])})
    with pytest.raises(WorkbenchError, match="NaN or infinite"):
        agent_checks.check_state_dict(policy, bad, tmp_path)
    ints = dict(good, **{"fc_value.bias": torch.tensor([1])})
    with pytest.raises(WorkbenchError, match="dtype torch.int64"):
        agent_checks.check_state_dict(policy, ints, tmp_path)
