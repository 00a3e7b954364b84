"""Goal-channel discovery and retargeting (workbench.rl.goal_channels, workbench.rl.retarget), on toy policies whose
answers are known: channels 2 and 5 of the toy's `features` layer are wired to the cheese, and its head walks to
the soft-argmax of their sum. Fast: open 13x13 rooms, 30-step episodes."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

import workbench
from workbench.errors import WorkbenchError
from workbench.rl.envs.maze import MazeConfig, MazeLevels
from workbench.rl.goal_channels import (
    choose_set,
    correlation_scores,
    discover_goal_channels,
    ranking_stability,
    set_sizes,
)
from workbench.rl.maze.kind import NativeMazeWorld
from workbench.rl.retarget import (
    CONDITIONS,
    EFFECTS,
    MEASURES,
    Pairs,
    edit_point_hits,
    fixed_target_pairs,
    normalised_path_probability,
    path_step_probs,
    run_pairs,
    sample_pairs,
    shortest_paths,
)

PLANTED = (2, 5)
CONFIG = MazeConfig(max_steps=30)


class ToyGoalPolicy(nn.Module):
    """`features` (3x3 conv, fixed): channel 2 is the cheese plane blurred over 3x3 and channel 5 the cheese plane
    with half-weight 4-neighbours (the planted goal channels); 0 walls, 1 mouse, 3 walls blurred, 4 a constant.
    The head moves towards the soft-argmax cell of features[2] + features[5] (`wired`), or ignores the features and
    plays uniformly (`wired=False`)."""

    def __init__(self, wired: bool = True, beta: float = 3.0, gamma: float = 10.0) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 6, 3, padding=1)
        self.summary = nn.Identity()  # a non-spatial hook: (B, 6)
        self.wired, self.beta, self.gamma = wired, beta, gamma
        with torch.no_grad():
            w = torch.zeros(6, 3, 3, 3)
            w[0, 0, 1, 1] = 1.0
            w[1, 1, 1, 1] = 1.0
            w[2, 2] = 1.0
            w[3, 0] = 1.0 / 9
            w[5, 2] = torch.tensor([[0.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 0.0]])
            self.features.weight.copy_(w)
            self.features.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 0.5, 0.0]))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        f = self.features(x)
        pooled = self.summary(f.mean(dim=(2, 3)))
        if not self.wired:
            return torch.zeros(x.shape[0], 4) + 0.0 * pooled.sum()
        b, _, h, w = f.shape
        att = torch.softmax(self.gamma * f[:, list(PLANTED)].sum(1).flatten(1), dim=1)
        rows = torch.arange(h).repeat_interleave(w).float()
        cols = torch.arange(w).repeat(h).float()
        r_bar, c_bar = att @ rows, att @ cols
        mouse = x[:, 1].flatten(1).argmax(1)
        dr, dc = r_bar - (mouse // w).float(), c_bar - (mouse % w).float()
        return self.beta * torch.stack([-dr, dr, -dc, dc], dim=1)


class OpenRoomWorld(NativeMazeWorld):
    """Native mazes with every inner wall removed (a 13x13 room), the mouse in the centre, the cheese anywhere else."""

    def levels(self, split: str, n: int, seed: int) -> MazeLevels:
        lv = super().levels(split, n, seed)
        lv.walls[:] = True
        lv.walls[:, 1:-1, 1:-1] = False
        lv.size[:] = 13
        lv.offset[:] = 1
        lv.mouse[:] = (7, 7)
        rng = np.random.default_rng([seed, 17])
        cells = np.argwhere(~lv.walls[0])
        cells = cells[~np.all(cells == (7, 7), axis=1)]
        lv.cheese = cells[rng.integers(len(cells), size=n)]
        return lv


def toy_agent(wired: bool = True, name: str = "toy-goal"):
    agent = workbench.make_agent(ToyGoalPolicy(wired), env="maze", env_config=CONFIG, name=name)
    return replace(agent, world=OpenRoomWorld(CONFIG))


@pytest.fixture()
def toys(monkeypatch):
    from workbench import subjects

    monkeypatch.setattr(subjects, "_SUBJECTS", dict(subjects._SUBJECTS))
    workbench.register_subject("toy-goal", lambda: toy_agent(True, "toy-goal"))
    workbench.register_subject("toy-blind", lambda: toy_agent(False, "toy-blind"))


# ------------------------------------------------------------------------------------------------------ discovery
def test_discovery_recovers_the_planted_channels():
    agent = toy_agent()
    found = discover_goal_channels(agent, "features", n_fit=60, seed=0)
    assert set(found.top(2)) == set(PLANTED)
    for method in ("correlation", "probe", "attribution"):
        top2 = np.argsort(-np.abs(found.scores[method]))[:2]
        assert set(top2.tolist()) == set(PLANTED), method
    assert np.all(found.scores["attribution"][[0, 1, 3, 4]] == 0)  # the head never reads them
    assert found.best_by_correlation() in PLANTED
    assert all(found.sign[list(PLANTED)] == 1)
    stab = ranking_stability(found, 2, n_boot=3, seed=0)
    assert stab["jaccard_vs_full"]["mean"] == 1.0
    assert stab["set_frequency"] == {2: 1.0, 5: 1.0}
    # the size is chosen by the caller's fit criterion; ties go to the smaller set
    pick = choose_set(found, lambda cands: np.array([len(ch) == 2 for ch, _ in cands], float), magnitudes=(1.0, 2.0))
    assert (pick["size"], pick["magnitude"], set(pick["channels"])) == (2, 1.0, set(PLANTED))
    assert set_sizes(6) == [1, 2, 3] and set_sizes(128) == [1, 2, 3, 4, 8, 16, 32, 64]


def test_correlation_golden():
    acts = torch.zeros(2, 2, 2, 2)
    acts[0, 0, 0, 0] = 1.0  # channel 0 is exactly the goal map, channel 1 its negative
    acts[1, 0, 1, 1] = 1.0
    acts[:, 1] = -acts[:, 0]
    r = correlation_scores(acts, np.array([0, 3]))
    np.testing.assert_allclose(r, [1.0, -1.0])


# ----------------------------------------------------------------------------------------------------- golden values
class FixedPolicy(nn.Module):
    """The same action distribution (up, down, left, right) everywhere."""

    def __init__(self, probs) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, 1)
        self.register_buffer("logits", torch.log(torch.tensor(probs, dtype=torch.float32)))

    def forward(self, obs):
        f = self.features(obs.float())
        return self.logits.expand(obs.shape[0], 4) + 0.0 * f.sum()


def corridor(n: int = 1, mouse=(7, 3), cheese=(7, 11)) -> MazeLevels:
    """One open row (row 7, cols 1..13) plus a side corridor up from (7, 5) to (5, 5)."""
    walls = np.ones((n, 15, 15), dtype=bool)
    walls[:, 7, 1:14] = False
    walls[:, 5:7, 5] = False
    walls[:, 5, 5:8] = False
    return MazeLevels(
        walls=walls,
        mouse=np.tile(np.array([mouse]), (n, 1)),
        cheese=np.tile(np.array([cheese]), (n, 1)),
        size=np.full(n, 13),
        offset=np.full(n, 1),
        seeds=np.arange(n),
        region=5,
    )


def test_path_probability_golden():
    agent = workbench.make_agent(FixedPolicy([0.1, 0.1, 0.2, 0.6]), env="maze", env_config=CONFIG)
    lv = corridor(2)
    pairs = Pairs(lv, np.array([[7, 7], [5, 7]]))  # 4 rights; then 2 rights, 2 ups, 2 rights
    paths = shortest_paths(lv, pairs.targets)
    assert paths.lengths.tolist() == [4, 6]
    probs = path_step_probs(agent, pairs, paths, {"baseline": None}, "features")["baseline"][0]
    pp = normalised_path_probability(probs, paths.row, 2)
    np.testing.assert_allclose(pp, [0.6, (0.6**4 * 0.1**2) ** (1 / 6)], rtol=1e-6)
    np.testing.assert_allclose(
        normalised_path_probability(np.array([0.5, 0.5, 0.125]), np.array([0, 0, 1]), 3), [0.5, 0.125, np.nan]
    )


def test_success_golden_and_batching():
    right = workbench.make_agent(FixedPolicy([1e-6, 1e-6, 1e-6, 1 - 3e-6]), env="maze", env_config=CONFIG)
    lv = corridor(3)
    pairs = Pairs(lv, np.array([[7, 6], [7, 1], [7, 13]]))  # 3 steps right; behind the mouse; behind the cheese
    roll = run_pairs(right, pairs, None, "features", seed=0, greedy=True)
    assert roll.target_step.tolist() == [3, -1, -1]
    assert roll.success.tolist() == [True, False, False]
    assert roll.cheese_step.tolist() == [8, 8, 8]  # the world's records agree (run_pairs checks them)
    # sampled actions: each pair has its own stream, so alone or in a batch it takes the same path
    uniform = workbench.make_agent(ToyGoalPolicy(wired=False), env="maze", env_config=CONFIG)
    lv = OpenRoomWorld(CONFIG).levels("ood", 12, 3)
    pairs = sample_pairs(lv, 12, 3, 15)
    batched = run_pairs(uniform, pairs, None, "features", seed=5)
    alone = [
        run_pairs(uniform, pairs.select(np.array([i])), None, "features", seed=5, keys=np.array([i])) for i in (0, 7)
    ]
    assert [a.target_step[0] for a in alone] == [batched.target_step[0], batched.target_step[7]]
    assert [tuple(a.final[0]) for a in alone] == [tuple(batched.final[0]), tuple(batched.final[7])]


def test_edit_point_golden():
    row = np.array([0, 0, 0, 1, 1, 2])
    actions = np.array([3, 3, 0, 1, 1, 2])
    base = np.array([3, 2, 2, 1, 1, 0])  # pair 0 leaves the path at step 1; pair 1 never; pair 2 at step 0
    cond = np.array([0, 3, 0, 1, 1, 1])
    defined, hit = edit_point_hits(base, cond, actions, row, 3)
    assert defined.tolist() == [True, False, True]
    assert hit.tolist() == [True, False, False]


def test_targets_avoid_routes_and_bad_targets_are_one_line():
    lv = OpenRoomWorld(CONFIG).levels("ood", 20, 0)
    pairs = sample_pairs(lv, 20, 0, 15)
    t = pairs.targets
    assert not np.any(np.all(t == pairs.levels.cheese, axis=1)) and not np.any(np.all(t == (7, 7), axis=1))
    assert not np.any((t[:, 0] <= 7) & (t[:, 1] >= 7))  # never on the way to the top-right corner
    with pytest.raises(WorkbenchError, match="outside the 15x15"):
        fixed_target_pairs(lv, (15, 3), 5)
    with pytest.raises(WorkbenchError, match="is a wall in 20 of the 20 mazes"):
        fixed_target_pairs(lv, (0, 3), 5)
    assert len(fixed_target_pairs(lv, (2, 2), 5)) == 5


# --------------------------------------------------------------------------------------------- experiment, CLI, battery
@pytest.fixture()
def retarget_cli():
    from workbench.cli_retarget import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command, so `retarget` is a sub-command as in the main app
        pass

    runner = CliRunner()

    def run(*args: str):
        res = runner.invoke(app, list(args))
        return res.exit_code, res.stdout, res.stderr

    return run


def test_cli_json_contract_and_the_set_beats_controls(toys, retarget_cli):
    code, out, err = retarget_cli(
        "retarget", "toy-goal", "--layer", "features", "--episodes", "30", "--seed", "1", "--json", "--n-fit", "40",
        "--n-boot", "2", "--offsets", "2", "--magnitudes", "2,4,8",
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(out)
    for key in ("artifact", "layer", "shape", "split", "episodes", "pairs", "seed", "mode", "set", "magnitude",
                "single_best", "discovery", "selection", "stability", "conditions", "effects", "uniform_offset",
                "fit", "cis_pairs", "step_limit"):  # fmt: skip
        assert key in r, key
    assert r["artifact"] == "toy-goal" and r["shape"] == [6, 15, 15] and r["pairs"] == 30 and r["step_limit"] == 30
    assert set(r["conditions"]) == set(CONDITIONS) and set(r["effects"]) == set(EFFECTS)
    for row in r["conditions"].values():
        assert row["success"]["n"] == 30 and len(row["success"]["ci95"]) == 2
        assert row["path_probability"]["n"] == 30 and row["cis"]["n"] == r["cis_pairs"] > 0
    assert r["discovery"]["ranking"][:2] in ([2, 5], [5, 2]) and r["stability"]["n_boot"] == 2
    # the planted pair, pushed hard enough, chosen on fit mazes that the evaluation never sees
    assert set(r["set"]) == set(PLANTED) and r["magnitude"] == 8.0 and r["fit"]["disjoint_from_eval"]
    cond, eff = r["conditions"], r["effects"]
    assert cond["discovered"]["success"]["rate"] >= 0.8
    assert cond["single_best"]["success"]["rate"] <= 0.2 and cond["baseline"]["success"]["rate"] <= 0.2
    for key in MEASURES:
        assert eff["discovered_vs_random"][key]["ci95"][0] > 0, key
        assert eff["discovered_vs_baseline"][key]["ci95"][0] > 0, key
    assert cond["discovered"]["path_probability"]["mean"] > cond["baseline"]["path_probability"]["mean"] + 0.2
    assert [o["set"] for o in r["uniform_offset"]] == ["discovered", "random"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--layer", "summary"), "not spatial channels"),
        (("--layer", "featurez"), "unknown hook"),
        (("--target", "0,3"), "is a wall in"),
        (("--target", "3,99"), "outside the 15x15"),
        (("--channels", ""), "channel set is empty"),
        (("--channels", "9"), "out of range"),
        (("--mode", "swap"), "unknown retarget mode"),
    ],
)
def test_cli_bad_input_is_one_line(toys, retarget_cli, args, message):
    code, out, err = retarget_cli("retarget", "toy-goal", "--layer", "features", "--episodes", "5", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err


def test_verb_is_registered_for_maze_kinds():
    from workbench.rl.retarget import retarget_maze
    from workbench.subjects import get_kind

    assert get_kind("maze").verb("retarget") is retarget_maze
    assert get_kind("procgen-maze").verb("retarget") is retarget_maze
    from workbench.rl.coinrun.retarget import retarget_coinrun

    assert get_kind("coinrun").verb("retarget") is retarget_coinrun


def test_battery_check_fails_when_no_better_than_random(toys, tmp_path):
    from workbench.battery import _RETARGET, load_checks, run_check

    assert set(_RETARGET) == {f"{r}.{m}" for r in (*CONDITIONS, *EFFECTS) for m in MEASURES}
    spec = tmp_path / "retarget.toml"
    body = """
