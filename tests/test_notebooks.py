"""The notebooks run top to bottom against the shipped artifacts (they are documentation that must not rot)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from workbench import artifacts

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.mark.parametrize(
    "name",
    [
        "quickstart.ipynb",
        "probing.ipynb",
        "personas.ipynb",
        "saes.ipynb",
        "bring_your_own_checkpoint.ipynb",
        "your_model_your_dataset.ipynb",
    ],
)
def test_notebook_executes(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = {"maze-cheese-corner", "maze-cheese-anywhere"} - set(artifacts.available("agents"))
    assert not missing, f"shipped artifacts missing: {missing}"
    monkeypatch.chdir(tmp_path)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if name == "quickstart.ipynb":
        outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
        assert any("image/png" in o.get("data", {}) for o in outputs), "the vector-field cell should display a figure"
