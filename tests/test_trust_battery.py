"""Batteries: report destinations validated before any check runs, NaN thresholds refused, strict JSON reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.battery import (
    CheckResult,
    CheckSpec,
    Expectation,
    check_output_paths,
    parse_check,
    to_json,
    write_reports,
)
from workbench.errors import WorkbenchError


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("junit", "report", "json_path", "message"),
    [
        ("existing_dir", None, None, "--junit .*existing_dir is an existing folder"),
        ("a_file/out.xml", None, None, "--junit .*a_file is a file, not a folder"),
        ("out.txt", None, None, r"--junit .*unsupported extension '.txt'; use one of .xml, e.g. .*out.xml"),
        ("out", None, None, "--junit .*has no extension; use one of .xml"),
        (None, "a_file", None, "--report .*a_file is an existing file, not a folder"),
        (None, "a_file/sub", None, "--report .*a_file is a file, not a folder"),
        (None, None, "existing_dir", "--json .*existing_dir is an existing folder"),
        (None, None, "same.xml", r"--json .*unsupported extension '.xml'"),
    ],
)
def test_check_output_paths_refuses_before_anything_runs(tmp_path, junit, report, json_path, message):
    (tmp_path / "existing_dir").mkdir()
    (tmp_path / "a_file").write_text("x")
    before = _listing(tmp_path)

    def p(x):
        return None if x is None else tmp_path / x

    with pytest.raises(WorkbenchError, match=message) as err:
        check_output_paths(p(junit), p(report), p(json_path))
    assert "\n" not in str(err.value)
    assert _listing(tmp_path) == before


def test_check_output_paths_accepts_good_paths_and_writes_nothing(tmp_path):
    check_output_paths(tmp_path / "new" / "junit.xml", tmp_path / "reports", tmp_path / "b.json")
    assert _listing(tmp_path) == []


def test_check_output_paths_collision(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "battery.md").mkdir()
    with pytest.raises(WorkbenchError, match="battery.md is a folder"):
        check_output_paths(None, tmp_path / "r")


TABLE = {
    "name": "n",
    "kind": "behaviour",
    "subject": "tiny-maze",
    "data": {"split": "ood", "episodes": 16, "seed": 0},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"expect": {"cheese": ">= nan"}}, "threshold 'nan' of cheese must be a finite number"),
        ({"expect": {"cheese": "<= inf"}}, "must be a finite number"),
        ({"expect": {"cheese": ">= -Infinity"}}, "must be a finite number"),
        ({"expect": {"cheese": "=> 0.5"}}, 'must look like ">= 0.9"'),
        ({"data": {"episodes": 0}}, "episodes must be in 2..1000000, got 0"),
        ({"data": {"episodes": 10**12}}, "episodes must be in 2..1000000"),
        ({"data": {"seed": -1}}, r"seed must be in 0..4294967295, got -1; nearest valid: 0"),
        ({"data": {"seed": 2**64}}, "seed must be in 0..4294967295"),
        ({"coef": float("nan")}, "key 'coef' must be a finite number"),
        ({"l2": 0.0}, "key 'l2' must be > 0"),
        ({"name": "  "}, "'name' must not be empty"),
    ],
)
def test_bad_numbers_in_a_check_are_one_line(tmp_path, change, message):
    table = {**TABLE, "expect": {"cheese": ">= 0.1"}, **change}
    with pytest.raises(WorkbenchError, match=message) as err:
        parse_check(table, tmp_path / "b.toml", 0)
    assert "\n" not in str(err.value) and "b.toml" in str(err.value)


def _result() -> CheckResult:
    spec = CheckSpec(name="n", kind="behaviour", subject="s", file="b.toml")
    exp = Expectation("cheese", "ci_low", ">=", 0.5)
    measured = {"cheese": {"value": 0.4, "ci_low": float("nan"), "ci_high": float("nan"), "n": 10}}
    return CheckResult(spec, measured, [(exp, False, float("nan"))], 0.1)


def test_json_report_is_strict_and_says_why_values_are_null(tmp_path):
    data = to_json([_result()], "run-1")
    text = json.dumps(data, allow_nan=False)  # would raise on a bare NaN
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    m = data["checks"][0]["measured"]["cheese"]
    assert m["ci_low"] is None and m["null_reasons"]["ci_low"].startswith("no interval")
    assert data["checks"][0]["expectations"][0]["value"] is None
    write_reports([_result()], "run-1", tmp_path / "out.json", tmp_path / "j.xml", tmp_path / "rep")
    json.loads((tmp_path / "out.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert _listing(tmp_path) == ["j.xml", "out.json", "rep", "rep/battery.md"]  # no temporary files
    with pytest.raises(WorkbenchError, match="--junit"):
        write_reports([_result()], "run-1", None, tmp_path / "rep", None)
    assert _listing(tmp_path) == ["j.xml", "out.json", "rep", "rep/battery.md"]