[[check]]
name = "{name}"
kind = "retarget"
subject = "{subject}"
hook = "features"
fit = {{ episodes = 40, seed = 0 }}
data = {{ split = "ood", episodes = 20, seed = 2 }}
expect = {{ "discovered_vs_random.success.ci_low" = "> 0" }}
"""
    spec.write_text(body.format(name="blind", subject="toy-blind") + body.format(name="wired", subject="toy-goal"))
    results = {c.name: run_check(c) for c in load_checks([spec])}
    assert not results["blind"].passed  # interventions change nothing: the set does no better than random sets
    assert "discovered_vs_random.success" in results["blind"].failures()[0]
    assert results["wired"].passed, results["wired"].failures()
    bad = tmp_path / "bad.toml"
    bad.write_text(body.format(name="x", subject="toy-goal").replace("discovered_vs_random", "discovered_vs_randm"))
    with pytest.raises(WorkbenchError, match="did you mean: discovered_vs_random.success"):
        load_checks([bad])


def test_procgen_replay_matches_the_game():
    """On real procgen mazes the mouse path replayed from the sampled actions meets the cheese on the very step the
    game says (run_pairs raises otherwise), and the verb is the maze one."""
    pytest.importorskip("procgen")
    from workbench.rl.envs.maze import distances_to
    from workbench.rl.envs.procgen import ProcgenConfig
    from workbench.rl.policies import ImpalaPolicy
    from workbench.rl.published import published_config

    torch.manual_seed(0)
    cfg = ProcgenConfig(game="maze", max_steps=40)
    agent = workbench.make_agent(ImpalaPolicy(published_config()), env="procgen-maze", env_config=cfg)
    lv = agent.world.levels("ood", 4, 1)
    d = distances_to(lv, lv.mouse)
    lv = lv.with_cheese(np.array([np.argwhere(d[i] == 2)[0] for i in range(len(lv))]))
    targets = np.array([np.argwhere(d[i] == 1)[0] for i in range(len(lv))])
    roll = run_pairs(agent, Pairs(lv, targets), None, "embedder.block2.res1.resadd_out", seed=0)
    assert (roll.cheese_step >= 0).sum() >= 2
    assert np.array_equal(roll.cheese_step, np.where(roll.records.cheese_reached, roll.records.cheese_step, -1))
