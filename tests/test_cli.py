"""CLI contracts: JSON shapes of eval/steer/probe, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_eval_json_contract(registry: Path, cli) -> None:
    code, out, err = cli("eval", "tiny-maze", "--split", "ood", "--episodes", "12", "--seed", "3", "--json")
    assert code == 0, err
    obj = json.loads(out)
    assert obj["artifact"] == "tiny-maze" and obj["split"] == "ood" and obj["episodes"] == 12 and obj["seed"] == 3
    assert set(obj["rates"]) == {"cheese", "corner_first", "timeout"} == set(obj["ci95"])
    for key, (lo, hi) in obj["ci95"].items():
        assert 0.0 <= lo <= obj["rates"][key] <= hi <= 1.0
    # Same seed, same answer; a folder path works as well as a name.
    code2, out2, _ = cli(
        "eval", str(registry / "agents" / "tiny-maze"), "--split", "ood", "--episodes", "12", "--seed", "3", "--json"
    )
    assert code2 == 0 and json.loads(out2)["rates"] == obj["rates"]


def test_steer_json_contract(registry: Path, cli) -> None:
    code, out, err = cli(
        "steer",
        "tiny-maze",
        "--vector",
        "cheese",
        "--coef",
        "-1",
        "--layer",
        "embedder.block2.res1.resadd_out",
        "--split",
        "ood",
        "--episodes",
        "16",
        "--seed",
        "0",
        "--json",
    )
    assert code == 0, err
    obj = json.loads(out)
    for cond in ("baseline", "steered", "control"):
        assert set(obj[cond]["rates"]) == {"cheese", "corner_first", "timeout"}
        assert obj[cond]["n"] == 16
    assert set(obj["ci95"]) == {"baseline", "steered", "control"}
    assert set(obj["effects"]) == {"steered", "control"}
    lo, hi = obj["effects"]["steered"]["cheese"]["ci95"]
    assert lo <= obj["effects"]["steered"]["cheese"]["diff"] <= hi
    assert obj["vector_norm_mean"] > 0


def test_probe_json(registry: Path, cli) -> None:
    code, out, err = cli(
        "probe", "tiny-maze", "--layer", "embedder.block1.res1.resadd_out", "--n-fit", "40", "--n-test", "20", "--json"
    )
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {r["test_split"] for r in rows} == {"train", "ood"} and rows[0]["grid"] == "15x15"


def test_vector_field_png(registry: Path, cli, tmp_path: Path) -> None:
    png = tmp_path / "vf.png"
    code, out, err = cli("vector-field", "tiny-maze", "--out", str(png), "--seed", "4", "--coef", "-1")
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_is_one_line_exit_2(registry: Path, cli) -> None:
    cases = [
        (("eval", "tiny-maz", "--json"), "unknown artifact 'tiny-maz'; did you mean: tiny-maze"),
        (("eval", "tiny-maze", "--split", "oood"), "unknown split 'oood'; did you mean: ood"),
        (
            ("steer", "tiny-maze", "--layer", "embedder.block2.res1.resad_out"),
            "unknown hook 'embedder.block2.res1.resad_out'; did you mean: embedder.block2.res1.resadd_out",
        ),
        (("steer", "tiny-maze", "--vector", "chese"), "unknown vector 'chese'; did you mean: cheese"),
        (("train", "agents/nope.toml"), "does not exist"),
    ]
    for args, message in cases:
        code, out, err = cli(*args)
        assert code == 2, (args, code, err)
        assert err.strip().count("\n") == 0 and message in err, (args, err)
        assert "Traceback" not in err


def test_console_script_exit_code_without_traceback(registry: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "workbench.cli", "eval", "no-such-agent"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown artifact") and "Traceback" not in proc.stderr


def test_steer_with_a_probe_direction(registry: Path, cli) -> None:
    code, out, err = cli(
        "steer",
        "tiny-maze",
        "--vector",
        "probe",
        "--layer",
        "embedder.fc",
        "--coef",
        "2",
        "--probe-target",
        "cheese_in_region",
        "--probe-episodes",
        "40",
        "--episodes",
        "12",
        "--json",
    )
    assert code == 0, err
    obj = json.loads(out)
    assert obj["probe"] == {"target": "cheese_in_region", "method": "mass_mean", "episodes": 40}
    assert obj["vector_norm_mean"] > 0 and set(obj["effects"]) == {"steered", "control"}
    code, _, err = cli("steer", "tiny-maze", "--vector", "probe", "--probe-method", "lda")
    assert code == 2 and "unknown probe method 'lda'" in err
