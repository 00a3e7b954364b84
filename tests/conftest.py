"""Shared fixtures (a tiny agent artifact in a temporary registry, a CLI runner that sees exit codes) and the test
tiers: every test gets exactly one of the markers unit / pipeline / shipped / browser, plus `slow` where it is.

Tiers (registered in pyproject.toml; `make test` runs all, `make test-fast` runs unit + pipeline without slow):
- unit: one module's behaviour on small in-memory inputs (golden values, invariants, error messages);
- pipeline: several modules end to end on tiny artifacts the test makes itself (train -> artifact -> verbs);
- shipped: reads the organisms, SAEs, batteries, notebooks or populations shipped in artifacts/;
- browser: drives a real browser (chromium through chromedriver); any test using the `browser` fixture;
- slow: over ~15 s on an idle 2-core machine (whole notebooks, batteries, the demo, a Ray cluster, a wheel).
The tiers live in one table here, by file, with per-test exceptions, instead of markers in 50 files; a module's own
`pytestmark` tier wins, and a file missing from the table is `pipeline` (run by test-fast: new tests are never
silently skipped).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

from workbench.rl.agent import save_agent
from workbench.rl.envs.maze import MazeConfig
from workbench.rl.policies import ImpalaPolicy, PolicyConfig

# One torch thread unless WORKBENCH_THREADS says otherwise (the CLI's convention): the tests' tensors are tiny, so a
# second thread only adds synchronisation, and on a busy 2-core machine its spin-waits made a tiny policy forward
# 10-15x slower (330-540 ms against 30-35 ms per batch-64 forward at load average 16, measured).
# The same for every process a test starts (CLI subprocesses, notebook kernels, spawn and Ray workers), through the
# environment they inherit: a notebook kernel on torch's default two threads ran the quickstart 30x slower under
# `make test`'s two xdist workers (660 s against 21 s alone, measured).
os.environ.setdefault("WORKBENCH_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ["WORKBENCH_THREADS"])
torch.set_num_threads(max(1, int(os.environ["WORKBENCH_THREADS"])))

TIERS = ("unit", "pipeline", "shipped", "browser")
UNIT_FILES = {
    "test_env_golden",
    "test_hooks",
    "test_import_graph",
    "test_interventions_probes",
    "test_maze_env",
    "test_coinrun_env",
    "test_metrics",
    "test_probes_fast",
    "test_store",
    "test_trust_store",
    "test_trust_validate",
    "test_viz",
}
SHIPPED_FILES = {
    "test_batteries_shipped",
    "test_demo",
    "test_lm_shipped",
    "test_notebooks",
    "test_sae_shipped",
    "test_shipped_organisms",
}
BROWSER_FILES = {"test_app_browser"}
# per-test exceptions inside pipeline files: tests that read shipped artifacts (by name, or by the module fixture
# that loads them)
SHIPPED_TESTS = {
    "test_colour_shape": {"test_card_thresholds", "test_battery_passes"},
    "test_keys_chests": {"test_card_thresholds"},
    "test_deploy_cue_lm": {
        "test_persona_artifact_still_reads_as_the_persona_corpus",
        "test_artifacts_are_complete_small_and_of_this_corpus",
        "test_the_cue_decides_wrong_claims_and_only_in_the_organism",
        "test_shipped_datasets_are_the_writer_s_output",
        "test_battery_passes",
    },
    "test_procgen_organisms": {
        "test_card_reports_decision_square_steering_on_enough_mazes",
        "test_artifacts_are_small_published_shape_safetensors",
        "test_loads_through_the_procgen_kind_and_exports_published",
        "test_fresh_expert_agreement_agrees_with_the_card",
        "test_fresh_decision_square_baseline_agrees_with_the_card",
    },
    "test_retarget_population": {"test_two_seed_slice_of_the_shipped_population"},
}
SHIPPED_FIXTURES = {
    "test_colour_shape": {"agents"},
    "test_keys_chests": {"organism", "twin"},
    "test_deploy_cue_lm": {"lm"},
}
SLOW_FILES = {"test_batteries_shipped", "test_demo", "test_notebooks", "test_trust_wheel"}
# the files that take longest (minutes, on an idle 2-core machine), longest first
FIRST = (
    "test_notebooks",
    "test_batteries_shipped",
    "test_demo",
    "test_keys_chests",
    "test_shipped_organisms",
    "test_deploy_cue_lm",
    "test_colour_shape",
    "test_sweep",
    "test_trust_wheel",
)
SLOW_TESTS = {
    "test_sweep": {"test_records_identical_under_process_and_ray"},  # starts a local Ray cluster
    "test_shipped_organisms": {"test_demo_runs_end_to_end_small"},
}


def tier_of(item: pytest.Item) -> str:
    """The tier of one collected test (see the module docstring)."""
    module = item.path.stem
    name = getattr(item, "originalname", item.name)
    if "browser" in getattr(item, "fixturenames", ()) or module in BROWSER_FILES:
        return "browser"
    if module in SHIPPED_FILES or name in SHIPPED_TESTS.get(module, ()):
        return "shipped"
    if SHIPPED_FIXTURES.get(module, set()) & set(getattr(item, "fixturenames", ())):
        return "shipped"
    return "unit" if module in UNIT_FILES else "pipeline"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        name = getattr(item, "originalname", item.name)
        if not any(item.get_closest_marker(t) for t in TIERS):
            item.add_marker(tier_of(item))
        if module in SLOW_FILES or name in SLOW_TESTS.get(module, ()):
            item.add_marker("slow")
    # longest files first: `make test` runs two xdist workers with --dist loadfile, which hand out files in this
    # order, so the long files start at once instead of leaving one worker alone with them at the end
    items.sort(key=lambda it: FIRST.index(it.path.stem) if it.path.stem in FIRST else len(FIRST))


TINY_POLICY = PolicyConfig(channels=(4, 8, 8), pool=(False, True, True), hidden=16)
TINY_ENV = MazeConfig(max_steps=40)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs page scripts as `__main__` and can leave `sys.modules["__main__"]` pointing at the
    page; a later process pool (spawn) would then re-run that page in every worker. Restore it after each test."""
    main = sys.modules.get("__main__")
    yield
    if main is not None and sys.modules.get("__main__") is not main:
        sys.modules["__main__"] = main


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
