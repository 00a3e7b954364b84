"""SAEs (workbench.sae): golden-value metrics, token layouts, the shard data provider, SAELens training / loading /
resume, splice and clamp hooks, LM fidelity on a tiny HookedTransformer, and the CLI's bad-input contract."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.activations import ActivationDataset
from workbench.errors import WorkbenchError
from workbench.interventions import clamp_latent, sae_splice
from workbench.sae.data import ShardTokens, from_tokens, to_tokens, token_dim
from workbench.sae.metrics import (
    dead_dense,
    explained_variance,
    fraction_recovered,
    l0,
    latent_density,
    mse,
    reconstruction_metrics,
)
from workbench.sae.train import SAESpec, load_sae, sae_info, train_sae

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------- golden-value metrics
def test_l0_golden() -> None:
    assert l0(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]])) == 1.5


def test_explained_variance_golden() -> None:
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # mean (2, 0); SS around the mean = 2
    assert explained_variance(x, torch.tensor([[2.0, 0.0], [2.0, 0.0]])) == 0.0  # predicting the mean
    assert explained_variance(x, torch.tensor([[1.0, 1.0], [3.0, 0.0]])) == 0.5  # SSE 1
    assert explained_variance(x, x) == 1.0
    with pytest.raises(WorkbenchError, match="zero variance"):
        explained_variance(torch.ones(3, 2), torch.zeros(3, 2))


def test_mse_golden() -> None:
    assert mse(torch.tensor([[1.0, 0.0], [3.0, 0.0]]), torch.tensor([[1.0, 1.0], [3.0, 0.0]])) == 0.25


def test_density_dead_dense_golden() -> None:
    d = latent_density(torch.tensor([[0.0, 1.0, 2.0], [0.0, 0.0, 3.0]]))
    np.testing.assert_array_equal(d, [0.0, 0.5, 1.0])
    out = dead_dense(d, dense_threshold=0.6)
    assert (out["dead"], out["dense"]) == (1, 1)
    assert math.isclose(out["dead_frac"], 1 / 3)


def test_fraction_recovered_golden() -> None:
    assert fraction_recovered(1.0, 0.75, 0.0) == 0.75
    assert fraction_recovered(-2.0, -2.5, -4.0) == 0.75  # CE 2 / 2.5 / 4 as negated losses
    assert math.isnan(fraction_recovered(1.0, 0.5, 1.0))


class ReluSAE:
    """encode = relu, decode = identity: hand-computable reconstruction."""

    dtype = torch.float32

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.relu()

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f


def test_reconstruction_metrics_golden_and_batch_invariant() -> None:
    x = torch.tensor([[1.0, -1.0], [3.0, 0.0]])
    # x_hat = [[1, 0], [3, 0]]: SSE 1; mean (2, -0.5): SS 2.5; EV 0.6; L0 1; density (1, 0)
    one = reconstruction_metrics(ReluSAE(), [x])
    two = reconstruction_metrics(ReluSAE(), [x[:1], x[1:]])
    for m in (one, two):
        assert math.isclose(m["explained_variance"], 0.6)
        assert math.isclose(m["mse"], 0.25)
        assert m["l0"] == 1.0
        assert (m["dead"], m["dense"], m["tokens"]) == (1, 1, 2)


# ------------------------------------------------------------------------------------------------------- tokens
def test_tokens_position_and_flat_roundtrip() -> None:
    acts = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    tokens, back = to_tokens(acts, "position")
    assert tokens.shape == (8, 3)
    torch.testing.assert_close(tokens[1 * 4 + 1 * 2 + 0], acts[1, :, 1, 0])
    torch.testing.assert_close(back(tokens), acts)
    torch.testing.assert_close(from_tokens(tokens, (3, 2, 2)), acts)
    flat, back = to_tokens(acts, "flat")
    assert flat.shape == (2, 12) and token_dim((3, 2, 2), "flat") == 12
    torch.testing.assert_close(back(flat), acts)
    resid = torch.randn(2, 5, 4)
    t, back = to_tokens(resid)
    assert t.shape == (10, 4)
    torch.testing.assert_close(back(t), resid)
    with pytest.raises(WorkbenchError, match="did you mean"):
        to_tokens(acts, "positions")


def _conv_dataset(folder: Path | None = None, n: int = 48, seed: int = 0) -> ActivationDataset:
    g = torch.Generator().manual_seed(seed)
    acts = torch.randn(n, 4, 3, 3, generator=g).relu()
    ds = ActivationDataset({"h": acts}, pd.DataFrame({"i": np.arange(n)}))
    if folder is None:
        return ds
    ds.save(folder, shard_size=16)
    return ActivationDataset.load(folder)


def test_shard_tokens_epoch_covers_every_token_once_and_is_seeded(tmp_path: Path) -> None:
    ds = _conv_dataset(tmp_path / "ds")  # 48 rows x 9 positions = 432 tokens in 3 shards
    all_tokens, _ = to_tokens(ds["h"], "position")
    p = ShardTokens(ds, "h", batch_size=48, seed=3, buffer_tokens=100)
    epoch = torch.cat([next(p) for _ in range(432 // 48)])
    key = lambda t: t[torch.argsort(t @ torch.arange(1.0, 5.0))]  # noqa: E731
    torch.testing.assert_close(key(epoch), key(all_tokens))
    a, b = ShardTokens(ds, "h", 48, seed=3, buffer_tokens=100), ShardTokens(ds, "h", 48, seed=3, buffer_tokens=100)
    b.skip(5)
    for _ in range(5):
        next(a)
    torch.testing.assert_close(next(a), next(b))
    c = ShardTokens(ds, "h", 48, seed=4, buffer_tokens=100)
    assert not torch.equal(next(c), next(ShardTokens(ds, "h", 48, seed=3, buffer_tokens=100)))
    with pytest.raises(WorkbenchError, match="fewer than one batch"):
        ShardTokens(ds, "h", batch_size=10_000)


# ------------------------------------------------------------------------------------------------- spec checks
@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (SAESpec(arch="topk", width=8, k=8), r"k must be in \[1, width\)"),
        (SAESpec(arch="topk", width=8, k=0), r"k must be in \[1, width\)"),
        (SAESpec(arch="topk", width=1, k=1), "width must be >= 2"),
        (SAESpec(arch="standard", width=8, k=2), "k applies to topk and batchtopk"),
        (SAESpec(arch="topkk", width=8, k=2), "did you mean: topk"),
        (SAESpec(arch="topk", width=8, k=2, tokens=10, batch_size=64), "tokens >= batch_size"),
    ],
)
def test_spec_rejects_nonsense(spec: SAESpec, message: str) -> None:
    with pytest.raises(WorkbenchError, match=message):
        spec.validate(d_in=4)


# ------------------------------------------------------------------------------------------ train / load / resume
def _spec(arch: str = "topk", **kw) -> SAESpec:
    base = {"arch": arch, "width": 8, "k": 2 if arch in ("topk", "batchtopk") else None, "tokens": 48 * 20}
    return SAESpec(**{**base, "batch_size": 48, "lr": 3e-3, **kw})


@pytest.mark.parametrize("arch", ["topk", "batchtopk", "jumprelu", "standard"])
def test_train_writes_a_folder_sae_lens_loads_unchanged(arch: str, tmp_path: Path) -> None:
    from sae_lens import SAE

    ds = _conv_dataset(tmp_path / "ds")
    sae = train_sae(ds, "h", _spec(arch), out=tmp_path / "sae", metadata={"model_name": "toy"}, progress=False)
    (tmp_path / "sae" / "card.md").write_text("# card\n")
    (tmp_path / "sae" / "metrics.json").write_text("{}\n")
    loaded = SAE.load_from_disk(tmp_path / "sae")  # extra files beside cfg.json are tolerated
    expected = {"topk": "TopKSAE", "batchtopk": "JumpReLUSAE", "jumprelu": "JumpReLUSAE", "standard": "StandardSAE"}
    assert type(loaded).__name__ == expected[arch]
    info = sae_info(loaded)
    assert (info["hook"], info["subject"], info["layout"], info["act_shape"]) == ("h", "toy", "position", (4, 3, 3))
    tokens, _ = to_tokens(ds["h"], "position")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(tokens), sae.encode(tokens))


def test_topk_training_reduces_reconstruction_error(tmp_path: Path) -> None:
    ds = _conv_dataset(tmp_path / "ds")
    tokens, _ = to_tokens(ds["h"], "position")
    before = train_sae(ds, "h", _spec(tokens=48), progress=False)
    after = train_sae(ds, "h", _spec(tokens=48 * 150), progress=False)
    ev_before = reconstruction_metrics(before, [tokens])["explained_variance"]
    ev_after = reconstruction_metrics(after, [tokens])["explained_variance"]
    assert ev_after > ev_before + 0.1
    assert reconstruction_metrics(after, [tokens])["l0"] <= 2.0


def test_resume_matches_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _conv_dataset(tmp_path / "ds")
    spec = _spec()
    full = train_sae(ds, "h", spec, progress=False)
    original_next = ShardTokens.__next__

    def interrupted(self: ShardTokens) -> torch.Tensor:
        if self.batches_served >= 13:
            raise KeyboardInterrupt
        return original_next(self)

    monkeypatch.setattr(ShardTokens, "__next__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_sae(ds, "h", spec, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=5, progress=False)
    monkeypatch.setattr(ShardTokens, "__next__", original_next)
    state = json.loads((tmp_path / "ckpt" / "checkpoint.json").read_text())
    assert state["n_training_steps"] == 10
    resumed = train_sae(ds, "h", spec, checkpoint_dir=tmp_path / "ckpt", resume=True, progress=False)
    torch.testing.assert_close(resumed.W_dec, full.W_dec)
    torch.testing.assert_close(resumed.W_enc, full.W_enc)
    with pytest.raises(WorkbenchError, match="different spec or dataset"):
        train_sae(ds, "h", _spec(lr=1e-2), checkpoint_dir=tmp_path / "ckpt", resume=True, progress=False)
    with pytest.raises(WorkbenchError, match="nothing to resume"):
        train_sae(ds, "h", spec, checkpoint_dir=tmp_path / "none", resume=True, progress=False)


def test_load_sae_reports_broken_folders(tmp_path: Path) -> None:
    ds = _conv_dataset()
    folder = tmp_path / "sae"
    train_sae(ds, "h", _spec(tokens=48), out=folder, progress=False)
    assert load_sae(folder).cfg.d_sae == 8
    weights = (folder / "sae_weights.safetensors").read_bytes()
    (folder / "sae_weights.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(WorkbenchError, match="SAE weights do not load"):
        load_sae(folder)
    (folder / "sae_weights.safetensors").unlink()
    with pytest.raises(WorkbenchError, match="sae_weights.safetensors missing"):
        load_sae(folder)
    (folder / "sae_weights.safetensors").write_bytes(weights)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(WorkbenchError, match="unreadable SAE config"):
        load_sae(folder)
    (folder / "cfg.json").write_text(json.dumps({"architecture": "topk"}))
    with pytest.raises(WorkbenchError, match="needs architecture, d_in, d_sae"):
        load_sae(folder)


# -------------------------------------------------------------------------------------------------------- hooks
def test_splice_and_clamp_hooks_on_conv_activations() -> None:
    ds = _conv_dataset()
    sae = train_sae(ds, "h", _spec("standard", l1_coefficient=0.1), progress=False)
    acts = ds["h"][:5]

    class H:
        name = "h"

    with torch.no_grad():
        identity = sae_splice(sae, error_term=True)(acts, H())
        torch.testing.assert_close(identity, acts)
        spliced = sae_splice(sae)(acts, H())
        tokens, back = to_tokens(acts, "position")
        torch.testing.assert_close(spliced, back(sae.decode(sae.encode(tokens))))
        f = sae.encode(tokens)
        latent = int((f != 0).sum(0).argmax())
        clamped = clamp_latent(sae, latent, 0.0)(acts, H())
        expected = back(tokens - f[:, latent : latent + 1] * sae.W_dec[latent][None, :])
        torch.testing.assert_close(clamped, expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(clamped, acts)
    with pytest.raises(WorkbenchError, match="out of range"):
        clamp_latent(sae, 99)
    with pytest.raises(WorkbenchError, match="d_in=4"):
        sae_splice(sae)(torch.zeros(2, 5, 3, 3), H())


# --------------------------------------------------------------------------------------------------- LM subject
def test_lm_subject_collects_trains_and_measures_ce_recovered(tmp_path: Path) -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from workbench.sae.subjects import LMSubject

    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=12, d_head=8, n_heads=2, d_vocab=20, act_fn="relu", seed=0
    )
    model = HookedTransformer(cfg).eval()

    def prompts(split: str, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(1, 20, (n, 10), generator=g)
        return tokens, torch.full((n,), 10), pd.DataFrame({"persona": np.arange(n) % 2})

    subject = LMSubject(model, prompts, name="tiny-lm")
    hook = "blocks.0.hook_resid_post"
    with pytest.raises(WorkbenchError, match="did you mean"):
        subject.check_hook("blocks.0.hook_resid_pots")
    ds = subject.collect([hook], n=40, seed=0, progress=False)
    assert len(ds) == 400 and ds.shapes[hook] == (16,)
    sae = train_sae(ds, hook, SAESpec(width=32, k=8, tokens=400 * 30, batch_size=100, lr=3e-3), progress=False)
    full = subject.fidelity(sae, hook, episodes=20, seed=1)
    fid = full["train"]
    o, s, z = fid["original"]["mean"], fid["spliced"]["mean"], fid["zero_ablated"]["mean"]
    assert all(np.isfinite([o, s, z]))
    assert math.isclose(fid["ce_recovered"], (z - s) / (z - o))
    assert fid["ce_recovered"] > 0.0  # the reconstruction beats zero-ablation
    from workbench.sae.artifact import card_text

    rec = reconstruction_metrics(sae, [to_tokens(ds[hook])[0]])
    rec.pop("density")
    m = {
        "reconstruction": rec,
        "sae_lens_version": "x",
        "created": "now",
        "train_seconds": 1.0,
        "train_data": {"description": "toy", "rows": len(ds), "tokens": len(ds)},
        "fidelity": full,
    }
    card = card_text("toy-lm", sae_info(sae), m, "cmd")
    assert "| ood |" in card and f"{fid['ce_recovered']:.3f}" in card


# ---------------------------------------------------------------------------------------------------------- CLI
def test_cli_bad_input_exits_2(registry: Path, cli, tmp_path: Path) -> None:
    code, _, err = cli("sae", "train", "tiny-maze", "--hook", "embedder.block2.res1.resad_out", "--no-progress")
    assert code == 2 and "unknown hook 'embedder.block2.res1.resad_out'; did you mean" in err
    code, _, err = cli("sae", "train", "tiny-maze", "--hook", "embedder.block2.res1.resadd_out", "--k", "64")
    assert code == 2 and "k must be in [1, width)" in err
    code, _, err = cli("sae", "train", "tiny-mazee", "--hook", "embedder")
    assert code == 2 and "unknown artifact 'tiny-mazee'; did you mean: tiny-maze" in err
    code, _, err = cli("sae", "info", "no-such-sae")
    assert code == 2 and "no-such-sae" in err
    bad = tmp_path / "bad-sae"
    bad.mkdir()
    (bad / "cfg.json").write_text("{")
    (bad / "sae_weights.safetensors").write_bytes(b"junk")
    code, _, err = cli("sae", "info", str(bad))
    assert code == 2 and "unreadable SAE config" in err
    assert not list((registry / "saes").glob("*")) if (registry / "saes").exists() else True


def test_policy_subject_fidelity_alignment_and_steering_on_tiny_maze(registry: Path) -> None:
    from workbench.sae.analysis import goal_alignment, steering_comparison, steering_table
    from workbench.sae.subjects import load_subject

    subject = load_subject("tiny-maze")
    hook = "embedder.block2.res1.resadd_out"
    ds = subject.collect([hook], n=12, seed=0, max_states_per_episode=8, progress=False)
    sae = train_sae(ds, hook, SAESpec(width=16, k=2, tokens=4096 * 3, batch_size=256), progress=False)
    fid = subject.fidelity(sae, hook, splits=("ood",), episodes=8, seed=0)["ood"]
    assert fid["goal_keys"] == ["cheese", "corner_first", "timeout"]
    assert fid["original"]["cheese"]["n"] == 8 and "diff_vs_original" in fid["spliced"]
    fit = subject.collect([hook], n=24, seed=1, states="start", progress=False)
    test = subject.collect([hook], n=16, seed=2, states="start", progress=False)
    ga = goal_alignment(sae, fit, test, hook, n_top=3, n_boot=50, kind="maze")
    assert ga["label"].startswith("cheese at this position")
    inferred = goal_alignment(sae, fit, test, hook, n_top=3, n_boot=50)  # the kind that collected `fit`
    assert inferred["label"] == ga["label"] and inferred["best_latent"] == ga["best_latent"]
    from workbench.data.dataset import ActivationDataset

    bare = ActivationDataset({hook: fit[hook]}, fit.labels)  # arrays with no collecting subject
    with pytest.raises(WorkbenchError, match="needs where the goal is"):
        goal_alignment(sae, bare, test, hook)
    with pytest.raises(WorkbenchError, match="keys-chests subjects have no goal cells.*coinrun.*maze"):
        goal_alignment(sae, fit, test, hook, kind="keys-chests")
    assert len(ga["latents"]) == 3 and 0.0 <= ga["probe"]["auroc"] <= 1.0
    assert ga["directions"]["sae_decoder"].shape == (sae.cfg.d_in,)
    res = steering_comparison(subject.agent, sae, hook, ga["best_latent"], {"probe": ga["directions"]["probe"]}, 8)
    assert "random direction ablated (control)" in res["conditions"]
    assert steering_table(res).count("\n") == len(res["conditions"]) + 1
