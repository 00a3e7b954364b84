"""CI runs the shipped probe batteries against the shipped artifacts: every expectation must hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PROBES = Path(__file__).resolve().parent.parent / "probes"


def test_shipped_batteries_pass(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "results.duckdb"))
    junit = tmp_path / "battery.xml"
    code, out, err = cli("battery", "run", str(PROBES), "--json", "--junit", str(junit), "--report", str(tmp_path))
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] and len(result["checks"]) >= 8
    assert (tmp_path / "battery.md").is_file() and junit.is_file()
