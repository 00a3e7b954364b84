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
