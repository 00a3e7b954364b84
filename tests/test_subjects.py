"""The subject interface: any policy through every verb (issue: "any policy").

- a non-IMPALA policy (an `nn.Sequential` CNN returning logits only) registered from Python, and the same policy
  reached through a `module:factory` entry point on the CLI, through eval, steer, probe, vector-field, collect and a
  battery check;
- the policy contract: a policy returning the wrong thing is one line naming what it returned;
- `save_agent(policy, env=..., factory=...)` writes a folder that loads by path in every verb;
- the registry: unknown kinds and verbs a kind lacks are one line naming the valid choices.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import workbench
from workbench.errors import WorkbenchError
from workbench.rl.envs.maze import MazeConfig
from workbench.subjects import get_kind, load_subject, register_subject, verb

SMALL = MazeConfig(max_steps=30)


class ToFloat(nn.Module):
    """Observations arrive as uint8 planes (the policy contract); a user's net converts them itself."""

    def forward(self, x):
        return x.float()


def tiny_cnn(seed: int = 0) -> nn.Module:
    """A logits-only CNN (no value head, no IMPALA module names) for the native maze."""
    torch.manual_seed(seed)
    return nn.Sequential(
        ToFloat(),
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 15 * 15, 4),
    )


@pytest.fixture()
def custom(monkeypatch, tmp_path):
    """`my-cnn` registered from Python, and a module `user_policies` with a factory on sys.path."""
    register_subject("my-cnn", lambda: workbench.make_agent(tiny_cnn(), env="maze", env_config=SMALL, name="my-cnn"))
    mod = tmp_path / "user_policies.py"
    mod.write_text(
        textwrap.dedent(
            """
            import workbench
            from tests.test_subjects import SMALL, tiny_cnn

            def build():
                return workbench.make_agent(tiny_cnn(1), env="maze", env_config=SMALL, name="entry-cnn")

            def not_a_subject():
                return 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "results.duckdb"))
    yield
    sys.modules.pop("user_policies", None)


def test_registered_logits_only_policy_runs_every_verb(custom, tmp_path):
    agent = load_subject("my-cnn")
    assert agent.kind == "maze" and agent.train_split is None
    ev = verb(agent, "eval")(agent, split="ood", episodes=12, seed=0).to_json()
    assert ev["episodes"] == 12 and set(ev["rates"]) == {"cheese", "corner_first", "timeout"}
    st = verb(agent, "steer")(agent, vector="cheese", coef=-1.0, layer="2", episodes=12, seed=0).to_json()
    assert {"baseline", "steered", "control", "effects", "decision_square"} <= set(st)
    assert st["baseline"]["n"] == 12 and st["vector_norm_mean"] > 0
    pr = verb(agent, "probe")(agent, layers=["2"], n_fit=40, n_test=10, seed=0).to_json()
    assert {r["test_split"] for r in pr["rows"]} == {"train", "ood"}
    assert all(0.0 <= r["top1"] <= 1.0 for r in pr["rows"])
    vf = verb(agent, "vector-field")(agent, out=tmp_path / "vf.png", seed=3, coef=-1.0, layer="2").to_json()
    assert (tmp_path / "vf.png").stat().st_size > 0 and vf["cells"] > 0
    field = workbench.vector_field(agent.policy, agent.world.levels("ood", 1, 3))
    np.testing.assert_allclose(field.probs.sum(1), 1.0, atol=1e-6)  # logits-only: a distribution, not row 0


def test_entry_point_policy_through_cli_and_battery(custom, cli, tmp_path):
    code, out, err = cli("eval", "user_policies:build", "--episodes", "8", "--json")
    assert code == 0, err
    assert json.loads(out)["artifact"] == "entry-cnn"
    code, out, err = cli("steer", "user_policies:build", "--layer", "2", "--episodes", "8", "--json")
    assert code == 0, err
    assert json.loads(out)["subject_kind"] == "maze"
    code, out, err = cli(
        "collect", "user_policies:build", "--hook", "4", "--episodes", "6", "--out", str(tmp_path / "ds")
    )
    assert code == 0, err
    assert workbench.ActivationDataset.load(tmp_path / "ds")["4"].shape == (6, 8, 15, 15)
    spec = tmp_path / "b.toml"
    spec.write_text(
        textwrap.dedent(
            """
            [[check]]
            name = "entry-cnn behaviour"
            kind = "behaviour"
            subject = "user_policies:build"
            data = { split = "ood", episodes = 10, seed = 0 }
            expect = { timeout = ">= 0" }

            [[check]]
            name = "registered cnn intervention"
            kind = "intervention"
            subject = "my-cnn"
            hook = "2"
            vector = "cheese"
            data = { split = "ood", episodes = 10, seed = 0 }
            expect = { "control_effect.cheese.ci_low" = ">= -1" }
            """
        )
    )
    code, out, err = cli("battery", "run", str(spec), "--json", "--store", str(tmp_path / "s.duckdb"))
    assert code == 0, err
    assert "2 passed, 0 failed" in err
    code, _, err = cli("eval", "user_policies:not_a_subject")
    assert code == 2 and err.count("\n") == 1 and "not a workbench subject" in err
    code, _, err = cli("eval", "user_policies:missing")
    assert code == 2 and err.count("\n") == 1 and "build" in err


def test_policy_contract_is_one_line(custom):
    class Bad(nn.Module):
        def forward(self, x):
            return {"logits": x}

    agent = workbench.make_agent(Bad(), env="maze", env_config=SMALL)
    with pytest.raises(WorkbenchError, match=r"returned a dict .* must return logits of shape"):
        verb(agent, "eval")(agent, episodes=2)

    class Flat(nn.Module):
        def forward(self, x):
            return x.float().flatten()

    agent = workbench.make_agent(Flat(), env="maze", env_config=SMALL)
    with pytest.raises(WorkbenchError, match=r"a tensor of shape \(\d+,\)"):
        verb(agent, "eval")(agent, episodes=2)


def test_save_agent_for_a_user_policy_loads_by_folder(custom, cli, tmp_path):
    policy = tiny_cnn(2)
    folder = workbench.save_agent(
        tmp_path / "mine", policy, env="maze", env_config=SMALL, factory="tests.test_subjects:tiny_cnn"
    )
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["env"]["kind"] == "maze" and cfg["policy"]["factory"] == "tests.test_subjects:tiny_cnn"
    agent = load_subject(folder)
    for k, v in policy.state_dict().items():
        torch.testing.assert_close(agent.policy.state_dict()[k], v)
    code, out, err = cli("hooks", str(folder), "--json")
    assert code == 0, err
    assert {"hook": "4", "shape": [8, 15, 15]} in json.loads(out)["hooks"]
    with pytest.raises(WorkbenchError, match="factory="):
        workbench.save_agent(tmp_path / "nofactory", tiny_cnn(), env="maze")
    assert not (tmp_path / "nofactory").exists()


def test_registry_errors_name_the_valid_choices():
    with pytest.raises(WorkbenchError, match="did you mean: procgen-maze"):
        get_kind("procgen-mase")
    coinrun = get_kind("coinrun")
    with pytest.raises(WorkbenchError, match=r"`vector-field` is not available for coinrun subjects \(available: "):
        coinrun.verb("vector-field")
    with pytest.raises(WorkbenchError, match="make_agent takes maze"):
        workbench.make_agent(tiny_cnn(), env="lm")


def test_no_env_kind_branches_outside_subject_packages():
    """Generic code reaches subjects through the registry: no `kind == "maze"`-style tests outside their folders."""
    import re

    root = Path(workbench.__file__).parent
    allowed = ("rl/maze/", "rl/coinrun/", "rl/procgen/", "rl/envs/", "lm/")
    names = "maze|coinrun|procgen-maze|procgen-coinrun|lm"
    # `agent.env_kind == "maze"`, `self.kind != "coinrun"`, `m.get("subject_kind") == "lm"`, `kind == 'lm'`
    pattern = re.compile(rf"""kind\b["')\]]*\s*[!=]=\s*["']({names})["']""")
    for line in ('if self.kind == "maze":', "a.env_kind != 'coinrun'", 'm.get("subject_kind") == "lm"', "kind == 'lm'"):
        assert pattern.search(line), line
    hits = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(allowed):
            continue
        hits += [f"{rel}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_workbench_collect_serves_every_rl_kind(coinrun_registry):
    """`workbench.collect` dispatches through the registry: a CoinRun agent gets CoinRun labels, not an error."""
    agent = load_subject("tiny-coinrun")
    ds = workbench.collect(agent, "embedder.fc", split="ood", episodes=4, seed=0)
    assert len(ds) == 4 and {"coin_visible", "exit_dx", "outcome_exit_without_coin"} <= set(ds.labels.columns)
