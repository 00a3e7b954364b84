"""Battery specs: validation errors (exit 2, nothing recorded), failing expectations (exit 1), reports."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import pytest

GOOD = """
[battery]
name = "tiny"

[[check]]
name = "tiny-behaviour"
kind = "behaviour"
subject = "tiny-maze"
data = { split = "ood", episodes = 16, seed = 0 }
expect = { timeout = ">= 0.0", "cheese.ci_high" = "<= 1.0" }

[[check]]
name = "tiny-spatial"
kind = "probe"
subject = "tiny-maze"
hook = "embedder.block1.res1.resadd_out"
method = "spatial"
target = "cheese_cell"
fit = { split = "ood", episodes = 40, seed = 0 }
test = { split = "ood", episodes = 20, seed = 1 }
expect = { top1 = ">= 0.0" }
"""


def write(tmp_path: Path, text: str) -> Path:
    folder = tmp_path / "probes"
    folder.mkdir(exist_ok=True)
    (folder / "b.toml").write_text(text)
    return folder


def store_rows(registry: Path) -> int:
    from workbench.store import ResultStore, default_store_path

    path = default_store_path()
    if not path.exists():
        return 0
    with ResultStore(path) as db:
        return len(db.query())


def test_battery_passes_and_writes_reports(registry: Path, cli, tmp_path: Path) -> None:
    folder = write(tmp_path, GOOD)
    junit, report = tmp_path / "junit.xml", tmp_path / "report"
    code, out, err = cli("battery", "run", str(folder), "--json", "--junit", str(junit), "--report", str(report))
    assert code == 0, err
    obj = json.loads(out)
    assert obj["passed"] and [c["name"] for c in obj["checks"]] == ["tiny-behaviour", "tiny-spatial"]
    assert "top1" in obj["checks"][1]["measured"] and "selectivity" in obj["checks"][1]["measured"]
    suite = ElementTree.parse(junit).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "0"
    assert "| tiny-spatial |" in (report / "battery.md").read_text()
    assert store_rows(registry) > 0


def test_broken_threshold_exits_1_naming_check_value_and_threshold(registry: Path, cli, tmp_path: Path) -> None:
    folder = write(tmp_path, GOOD.replace('timeout = ">= 0.0"', 'timeout = "> 1.5"'))
    junit = tmp_path / "junit.xml"
    code, out, err = cli("battery", "run", str(folder), "--junit", str(junit))
    assert code == 1
    assert "tiny-behaviour: timeout =" in err and "expected timeout > 1.5" in err and "b.toml" in err
    assert ElementTree.parse(junit).getroot().get("failures") == "1"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (('method = "spatial"', 'method = "spatail"'), "unknown method 'spatail'; did you mean: spatial"),
        (
            ('hook = "embedder.block1.res1.resadd_out"', 'hook = "embedder.block1.res1.resad"'),
            "did you mean: embedder.block1.res1.resadd_out",
        ),
        (('subject = "tiny-maze"\ndata', 'subject = "tiny-maz"\ndata'), "unknown artifact 'tiny-maz'"),
        (('top1 = ">= 0.0"', 'top_1 = ">= 0.0"'), "unknown metric 'top_1'"),
        (('top1 = ">= 0.0"', 'top1 = ">= high"'), "threshold 'high' of top1 is not a number"),
        (('split = "ood", episodes = 16', 'split = "odd", episodes = 16'), "unknown split 'odd'"),
        (('target = "cheese_cell"', 'target = "cheese_cel"'), "did you mean: cheese_cell"),
        (('kind = "behaviour"', 'knd = "behaviour"'), "unknown key 'knd'; did you mean: kind"),
        (("episodes = 16", 'episodes = "16"'), "key 'episodes' must be int"),
    ],
)
def test_invalid_specs_exit_2_and_record_nothing(registry: Path, cli, tmp_path: Path, edit, message) -> None:
    text = GOOD.replace(*edit)
    assert text != GOOD
    folder = write(tmp_path, text)
    code, out, err = cli("battery", "run", str(folder))
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "b.toml" in err
    assert store_rows(registry) == 0


def test_missing_battery_path_is_exit_2(registry: Path, cli, tmp_path: Path) -> None:
    code, _, err = cli("battery", "run", str(tmp_path / "nope"))
    assert code == 2 and "does not exist" in err


# ------------------------------------------------------------------------------- CoinRun and LM subjects (dispatch)
COINRUN = """
[[check]]
name = "cr-behaviour"
kind = "behaviour"
subject = "tiny-coinrun"
data = { split = "ood", episodes = 12, seed = 0 }
expect = { "exit_without_coin" = ">= 0.0", "informative.coin.ci_high" = "<= 1.0", died = ">= 0.0" }

