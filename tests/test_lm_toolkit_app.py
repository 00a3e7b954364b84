"""The Personas page on any model folder and dataset file (AppTest, headless): a GPT-2 saved by the test, a BPE
tokenizer built by the test, A/B questions written by the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_lm_toolkit import ab_rows, build_gpt2, build_tokenizer, write_jsonl

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

torch.set_num_threads(1)
PAGE = str(Path(__file__).resolve().parent.parent / "app" / "pages" / "6_Personas.py")


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("app-toolkit")
    model = root / "my-gpt2"
    tok = build_tokenizer(model)
    build_gpt2(model, len(tok))
    return model, write_jsonl(root / "ab.jsonl", ab_rows(12))


@pytest.fixture()
def empty_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "artifacts"
    (root / "lms").mkdir(parents=True)
    monkeypatch.setenv("WORKBENCH_ARTIFACTS", str(root))
    monkeypatch.setenv("WORKBENCH_STORE", str(tmp_path / "results.duckdb"))
    return root


def run(**state) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    for k, v in state.items():
        at.session_state[k] = v
    return at.run()


def test_personas_page_runs_directions_and_steering_on_a_model_folder(empty_registry, model_and_data) -> None:
    model, data = model_and_data
    at = run()
    assert not at.exception and at.warning  # no shipped LM here: the warning, and the toolkit section below it
    assert any("Give a model and a dataset" in c.value for c in at.caption)

    at = run(tk_model=str(model), tk_dataset=str(data))
    assert not at.exception and not at.error, [e.value for e in at.error]
    directions = at.dataframe[0].value
    assert list(directions["layer"]) == [0, 1] and {"auroc", "control_auroc", "ci_low"} <= set(directions)
    steer = at.dataframe[1].value
    assert list(steer["condition"]) == ["baseline", "steered x+1", "random x+1"]
    gens = at.dataframe[2].value
    assert list(gens["condition"]) == ["none", "steered", "random"]

    at.slider(key="tk_coef").set_value(-2.0).run()
    assert not at.exception
    assert list(at.dataframe[1].value["condition"]) == ["baseline", "steered x-2", "random x-2"]


def test_personas_page_bad_dataset_is_one_error_line(empty_registry, model_and_data, tmp_path: Path) -> None:
    model, _ = model_and_data
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"positive": "a", "negative": "b"}\n{"positive": "a"}\n')
    at = run(tk_model=str(model), tk_dataset=str(bad))
    assert not at.exception
    want = f"{bad}:2: missing field 'negative' (contrast pairs need positive, negative)"
    assert [e.value for e in at.error] == [want]
    at = run(tk_model=str(tmp_path / "nope"), tk_dataset=str(bad))
    assert not at.exception and "nope" in at.error[0].value
