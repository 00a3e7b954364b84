"""Retargeting over a population of seeds (workbench.rl.retarget_population): golden values for the comparable
quantities, and the command on a 2-seed slice of the shipped maze-corner-fast population (small sizes: the numbers
the README reports come from the full command)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from workbench.errors import WorkbenchError
from workbench.rl.retarget_population import (
    PopulationRetargetConfig,
    concentration,
    population_summary,
    retarget_population,
)

POPULATION = Path(__file__).resolve().parents[1] / "artifacts" / "populations" / "maze-corner-fast"
LAYER = "embedder.block2.res1.resadd_out"


def test_concentration_golden():
    c = concentration(np.array([3.0, -1.0, 0.0, 0.0]), [0])
    assert c["share"] == pytest.approx(0.75) and c["uniform_share"] == 0.25 and c["ratio"] == pytest.approx(3.0)
    assert np.isnan(concentration(np.zeros(4), [1])["share"])


def _row(diff: float, lo: float, size: int) -> dict:
    eff = {"diff": diff, "ci95": [lo, diff + 0.1], "n": 200}
    rate = {"rate": 0.2, "ci95": [0.1, 0.3], "n": 200}
    return {
        "set_size": size,
        "correlation_mass": {"ratio": 2.0},
        "stability": {"spearman": {"mean": 0.9}, "jaccard": {"mean": 0.5}},
        "conditions": {c: {"success": rate} for c in ("discovered", "random", "single_best", "baseline")},
        "effects": {
            e: {"success": eff, "path_probability": eff} for e in ("discovered_vs_random", "discovered_vs_baseline")
        },
    }


def test_population_summary_counts_seeds_with_an_effect():
    s = population_summary([_row(0.1, 0.02, 2), _row(0.0, -0.05, 4), _row(0.2, 0.1, 3)], seed=0)
    assert s["seeds"] == 3
    assert s["discovered_vs_random.success.seeds_above_zero"] == 2
    assert s["discovered_vs_random.success"]["mean"] == pytest.approx(0.1)
    assert s["set_size"]["min"] == 2 and s["set_size"]["max"] == 4
    lo, hi = s["discovered_vs_random.success"]["ci95"]
    assert -1e-9 <= lo <= 0.1 <= hi <= 0.2 + 1e-9


def test_config_and_folder_errors(tmp_path):
    with pytest.raises(WorkbenchError, match="n_boot must be >= 2"):
        PopulationRetargetConfig(n_boot=0)
    with pytest.raises(WorkbenchError, match="max_seeds must be >= 1"):
        PopulationRetargetConfig(max_seeds=0)
    with pytest.raises(WorkbenchError, match="not a population folder"):
        retarget_population(str(tmp_path))


@pytest.fixture()
def cli():
    from workbench.cli_retarget import register

    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:
        pass

    runner = CliRunner()

    def run(*args: str):
        res = runner.invoke(app, list(args))
        return res.exit_code, res.stdout, res.stderr

    return run


@pytest.mark.skipif(not POPULATION.is_dir(), reason="the shipped maze-corner-fast population is not here")
def test_two_seed_slice_of_the_shipped_population(cli):
    code, out, err = cli(
        "retarget", "--population", str(POPULATION), "--max-seeds", "2", "--layer", LAYER, "--episodes", "12",
        "--n-fit", "30", "--n-boot", "2", "--magnitudes", "8", "--json",
    )  # fmt: skip
    assert code == 0, err
    r = json.loads(out)
    assert r["population"] == "maze-corner-fast" and r["layer"] == LAYER
    assert [row["run_id"] for row in r["per_seed"]] == ["s0000", "s0001"]
    for row in r["per_seed"]:
        assert row["channels"] == 16 and 1 <= row["set_size"] <= 8 and row["magnitude"] == 8.0
        assert 0 < row["correlation_mass"]["share"] <= 1 and row["pairs"] == 12
        assert -1 <= row["stability"]["spearman"]["mean"] <= 1
        for cond in ("discovered", "random", "baseline"):
            assert row["conditions"][cond]["success"]["n"] == 12
        e = row["effects"]["discovered_vs_random"]["success"]
        assert e["ci95"][0] <= e["diff"] <= e["ci95"][1]
    # the same evaluation seed asks the same (maze, target) pairs of both networks: their baselines differ only by
    # the network, and the across-seed summary is the mean of the two rows
    s = r["summary"]
    assert s["seeds"] == 2
    mean = np.mean([row["effects"]["discovered_vs_random"]["success"]["diff"] for row in r["per_seed"]])
    assert s["discovered_vs_random.success"]["mean"] == pytest.approx(mean)
    assert "[1/2] s0000" in err and "[2/2] s0001" in err


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "give either SUBJECT or --population"),
        (("maze-cheese-corner", "--population", "x"), "give either SUBJECT or --population"),
        (("maze-cheese-corner", "--max-seeds", "2"), "--max-seeds applies to --population only"),
        (("--population", "/nonexistent/pop"), "does not exist"),
    ],
)
def test_population_bad_input_is_one_line(cli, args, message):
    code, out, err = cli("retarget", *args)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