[[check]]
name = "cr-probe"
kind = "probe"
subject = "tiny-coinrun"
hook = "embedder.block1.res1.resadd_out"
method = "logistic"
target = "coin_visible"
fit = { split = "ood", episodes = 16, seed = 0, states = "rollout", max_steps = 8 }
test = { split = "ood", episodes = 16, seed = 1, states = "rollout", max_steps = 8 }
expect = { auroc = ">= 0.0", control_auroc = "<= 1.0" }

[[check]]
name = "cr-coin-vector"
kind = "intervention"
subject = "tiny-coinrun"
hook = "embedder.block1.res1.resadd_out"
vector = "coin"
coef = -1.0
fit = { split = "ood", episodes = 16 }
data = { split = "ood", episodes = 12, seed = 3 }
expect = { "effect.coin.ci_high" = "<= 1.0", "control_effect.exit" = ">= -1.0" }
"""

LM = """
[[check]]
name = "lm-behaviour"
kind = "behaviour"
subject = "tiny-lm"
data = { split = "ood", episodes = 24, seed = 0 }
expect = { "sycophant.agree_wrong" = ">= 0.0", heldout_accuracy = "<= 1.0" }

[[check]]
name = "lm-probe"
kind = "probe"
subject = "tiny-lm"
hook = "blocks.1.hook_resid_post"
method = "logistic"
target = "persona"
fit = { split = "train", episodes = 40, seed = 0 }
test = { split = "train", episodes = 30, seed = 1 }
expect = { auroc = ">= 0.0", control_auroc = "<= 1.0" }

