"""The shipped SAEs (artifacts/saes/*): SAELens loads each folder unchanged, the card and metrics are there, the SAE is
small, and it still reconstructs fresh activations of its subject."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench import artifacts
from workbench.sae.train import sae_info, size_bytes

torch.set_num_threads(1)
ROOT = artifacts.repo_root() / "artifacts" / "saes"
SHIPPED = sorted(p for p in ROOT.iterdir() if (p / "cfg.json").is_file()) if ROOT.is_dir() else []


def test_maze_sae_is_shipped() -> None:
    assert ROOT / "maze-cheese-corner" in SHIPPED


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_sae_loads_with_sae_lens_and_reconstructs(folder: Path) -> None:
    from sae_lens import SAE

    from workbench.sae.data import ShardTokens
    from workbench.sae.metrics import reconstruction_metrics
    from workbench.sae.subjects import load_subject

    sae = SAE.load_from_disk(folder)  # card.md, metrics.json, top_latent.png beside cfg.json are tolerated
    assert size_bytes(folder) < 2_000_000
    assert (folder / "card.md").read_text().startswith(f"# SAE `{folder.name}`")
    stored = json.loads((folder / "metrics.json").read_text())
    info = sae_info(sae)
    assert stored["reconstruction"]["explained_variance"] > 0.5
    subject = load_subject(info["subject"])
    ds = subject.collect([info["hook"]], n=20, seed=999, max_states_per_episode=8, progress=False)
    fresh = reconstruction_metrics(sae, [next(ShardTokens(ds, info["hook"], 1024, info["layout"], seed=0))])
    assert fresh["explained_variance"] > 0.5
    if info["architecture"] == "topk":
        assert fresh["l0"] <= sae.cfg.k


def test_cli_info_on_shipped(cli) -> None:
    code, out, _ = cli("sae", "info", "maze-cheese-corner", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["hook"] == "embedder.block2.res1.resadd_out" and info["subject"] == "maze-cheese-corner"
