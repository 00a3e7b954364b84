"""The shipped SAEs (artifacts/saes/*): SAELens loads each folder unchanged, the card and metrics are there and agree,
the SAE is small, and a fresh quick evaluation on new activations of its subject matches the stored metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from workbench import artifacts
from workbench.sae.train import sae_info, size_bytes

torch.set_num_threads(1)
ROOT = artifacts.repo_root() / "artifacts" / "saes"
SHIPPED = sorted(p for p in ROOT.iterdir() if (p / "cfg.json").is_file()) if ROOT.is_dir() else []
# A fresh sample differs from the stored evaluation's: tolerances are a few times the sampling noise seen.
EV_TOL, L0_TOL, CE_TOL, AUROC_TOL = 0.05, 0.5, 0.05, 0.1


def test_maze_and_persona_saes_are_shipped() -> None:
    assert ROOT / "maze-cheese-corner" in SHIPPED
    assert ROOT / "persona-lm" in SHIPPED
    if (artifacts.repo_root() / "artifacts" / "agents" / "coinrun-coin-at-exit" / "weights.safetensors").is_file():
        assert ROOT / "coinrun-coin-at-exit" in SHIPPED


def _fresh_tokens(info: dict):
    """The SAE's subject and a fresh small activation dataset at its hook (seed 999, not used in training)."""
    from workbench.sae.subjects import load_subject

    subject = load_subject(info["subject"])
    n = 60 if subject.kind == "lm" else 20  # ~2,400 LM tokens; 20 levels x 8 states x positions
    ds = subject.collect([info["hook"]], n=n, seed=999, max_states_per_episode=8, progress=False)
    return subject, ds


@pytest.mark.parametrize("folder", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_sae_loads_with_sae_lens_and_matches_its_card(folder: Path) -> None:
    from sae_lens import SAE

    from workbench.sae.data import to_tokens
    from workbench.sae.metrics import reconstruction_metrics

    sae = SAE.load_from_disk(folder)  # card.md, metrics.json, top_latent.png beside cfg.json are tolerated
    assert size_bytes(folder) < 2_000_000
    card = (folder / "card.md").read_text()
    assert card.startswith(f"# SAE `{folder.name}`")
    stored = json.loads((folder / "metrics.json").read_text())
    rec = stored["reconstruction"]
    # the card shows the stored numbers
    assert f"| {rec['tokens']} | {rec['l0']:.2f} | {rec['explained_variance']:.3f} |" in card
    assert rec["explained_variance"] > 0.5
    info = sae_info(sae)
    _, ds = _fresh_tokens(info)
    tokens, _ = to_tokens(ds[info["hook"]], info["layout"])
    fresh = reconstruction_metrics(sae, [tokens[:20_000]])
    assert abs(fresh["explained_variance"] - rec["explained_variance"]) < EV_TOL
    assert abs(fresh["l0"] - rec["l0"]) < L0_TOL
    if info["architecture"] == "topk":
        assert fresh["l0"] <= sae.cfg.k


@pytest.mark.skipif(not (ROOT / "persona-lm" / "cfg.json").is_file(), reason="persona-lm SAE not shipped")
def test_persona_sae_fidelity_and_persona_latent_reproduce() -> None:
    from workbench.metrics import auroc
    from workbench.sae.lm_analysis import encode, prompt_acts
    from workbench.sae.subjects import load_subject
    from workbench.sae.train import load_sae

    folder = ROOT / "persona-lm"
    stored = json.loads((folder / "metrics.json").read_text())
    sae = load_sae(folder)
    hook = sae_info(sae)["hook"]
    assert size_bytes(folder) < 1_000_000
    subject = load_subject("persona-lm")
    fid = subject.fidelity(sae, hook, splits=("train",), episodes=80, seed=7)["train"]
    assert abs(fid["ce_recovered"] - stored["fidelity"]["train"]["ce_recovered"]) < CE_TOL
    card = (folder / "card.md").read_text()
    assert f"{stored['fidelity']['train']['ce_recovered']:.3f} |" in card
    # the best persona latent, oriented as ranked, separates sycophant from honest on fresh prompts
    from workbench.lm.directions import _probe_data

    best = stored["lm_goal_alignment"]["targets"]["persona"]["latents"][0]
    ex, y = _probe_data(subject.lm, "persona", 200, 12345)
    score = best["polarity"] * encode(sae, prompt_acts(subject.lm, ex, hook))[:, best["latent"]]
    fresh = auroc(y.astype(bool), score)
    assert abs(fresh - best["auroc"]) < AUROC_TOL and fresh > 0.6
    assert f"SAE latent {best['latent']} (fires for {best['fires_for']}" in card
    # the steering table's baseline agreement is the persona LM's own OOD agreement rate, and the sycophancy
    # vector moves it in the direction of its sign (the result the card reports)
    steer = stored["lm_steering"]
    plus = [c for c in steer["conditions"] if c["name"] == "sycophancy vector" and c["coef"] == 1.0]
    assert plus and plus[0]["minus_baseline"]["agree_wrong"]["ci95"][0] > 0
    assert np.isfinite(steer["baseline"]["agree_wrong"]["rate"])


def test_cli_info_on_shipped(cli) -> None:
    code, out, _ = cli("sae", "info", "maze-cheese-corner", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["hook"] == "embedder.block2.res1.resadd_out" and info["subject"] == "maze-cheese-corner"
    code, out, _ = cli("sae", "info", "persona-lm", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["hook"] == "blocks.1.hook_resid_post" and info["subject"] == "persona-lm"
    assert math.isfinite(info["reconstruction"]["explained_variance"])