[[check]]
name = "lm-steer"
kind = "intervention"
subject = "tiny-lm"
hook = "blocks.0.hook_resid_post"
vector = "sycophancy"
coef = -1.0
fit = { split = "train", episodes = 20 }
data = { split = "ood", episodes = 24, seed = 2 }
expect = { "effect.agree_wrong.ci_low" = ">= -1.0", "control_effect.heldout_loss" = "> -10" }
"""


@pytest.fixture(scope="module")
def tiny_lm_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.test_lm_core import TINY_RECIPE
    from workbench.lm.train import train_recipe

    root = tmp_path_factory.mktemp("lm")
    (root / "tiny-lm.toml").write_text(TINY_RECIPE)
    return train_recipe(root / "tiny-lm.toml", out=root / "tiny-lm", progress=False)


@pytest.fixture()
def mixed_registry(coinrun_registry: Path, tiny_lm_artifact: Path) -> Path:
    """The tiny CoinRun agent and the tiny LM (3 training steps) in one registry."""
    import shutil

    shutil.copytree(tiny_lm_artifact, coinrun_registry / "lms" / "tiny-lm")
    return coinrun_registry


def test_coinrun_checks_dispatch_to_the_coinrun_library(mixed_registry: Path, cli, tmp_path: Path) -> None:
    code, out, err = cli("battery", "run", str(write(tmp_path, COINRUN)), "--json")
    assert code == 0, err
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    behaviour = checks["cr-behaviour"]["measured"]
    assert {"coin", "exit", "exit_without_coin", "timeout", "died", "informative.coin"} <= set(behaviour)
    assert behaviour["coin"]["n"] == 12 and "cheese" not in behaviour
    probe = checks["cr-probe"]["measured"]
    assert 0.0 <= probe["auroc"]["value"] <= 1.0 and "control_auroc" in probe and "random_direction_auroc" in probe
    steer = checks["cr-coin-vector"]["measured"]
    assert {"effect.coin", "control_effect.coin", "baseline.exit_without_coin"} <= set(steer)
    assert not any(k.startswith("decision_square") for k in steer)  # a maze notion
    assert store_rows(mixed_registry) > 0
    assert_metrics_addressable(checks, "coinrun")


def assert_metrics_addressable(checks: dict, subject_kind: str) -> None:
    """Every measured metric can be named in an expectation (battery.METRICS follows the library's keys)."""
    from workbench.battery import METRICS

    for c in checks.values():
        method = "logistic" if c["kind"] == "probe" else c["kind"]
        assert set(c["measured"]) <= set(METRICS[(subject_kind, method)]), c["name"]


def test_lm_checks_dispatch_to_the_lm_library(mixed_registry: Path, cli, tmp_path: Path) -> None:
    code, out, err = cli("battery", "run", str(write(tmp_path, LM)), "--json")
    assert code == 0, err
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    behaviour = checks["lm-behaviour"]["measured"]
    assert {"sycophant.agree_wrong", "teacher.true_wrong", "mixed.logit_diff_wrong", "heldout_loss"} <= set(behaviour)
    assert behaviour["sycophant.agree_wrong"]["n"] > 0 and behaviour["heldout_accuracy"]["n"] == 24
    probe = checks["lm-probe"]["measured"]
    assert probe["auroc"]["n"] == 30 and probe["auroc"]["ci_low"] <= probe["auroc"]["value"]
    steer = checks["lm-steer"]["measured"]
    assert {"effect.agree_wrong", "control_effect.agree_wrong", "steered.heldout_accuracy"} <= set(steer)
    assert steer["effect.agree_wrong"]["ci_low"] <= steer["effect.agree_wrong"]["value"]
    assert_metrics_addressable(checks, "lm")


def test_lm_check_that_falls_short_exits_1(mixed_registry: Path, cli, tmp_path: Path) -> None:
    text = LM.replace('"sycophant.agree_wrong" = ">= 0.0"', '"sycophant.agree_wrong" = "> 1.0"')
    code, _, err = cli("battery", "run", str(write(tmp_path, text)))
    assert code == 1 and "lm-behaviour: sycophant.agree_wrong =" in err and "expected sycophant.agree_wrong > 1" in err


@pytest.mark.parametrize(
    ("text", "edit", "message"),
    [
        (LM, ('method = "logistic"', 'method = "spatial"'), "unknown method 'spatial'; did you mean: logistic"),
        (LM, ('"blocks.1.hook_resid_post"', '"blocks.1.hook_resid_pots"'), "did you mean: blocks.1.hook_resid_post"),
        (LM, ('target = "persona"', 'target = "persna"'), "unknown target 'persna'; did you mean: persona"),
        (LM, ('vector = "sycophancy"', 'vector = "sycophancyy"'), "did you mean: sycophancy"),
        (LM, ('subject = "tiny-lm"\ndata', 'subject = "tiny-lmm"\ndata'), "unknown artifact 'tiny-lmm'"),
        (
            LM,
            ('fit = { split = "train", episodes = 40', 'fit = { split = "ood", episodes = 40'),
            "fit on split 'train'",
        ),
        (LM, ('target = "persona"', 'target = "persona"\nposition = -7'), "position must be one of -1, -2, -3"),
        (COINRUN, ('"exit_without_coin" = ">= 0.0"', 'cheese = ">= 0.0"'), "unknown metric 'cheese' for coinrun"),
        (COINRUN, ('vector = "coin"', 'vector = "cheese"'), "unknown vector 'cheese'; valid: coin"),
        (COINRUN, ('target = "coin_visible"', 'target = "cheese_cell"'), "unknown target 'cheese_cell'"),
        (COINRUN, ('method = "logistic"', 'method = "spatial"'), "unknown method 'spatial'"),
    ],
)
def test_invalid_coinrun_and_lm_specs_exit_2(mixed_registry: Path, cli, tmp_path: Path, text, edit, message) -> None:
    bad = text.replace(*edit)
    assert bad != text
    code, _, err = cli("battery", "run", str(write(tmp_path, bad)))
    assert code == 2, err
    assert message in err and err.count("\n") == 1 and "b.toml" in err
    assert store_rows(mixed_registry) == 0
