"""CI runs the shipped probe batteries against the shipped artifacts: every expectation must hold.

probes/ holds one battery per organism family: maze.toml (maze agents), coinrun.toml (CoinRun agents) and
persona.toml (the persona LM); each file's thresholds are documented in its comments with the measured values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

PROBES = Path(__file__).resolve().parent.parent / "probes"


def test_shipped_batteries_pass(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "results.duckdb"))
    monkeypatch.setenv("WORKBENCH_THREADS", "1")  # the tiny convs and LM run far slower on many threads under load
    junit = tmp_path / "battery.xml"
    threads = torch.get_num_threads()
    try:
        code, out, err = cli("battery", "run", str(PROBES), "--json", "--junit", str(junit), "--report", str(tmp_path))
    finally:
        torch.set_num_threads(threads)  # the CLI set 1 thread process-wide; later tests keep their own setting
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] and len(result["checks"]) >= 20
    by_file: dict[str, set[str]] = {}
    for check in result["checks"]:
        by_file.setdefault(Path(check["file"]).stem, set()).add(check["kind"])
    # every organism family is covered, each with behaviour, probe and intervention checks
    assert {"maze", "coinrun", "persona"} <= set(by_file)
    retarget = by_file.pop("retarget", None)  # probes/retarget.toml: the goal-channel retargeting checks
    assert retarget == {"retarget"}, retarget
    assert all(kinds == {"behaviour", "probe", "intervention"} for kinds in by_file.values()), by_file
    subjects = {c["subject"] for c in result["checks"]}
    assert {"maze-cheese-corner", "coinrun-coin-at-exit", "coinrun-coin-random-2pct", "persona-lm"} <= subjects
    assert (tmp_path / "battery.md").is_file() and junit.is_file()
