"""workbench.validate: valid input passes through unchanged; strict JSON never holds a bare NaN or Infinity."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench import validate
from workbench.errors import WorkbenchError


def _strict_load(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


def test_numbers_pass_through():
    assert validate.check_episodes(1) == 1 and validate.check_episodes(1_000_000) == 1_000_000
    assert validate.check_episodes(np.int64(5)) == 5 and validate.check_episodes(7.0) == 7
    assert validate.check_seed(0) == 0 and validate.check_seed(2**32 - 1) == 2**32 - 1
    assert validate.check_float("x", np.float32(0.5), 0, 1) == 0.5
    assert validate.check_int("k", 3, lo=1) == 3 and validate.check_int("k", -3, hi=0) == -3
    with pytest.raises(WorkbenchError, match=r"^k must be >= 1, got 0; nearest valid: 1$"):
        validate.check_int("k", 0, lo=1)
    with pytest.raises(WorkbenchError, match="x must be > 0, got -1"):
        validate.check_float("x", -1, 0, lo_open=True)


def test_paths_pass_through_and_write_nothing(tmp_path):
    out = validate.check_output_file(tmp_path / "a" / "b" / "f.PNG", suffixes=(".png",))
    assert out == tmp_path / "a" / "b" / "f.PNG" and not (tmp_path / "a").exists()
    assert validate.check_output_dir(tmp_path / "new") == tmp_path / "new" and not (tmp_path / "new").exists()
    (tmp_path / "in.jsonl").write_text("{}\n")
    assert validate.check_input_file(tmp_path / "in.jsonl", suffixes=(".jsonl",)) == tmp_path / "in.jsonl"


def test_read_text_accepts_utf8_and_strips_a_bom(tmp_path):
    path = tmp_path / "r.toml"
    path.write_bytes("\ufeffname = 'caf\u00e9'\n".encode())
    assert validate.read_text(path) == "name = 'caf\u00e9'\n"


def test_strict_json_replaces_non_finite_with_null_and_reasons():
    data = {
        "a": float("nan"),
        "b": [1.0, float("inf"), np.float64("nan")],
        "nested": {"ci_low": float("nan"), "ok": 2, "null_reasons": {"earlier": "kept"}},
        "tensor": torch.tensor([1.0, float("-inf")]),
        "array": np.array([[1, 2], [3, 4]]),
        "np_int": np.int64(3),
        "flag": np.bool_(True),
        "path": Path("runs/x"),
        "tuple": (1, 2),
    }
    out = validate.strict_jsonable(data, reasons={"ci_low": "no interval"})
    text = validate.strict_json(data, reasons={"ci_low": "no interval"})
    assert _strict_load(text) == out
    assert out["a"] is None and out["null_reasons"]["a"].startswith("not a number (NaN)")
    assert out["b"] == [1.0, None, None] and out["null_reasons"]["b[1]"] == "+infinity"
    assert out["nested"]["ci_low"] is None
    assert out["nested"]["null_reasons"] == {"earlier": "kept", "ci_low": "no interval"}
    assert out["tensor"] == [1.0, None] and out["null_reasons"]["tensor[1]"] == "-infinity"
    assert out["array"] == [[1, 2], [3, 4]] and out["np_int"] == 3 and out["flag"] is True
    assert out["path"] == "runs/x" and out["tuple"] == [1, 2]
    assert data["a"] != data["a"]  # the input is not modified
    assert math.isnan(data["nested"]["ci_low"])


def test_strict_json_of_clean_data_is_plain_json():
    data = {"x": 1, "y": [0.5, "s", None, True]}
    assert validate.strict_json(data) == json.dumps(data)
    assert validate.strict_json(float("nan")) == "null"  # nowhere to put a reason: just null
